//! Switchboard agent runtime: the chat server every agent pod runs. An
//! OpenAI-compatible API, a sessions API and webhook channels over one
//! tenant's conversation database, calling the agent's model chain upstream.
//!
//! Layers, each depending only on those below it (`tests/layering.rs` keeps
//! the module graph free of cycles):
//! - edges: [`api`] (HTTP handlers and their DTOs), [`channels`] (per-channel
//!   routes, webhook intake and delivery, the ChatChannel watcher), [`auth`],
//!   [`error`] (domain errors to HTTP), [`openapi`], [`request_log`], and
//!   [`server`] (router, serving);
//! - [`conversation`]: the service every edge goes through (sessions, user
//!   messages, turns whole or streamed, answers);
//! - [`state`]: what handlers and services share;
//! - below: [`channel_registry`] (the channels served, signing, activity),
//!   [`limits`], [`cost`] (prices, the cost metric, the monthly budget),
//!   [`live`] (live sync of users' sessions across pods),
//!   [`prompt`] (token counting, trimming), [`providers`] (upstream models),
//!   [`db`] (storage), [`domain`] (roles, session states, conversation
//!   hashes), [`metrics`], [`settings`] (config file + env), [`shutdown`],
//!   [`status_report`], [`telemetry`] (logs, OTLP traces), [`tools`]
//!   (server-side tools: MCP servers and other agents).

#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod channel_registry;
pub mod channels;
pub mod conversation;
pub mod cost;
pub mod db;
pub mod domain;
pub mod error;
pub mod keys;
pub mod limits;
pub mod live;
pub mod metrics;
pub mod openapi;
pub mod prompt;
pub mod providers;
pub mod request_log;
pub mod server;
pub mod settings;
pub mod shutdown;
pub mod state;
pub mod status_report;
pub mod telemetry;
pub mod tools;

pub use server::{router, serve, serve_with_shutdown};
pub use settings::{DatabaseTarget, Settings, SettingsError};
pub use state::{AppState, SharedState, StartError};
