//! Switchboard operator.
