//! The webhook outbox: inbound webhook messages and the delivery of their
//! answers, kept until the callback accepts them. Several pods may share the
//! table: a row is worked on by whoever claims its lease.

use sqlx::AssertSqlSafe;

use super::{Store, StoreError, with_pool};

/// A row as inserted when a webhook message is accepted.
#[derive(Clone, Debug)]
pub struct NewDelivery {
    /// Delivery id (also sent as `X-Switchboard-Delivery`).
    pub id: String,
    /// Channel name.
    pub channel: String,
    /// Digest of the inbound timestamp and signature (replay key).
    pub inbound_key: String,
    /// The sender's conversation id.
    pub conversation_id: String,
    /// The sender's user id.
    pub user_id: String,
    /// The message text.
    pub text: String,
    /// Where the answer goes.
    pub callback_url: String,
    /// The platform message the answer replies to (Discord).
    pub reply_to: Option<String>,
    /// The token of the Discord interaction (slash command) the answer completes.
    pub interaction_token: Option<String>,
    /// Unix milliseconds.
    pub now_ms: i64,
}

/// A Discord Gateway session as kept beside the bot's lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewaySession {
    /// `session_id` of `READY`.
    pub id: String,
    /// The last sequence number whose event was stored.
    pub sequence: u64,
    /// `resume_gateway_url` of `READY`.
    pub resume_url: Option<String>,
    /// The bot's user id (`READY`'s user), for the messages a Resume replays.
    pub bot_user_id: Option<u64>,
}

/// How long a new row waits before the delivery worker may take it: the
/// intake stores the user message meanwhile and then makes the row due at once
/// ([`Store::delivery_ready`]); only a pod that died in between leaves the
/// recording to the worker. Without it the worker could record the message a
/// second time while the intake is still recording it.
pub const INTAKE_GRACE_MS: i64 = 30_000;

/// A pending delivery.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Delivery {
    /// Delivery id.
    pub id: String,
    /// Channel name.
    pub channel: String,
    /// The sender's conversation id.
    pub conversation_id: String,
    /// The sender's user id.
    pub user_id: String,
    /// The message text.
    pub text: String,
    /// Where the answer goes.
    pub callback_url: String,
    /// The session, once the user message is stored.
    pub session_id: Option<String>,
    /// The stored user message.
    pub user_message_id: Option<String>,
    /// The stored answer.
    pub answer_message_id: Option<String>,
    /// The answer's text, once produced.
    pub answer: Option<String>,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// When it was accepted (unix milliseconds).
    pub created_at: i64,
    /// The platform message the answer replies to (Discord).
    pub reply_to: Option<String>,
    /// The token of the Discord interaction the answer completes.
    pub interaction_token: Option<String>,
    /// The pieces of a chat-app answer posted so far (by earlier attempts).
    pub pieces_posted: i64,
}

const COLUMNS: &str = "id, channel, conversation_id, user_id, text, callback_url, session_id, \
    user_message_id, answer_message_id, answer, attempts, created_at, reply_to, interaction_token, \
    pieces_posted";

impl Store {
    /// Inserts a delivery; `false` when the same inbound message (channel and
    /// replay key) was accepted before.
    pub async fn insert_delivery(&self, new: &NewDelivery) -> Result<bool, StoreError> {
        let sql = "INSERT INTO webhook_outbox (id, channel, inbound_key, conversation_id, user_id, \
            text, callback_url, status, attempts, next_attempt_at, created_at, reply_to, interaction_token) \
            VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $10, $8, $9, $11) \
            ON CONFLICT (channel, inbound_key) DO NOTHING";
        let done = with_pool!(self, pool => sqlx::query(sql)
            .bind(&new.id).bind(&new.channel).bind(&new.inbound_key).bind(&new.conversation_id)
            .bind(&new.user_id).bind(&new.text).bind(&new.callback_url).bind(new.now_ms)
            .bind(&new.reply_to).bind(new.now_ms + INTAKE_GRACE_MS).bind(&new.interaction_token)
            .execute(pool).await?.rows_affected());
        Ok(done == 1)
    }

