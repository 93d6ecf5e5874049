//! Switchboard's developer programs, run by `hack/` scripts and `make`: `bench`
//! (`make bench`: the agent runtime against the mock LLM) and `pod-runner` (`make demo`:
//! runtime pods as local processes, see [`pod_runner`]). Not test code: `tests/` holds the
//! end-to-end tests and their support.

pub mod pod_runner;
