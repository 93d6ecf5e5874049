//! Why a turn could not be taken, in the conversation's own terms; each edge
//! maps these to its wire format (the HTTP API in `crate::error`).

use crate::cost::BudgetSpent;
use crate::db::StoreError;
use crate::limits::{Overloaded, RateLimited};
use crate::prompt::ContextOverflow;
use crate::providers::{ChainError, Refusal};

/// A conversation failure.
#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    /// The runtime is shutting down; another replica will answer.
    #[error("this runtime is shutting down")]
    ShuttingDown,
    /// Over a request rate limit or the token budget.
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    /// The agent's monthly budget is spent (and it refuses, or has no fallback
    /// response for the language).
    #[error("the agent's monthly budget ({} {}) is spent", .0.budget, .0.currency)]
    BudgetSpent(BudgetSpent),
    /// Every upstream slot busy and the queue full (or the wait ran out).
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
    /// Storage failed or the session is not the user's.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The prompt does not fit the model's context even without history.
    #[error(transparent)]
    ContextTooLong(#[from] ContextOverflow),
    /// Every model failed and there is no fallback response; the failure is
    /// stored as the answer.
    #[error("the model could not answer: {0}")]
    Upstream(ChainError),
    /// The request asks for something the agent's model cannot honour.
    #[error(transparent)]
    Unsupported(Refusal),
    /// The prompt carries an image (`field` names the first) and no model of
    /// the agent accepts images.
    #[error("`{field}` is an image, and no model of this agent accepts images")]
    ImagesNotAccepted {
        /// The first image part, as the client named it.
        field: String,
    },
    /// The message to answer is no longer stored.
    #[error("the message is no longer stored")]
    MessageGone,
    /// A write returned no row.
    #[error("storage returned no row for {0}")]
    NothingStored(&'static str),
}