    /// The delivery `channel` took for `inbound_key`, while it is kept (3 hours
    /// after it finished).
    pub async fn delivery_by_inbound_key(
        &self,
        channel: &str,
        inbound_key: &str,
    ) -> Result<Option<Delivery>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM webhook_outbox WHERE channel = $1 AND inbound_key = $2");
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, Delivery>(AssertSqlSafe(sql.as_str()))
            .bind(channel).bind(inbound_key).fetch_optional(pool).await?),
        )
    }

    /// Forgets a delivery whose message could not be stored (the sender was told
    /// to retry).
    pub async fn delete_delivery(&self, id: &str) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query("DELETE FROM webhook_outbox WHERE id = $1")
            .bind(id).execute(pool).await.map(|_| ())?);
        Ok(())
    }

    /// Records the stored user message of a delivery and makes it due now (the
    /// intake's last step).
    pub async fn delivery_ready(
        &self,
        id: &str,
        session_id: &str,
        user_message_id: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query(
                "UPDATE webhook_outbox SET session_id = $2, user_message_id = $3, \
                 next_attempt_at = $4 WHERE id = $1")
            .bind(id).bind(session_id).bind(user_message_id).bind(now_ms)
            .execute(pool).await.map(|_| ())?);
        Ok(())
    }

    /// Records the stored user message of a delivery.
    pub async fn set_delivery_message(
        &self,
        id: &str,
        session_id: &str,
        user_message_id: &str,
    ) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query(
                "UPDATE webhook_outbox SET session_id = $2, user_message_id = $3 WHERE id = $1")
            .bind(id).bind(session_id).bind(user_message_id).execute(pool).await.map(|_| ())?);
        Ok(())
    }

    /// Records the answer of a delivery.
    pub async fn set_delivery_answer(
        &self,
        id: &str,
        answer_message_id: &str,
        answer: &str,
    ) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query(
                "UPDATE webhook_outbox SET answer_message_id = $2, answer = $3 WHERE id = $1")
            .bind(id).bind(answer_message_id).bind(answer).execute(pool).await.map(|_| ())?);
        Ok(())
    }

    /// Records that the first `pieces` pieces of a delivery's answer were posted.
    pub async fn set_delivery_pieces(&self, id: &str, pieces: i64) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query(
                "UPDATE webhook_outbox SET pieces_posted = $2 WHERE id = $1")
            .bind(id).bind(pieces).execute(pool).await.map(|_| ())?);
        Ok(())
    }

    /// Pending deliveries due at `now_ms` and not leased by anyone: those tried
    /// fewest times first, then the oldest, so that a receiver that keeps
    /// failing (each attempt up to the callback timeout) does not hold new
    /// answers, of any channel, behind its retries.
    pub async fn due_deliveries(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM webhook_outbox WHERE status = 'pending' AND next_attempt_at <= $1 \
             AND (locked_until IS NULL OR locked_until < $1) ORDER BY attempts, created_at LIMIT $2"
        );
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, Delivery>(AssertSqlSafe(sql.as_str()))
            .bind(now_ms).bind(limit).fetch_all(pool).await?),
        )
    }

    /// Takes the lease on a delivery until `until_ms` and returns the row as it is
    /// now; `None` when another worker holds it, or it is no longer pending or due
    /// (another worker tried it since it was listed). The attempt works from this
    /// copy, not the listed one: a worker that waited for a slot would otherwise
    /// answer again a message another pod answered meanwhile, and resume the
    /// other's answer at the wrong piece.
    pub async fn claim_delivery(
        &self,
        id: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Option<Delivery>, StoreError> {
        let sql = format!(
            "UPDATE webhook_outbox SET locked_until = $3 WHERE id = $1 AND status = 'pending' \
             AND next_attempt_at <= $2 AND (locked_until IS NULL OR locked_until < $2) \
             RETURNING {COLUMNS}"
        );
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, Delivery>(AssertSqlSafe(sql.as_str()))
            .bind(id).bind(now_ms).bind(until_ms).fetch_optional(pool).await?),
        )
    }

    /// Extends the lease of a delivery still pending from `held_ms` (the lease this
    /// worker holds) to `until_ms`; `false` when the row's lease is no longer that
    /// one (another worker claimed it).
    pub async fn renew_delivery_lease(
        &self,
        id: &str,
        held_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = with_pool!(self, pool => sqlx::query(
                "UPDATE webhook_outbox SET locked_until = $3 WHERE id = $1 AND status = 'pending' \
                 AND locked_until = $2")
            .bind(id).bind(held_ms).bind(until_ms).execute(pool).await?.rows_affected());
        Ok(done == 1)
    }

    /// Marks a delivery done.
    pub async fn mark_delivered(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query(
                "UPDATE webhook_outbox SET status = 'delivered', delivered_at = $2, \
                 attempts = attempts + 1, locked_until = NULL, last_error = NULL WHERE id = $1")
            .bind(id).bind(now_ms).execute(pool).await.map(|_| ())?);
        Ok(())
    }

    /// Schedules another attempt (or gives up with `failed`), releasing the lease.
    pub async fn reschedule_delivery(
        &self,
        id: &str,
        next_attempt_ms: i64,
        error: &str,
        give_up: bool,
    ) -> Result<(), StoreError> {
        let status = if give_up { "failed" } else { "pending" };
        with_pool!(self, pool => sqlx::query(
                "UPDATE webhook_outbox SET status = $2, attempts = attempts + 1, next_attempt_at = $3, \
                 last_error = $4, locked_until = NULL WHERE id = $1")
            .bind(id).bind(status).bind(next_attempt_ms).bind(error).execute(pool).await.map(|_| ())?);
        Ok(())
    }

    /// Releases the lease without counting an attempt (the answer is not ready).
    pub async fn release_delivery(&self, id: &str, next_attempt_ms: i64) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query(
                "UPDATE webhook_outbox SET next_attempt_at = $2, locked_until = NULL WHERE id = $1")
            .bind(id).bind(next_attempt_ms).execute(pool).await.map(|_| ())?);
        Ok(())
    }

    /// Counts deliveries by status (`pending`, `delivered`, `failed`).
    pub async fn count_deliveries(&self, status: &str) -> Result<i64, StoreError> {
        Ok(with_pool!(self, pool => sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM webhook_outbox WHERE status = $1")
            .bind(status).fetch_one(pool).await?))
    }

    /// Undelivered deliveries by channel: how many, and when the oldest was
    /// accepted (unix milliseconds).
    pub async fn pending_deliveries_by_channel(
        &self,
    ) -> Result<Vec<(String, i64, i64)>, StoreError> {
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, (String, i64, i64)>(
                "SELECT channel, COUNT(*), MIN(created_at) FROM webhook_outbox \
                 WHERE status = 'pending' GROUP BY channel")
            .fetch_all(pool).await?),
        )
    }

    /// Removes delivered deliveries older than `before_ms`, and given-up ones
    /// older than `failed_before_ms` (kept longer, for a manual retry).
    pub async fn purge_deliveries(
        &self,
        before_ms: i64,
        failed_before_ms: i64,
    ) -> Result<u64, StoreError> {
        Ok(with_pool!(self, pool => sqlx::query(
                "DELETE FROM webhook_outbox WHERE (status = 'delivered' AND created_at < $1) \
                 OR (status = 'failed' AND created_at < $2)")
            .bind(before_ms).bind(failed_before_ms).execute(pool).await?.rows_affected()))
    }
}

