//! Switchboard agent runtime: the chat server every agent pod runs. An
//! OpenAI-compatible API and a sessions API over one tenant's conversation
//! database, calling the agent's model chain upstream.
//!
//! Layout: [`settings`] (config file + env), [`db`] (storage), [`providers`]
//! (upstream models), [`context`] (token counting, trimming), [`chat`] (one
//! turn), [`api`] (HTTP handlers), [`auth`], [`error`], [`metrics`],
//! [`openapi`], [`telemetry`] (logs, OTLP traces), and [`app`] (state, router, serving).

#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod auth;
pub mod channels;
pub mod chat;
pub mod context;
pub mod db;
pub mod domain;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod providers;
pub mod request_log;
pub mod settings;
pub mod shutdown;
pub mod status_report;
pub mod telemetry;

pub use app::{AppState, SharedState, StartError, router, serve, serve_with_shutdown};
pub use settings::{DatabaseTarget, Settings, SettingsError};
