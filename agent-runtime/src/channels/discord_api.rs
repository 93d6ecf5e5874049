//! The Discord REST calls the runtime makes, through twilight-http: the answer
//! as a reply to the user's message (split at Discord's 2,000-character limit
//! on paragraph, line, then word boundaries) and the typing indicator.
//! twilight's ratelimiter honours per-route buckets, the global limit and a
//! 429's `retry_after` by itself; one client per bot token keeps that state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use sha2::{Digest, Sha256};
use twilight_http::Client;
use twilight_model::id::Id;

/// Discord's limit on a message's content, in characters.
pub const MAX_CHARS: usize = 2000;

/// Why a post did not go through.
#[derive(Debug, thiserror::Error)]
pub enum DiscordPostError {
    /// A channel or message id is not a snowflake.
    #[error("not a Discord id: {0:?}")]
    BadId(String),
    /// Discord refused or could not be reached.
    #[error("Discord refused the message: {0}")]
    Http(#[from] twilight_http::Error),
}

/// A short name for a bot token (lease names, client cache): never the token.
pub fn token_digest(token: &str) -> String {
    hex::encode(&Sha256::digest(token.as_bytes())[..8])
}

type Clients = Mutex<HashMap<(String, Option<String>), Arc<Client>>>;

/// The REST client of a bot (shared, so the ratelimiter's buckets persist).
/// `proxy`: `host:port` of a plain-HTTP stand-in for discord.com (the mock).
pub fn client(token: &str, proxy: Option<&str>) -> Arc<Client> {
    static CLIENTS: OnceLock<Clients> = OnceLock::new();
    let key = (token_digest(token), proxy.map(str::to_owned));
    let mut clients = CLIENTS
        .get_or_init(Clients::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    clients
        .entry(key)
        .or_insert_with(|| {
            let mut builder = Client::builder().token(token.to_owned());
            if let Some(proxy) = proxy {
                builder = builder.proxy(proxy.to_owned(), true);
            }
            Arc::new(builder.build())
        })
        .clone()
}

fn snowflake<T>(id: &str) -> Result<Id<T>, DiscordPostError> {
    id.parse::<u64>()
        .ok()
        .and_then(Id::new_checked)
        .ok_or_else(|| DiscordPostError::BadId(id.to_owned()))
}

/// Splits `text` into pieces of at most `max` characters, preferring to break
/// after a blank line, then a line, then a space.
pub fn split(text: &str, max: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = text.trim();
    while rest.chars().count() > max {
        let cut = rest
            .char_indices()
            .nth(max)
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let window = &rest[..cut];
        let at = ["\n\n", "\n", " "]
            .iter()
            .find_map(|sep| window.rfind(sep).filter(|i| *i > 0).map(|i| i + sep.len()))
            .unwrap_or(cut);
        pieces.push(rest[..at].trim_end().to_owned());
        rest = rest[at..].trim_start();
    }
    if !rest.is_empty() || pieces.is_empty() {
        pieces.push(rest.to_owned());
    }
    pieces
}

/// Posts `text` in `channel`, the first piece replying to `reply_to`.
pub async fn post_answer(
    client: &Client,
    channel: &str,
    reply_to: Option<&str>,
    text: &str,
) -> Result<(), DiscordPostError> {
    let channel_id = snowflake(channel)?;
    let reply_to = reply_to.map(snowflake).transpose()?;
    for (i, piece) in split(text, MAX_CHARS).iter().enumerate() {
        let request = client.create_message(channel_id).content(piece);
        match reply_to.filter(|_| i == 0) {
            Some(original) => request.reply(original).await?,
            None => request.await?,
        };
    }
    Ok(())
}

/// Shows "typing…" in `channel` (best effort: failures are only logged).
pub async fn typing(client: &Client, channel: &str) {
    let Ok(channel_id) = snowflake(channel) else {
        return;
    };
    if let Err(err) = client.create_typing_trigger(channel_id).await {
        tracing::debug!(error = %err, "Discord typing indicator failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_answers_are_one_piece() {
        assert_eq!(split("hello", 2000), ["hello"]);
    }

    #[test]
    fn long_answers_split_on_paragraphs_lines_then_words() {
        let para = "a".repeat(15);
        let text = format!("{para}\n\n{para}\n\n{para}");
        assert_eq!(
            split(&text, 40),
            [format!("{para}\n\n{para}"), para.clone()]
        );
        let lines = format!("{para}\n{para}\n{para}");
        assert_eq!(split(&lines, 35), [format!("{para}\n{para}"), para.clone()]);
        assert_eq!(split("one two three four", 9), ["one two", "three", "four"]);
        let word = "x".repeat(25);
        assert_eq!(
            split(&word, 10),
            ["x".repeat(10), "x".repeat(10), "x".repeat(5)]
        );
        let long: String = "word ".repeat(1000);
        let pieces = split(&long, MAX_CHARS);
        assert!(pieces.iter().all(|p| p.chars().count() <= MAX_CHARS));
        assert_eq!(pieces.concat().replace(' ', ""), long.replace(' ', ""));
    }

    #[test]
    fn multibyte_text_is_cut_on_characters() {
        let text = "é".repeat(25);
        let pieces = split(&text, 10);
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|p| p.chars().count() <= 10));
    }
}