impl Store {
    /// Takes or renews the lease `name` for `holder` until `until_ms`: `true` when
    /// `holder` has it now (it held it, or the last holder's lease expired).
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let sql = "INSERT INTO chat_app_leases (name, holder, expires_at) VALUES ($1, $2, $4) \
            ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
            WHERE chat_app_leases.holder = excluded.holder OR chat_app_leases.expires_at < $3";
        let done = with_pool!(self, pool => sqlx::query(sql)
            .bind(name).bind(holder).bind(now_ms).bind(until_ms)
            .execute(pool).await?.rows_affected());
        Ok(done == 1)
    }

    /// Gives the lease up (when `holder` has it) so another pod can take over at
    /// once; the stored session stays for that pod to resume.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query(
                "UPDATE chat_app_leases SET expires_at = 0 WHERE name = $1 AND holder = $2")
            .bind(name).bind(holder).execute(pool).await.map(|_| ())?);
        Ok(())
    }

    /// Stores the Discord Gateway session of the lease `name`, when `holder` still
    /// holds it (a pod that lost the lease cannot overwrite its successor's).
    pub async fn save_gateway_session(
        &self,
        name: &str,
        holder: &str,
        session: &GatewaySession,
    ) -> Result<(), StoreError> {
        let sequence = i64::try_from(session.sequence).unwrap_or(i64::MAX);
        with_pool!(self, pool => sqlx::query(
                "UPDATE chat_app_leases SET session_id = $3, session_sequence = $4, resume_url = $5, \
                 bot_user_id = $6 WHERE name = $1 AND holder = $2")
            .bind(name).bind(holder).bind(&session.id).bind(sequence).bind(&session.resume_url)
            .bind(session.bot_user_id.map(|id| id.to_string()))
            .execute(pool).await.map(|_| ())?);
        Ok(())
    }

    /// The Gateway session last stored with the lease `name`, if any.
    pub async fn gateway_session(&self, name: &str) -> Result<Option<GatewaySession>, StoreError> {
        let row = with_pool!(self, pool => sqlx::query_as::<_, (Option<String>, Option<i64>, Option<String>, Option<String>)>(
                "SELECT session_id, session_sequence, resume_url, bot_user_id FROM chat_app_leases \
                 WHERE name = $1")
            .bind(name).fetch_optional(pool).await?);
        Ok(match row {
            Some((Some(id), Some(sequence), resume_url, bot)) => Some(GatewaySession {
                id,
                sequence: u64::try_from(sequence).unwrap_or(0),
                resume_url,
                bot_user_id: bot.and_then(|b| b.parse().ok()),
            }),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::DatabaseTarget;
    use super::*;

    fn new_delivery(id: &str, now_ms: i64) -> NewDelivery {
        NewDelivery {
            id: id.to_owned(),
            channel: "hooks".to_owned(),
            inbound_key: format!("key-{id}"),
            conversation_id: "c".to_owned(),
            user_id: "u".to_owned(),
            text: "hi".to_owned(),
            callback_url: "http://127.0.0.1:9/hook".to_owned(),
            reply_to: None,
            interaction_token: None,
            now_ms,
        }
    }

    /// A worker works from the row as it claims it: one that listed a row and
    /// waited while another tried it gets nothing (not due any more), and a claim
    /// returns what earlier attempts recorded.
    async fn a_claim_returns_the_row_as_it_is_now(store: Store) {
        let now = 1_000_000;
        assert!(
            store
                .insert_delivery(&new_delivery("d1", now))
                .await
                .unwrap()
        );
        store.delivery_ready("d1", "s1", "m1", now).await.unwrap();
        let listed = store.due_deliveries(now, 8).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].pieces_posted, 0);

        // Another worker claims it first, posts two pieces and fails the third.
        let other = store
            .claim_delivery("d1", now, now + 120_000)
            .await
            .unwrap();
        assert!(other.is_some());
        assert!(
            store
                .claim_delivery("d1", now, now + 120_000)
                .await
                .unwrap()
                .is_none()
        );
        store
            .set_delivery_answer("d1", "a1", "the answer")
            .await
            .unwrap();
        store.set_delivery_pieces("d1", 2).await.unwrap();
        store
            .reschedule_delivery("d1", now + 5_000, "500", false)
            .await
            .unwrap();
        // The worker that listed it before: not due, nothing to do.
        assert!(
            store
                .claim_delivery("d1", now + 1, now + 120_001)
                .await
                .unwrap()
                .is_none()
        );

        // Due again: the claim carries the answer and the pieces posted.
        let claimed = store
            .claim_delivery("d1", now + 5_000, now + 125_000)
            .await
            .unwrap()
            .expect("due and free");
        assert_eq!(claimed.answer.as_deref(), Some("the answer"));
        assert_eq!(claimed.pieces_posted, 2);
        assert_eq!(claimed.attempts, 1);
        // Renewed while held; not once another worker took it over.
        assert!(
            store
                .renew_delivery_lease("d1", now + 125_000, now + 130_000)
                .await
                .unwrap()
        );
        assert!(
            !store
                .renew_delivery_lease("d1", now + 125_000, now + 135_000)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn sqlite_a_claim_returns_the_row_as_it_is_now() {
        let store = Store::connect(&DatabaseTarget::Sqlite(":memory:".into()))
            .await
            .expect("store");
        a_claim_returns_the_row_as_it_is_now(store).await;
    }

    /// Against the harness's Postgres (`make test`; `make unit` skips the
    /// `postgres` tests).
    mod postgres {
        use switchboard_tests::database::TestDatabase;

        use super::super::super::DatabaseTarget;
        use super::*;

        #[tokio::test]
        async fn a_claim_returns_the_row_as_it_is_now_on_postgres() {
            let db = TestDatabase::create().await;
            let store = Store::connect(&DatabaseTarget::Postgres(db.url().to_owned()))
                .await
                .expect("store");
            a_claim_returns_the_row_as_it_is_now(store).await;
        }
    }
}
