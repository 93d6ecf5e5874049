//! Cost accounting storage: one row per budget window with its tokens and cost,
//! added to by every pod of the agent with an atomic upsert (the sum is the
//! database's, so replicas share one budget). Kept apart from the rate limits'
//! tables on purpose.

use super::{Store, StoreError, with_pool};

/// Tokens and cost of one window (or an amount to add to it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct WindowSpend {
    /// Prompt tokens.
    pub tokens_in: i64,
    /// Generated tokens.
    pub tokens_out: i64,
    /// Cost in pico-units of the currency.
    pub cost_picos: i64,
    /// Turns counted.
    pub turns: i64,
}

impl WindowSpend {
    /// Field-wise sum (saturating).
    pub fn plus(self, other: WindowSpend) -> WindowSpend {
        WindowSpend {
            tokens_in: self.tokens_in.saturating_add(other.tokens_in),
            tokens_out: self.tokens_out.saturating_add(other.tokens_out),
            cost_picos: self.cost_picos.saturating_add(other.cost_picos),
            turns: self.turns.saturating_add(other.turns),
        }
    }

    /// Field-wise difference (saturating at zero).
    pub fn minus(self, other: WindowSpend) -> WindowSpend {
        let sub = |a: i64, b: i64| a.saturating_sub(b).max(0);
        WindowSpend {
            tokens_in: sub(self.tokens_in, other.tokens_in),
            tokens_out: sub(self.tokens_out, other.tokens_out),
            cost_picos: sub(self.cost_picos, other.cost_picos),
            turns: sub(self.turns, other.turns),
        }
    }

    /// Field-wise maximum: totals only grow within a window, so the larger of two
    /// readings is the newer.
    pub fn max(self, other: WindowSpend) -> WindowSpend {
        WindowSpend {
            tokens_in: self.tokens_in.max(other.tokens_in),
            tokens_out: self.tokens_out.max(other.tokens_out),
            cost_picos: self.cost_picos.max(other.cost_picos),
            turns: self.turns.max(other.turns),
        }
    }

    /// Nothing to add.
    pub fn is_zero(&self) -> bool {
        *self == WindowSpend::default()
    }
}

impl Store {
    /// Adds `amount` to `window`'s row (created when missing) in one statement and
    /// returns the row's new totals, which include every pod's additions.
    pub async fn add_spend(
        &self,
        window: &str,
        currency: &str,
        amount: WindowSpend,
    ) -> Result<WindowSpend, StoreError> {
        let _timer = self.timer("add_spend");
        let sql = "INSERT INTO spend_windows (window_key, currency, tokens_in, tokens_out, cost_picos, turns) \
            VALUES ($1, $2, $3, $4, $5, $6) \
            ON CONFLICT (window_key) DO UPDATE SET \
              tokens_in = spend_windows.tokens_in + excluded.tokens_in, \
              tokens_out = spend_windows.tokens_out + excluded.tokens_out, \
              cost_picos = spend_windows.cost_picos + excluded.cost_picos, \
              turns = spend_windows.turns + excluded.turns \
            RETURNING tokens_in, tokens_out, cost_picos, turns";
        with_pool!(self, pool => Ok(sqlx::query_as(sql)
            .bind(window).bind(currency)
            .bind(amount.tokens_in).bind(amount.tokens_out).bind(amount.cost_picos).bind(amount.turns)
            .fetch_one(pool).await?))
    }

    /// The totals of `window` (zero when nothing was spent in it yet).
    pub async fn window_spend(&self, window: &str) -> Result<WindowSpend, StoreError> {
        let _timer = self.timer("window_spend");
        let sql = "SELECT tokens_in, tokens_out, cost_picos, turns FROM spend_windows WHERE window_key = $1";
        let row: Option<WindowSpend> = with_pool!(self, pool => sqlx::query_as(sql)
            .bind(window).fetch_optional(pool).await?);
        Ok(row.unwrap_or_default())
    }
}
