//! Support for Switchboard's end-to-end tests: a handle on the local test cluster
//! (never the user's own), a fresh namespace and a fresh Postgres database per
//! test, and the mock LLM upstream speaking the OpenAI and Anthropic wire formats
//! (the `mock-llm` crate, re-exported as [`mock_llm`]).

pub mod cluster;
pub mod database;
pub mod namespace;
pub mod wait;

pub use mock_llm;

pub use cluster::TestCluster;
pub use database::TestDatabase;
pub use namespace::TestNamespace;
pub use wait::{ClosedPort, eventually, free_port};
