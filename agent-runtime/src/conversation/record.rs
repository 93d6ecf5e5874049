//! Sessions and the user's messages: which session a message belongs to (by
//! id, by the client's conversation id, or by recognising the history an
//! OpenAI client resends), storing each message once, durably, before the
//! model is called, and opening sessions (with the channel's greeting).

use super::{ConversationError, Input, Participant, SessionRef};
use crate::db::{Message, NewMessage, NewSession, Session};
use crate::domain::{Role, chain_hash, chain_hash_with_tools};
use crate::providers::PromptMessage;
use crate::state::AppState;

/// The newest stored message a turn answers.
#[derive(Clone, Debug)]
pub(super) struct Anchor {
    /// Its id (the answer's parent).
    pub id: String,
    /// Its conversation hash.
    pub hash: String,
}

impl Anchor {
    pub(super) fn of(message: &Message) -> Self {
        Self {
            id: message.id.clone(),
            hash: message.chain_hash.clone(),
        }
    }
}

/// A user message stored in its session.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The session.
    pub session_id: String,
    /// The stored message.
    pub message: Message,
}

/// What a turn starts from once its input is resolved to a session.
pub(super) struct RecordedInput {
    pub session_id: String,
    pub anchor: Anchor,
    /// The conversation as the model should see it, newest last.
    pub history: Vec<PromptMessage>,
    /// The stored message, for an [`Input::Message`].
    pub user_message: Option<Message>,
    /// The input's messages still to be written (a client's history): the
    /// turn writes them while the model is called, and stores and returns the
    /// answer only once they are durable.
    pub pending: Option<PendingWrite>,
}

/// A write of a turn's input whose result the turn does not need before
/// calling the model: everything it would return (the session's id, the
/// messages' ids and hashes) is decided before it is sent.
pub(super) struct PendingWrite {
    session_id: String,
    channel: String,
    kind: WriteKind,
}

enum WriteKind {
    /// A new session with its first messages, in one commit.
    Session(NewSession, Vec<NewMessage>),
    /// Messages appended to an existing session.
    Messages(Vec<NewMessage>),
}

impl PendingWrite {
    /// Writes the messages (retrying through database outages, see
    /// [`crate::db::Store::append_messages`]).
    pub(super) async fn run(self, state: &AppState) -> Result<(), ConversationError> {
        match self.kind {
            WriteKind::Session(new, records) => {
                state
                    .store
                    .create_session_with_messages(&self.session_id, new, &records)
                    .await?;
            }
            WriteKind::Messages(records) => {
                state.store.append_messages(&records).await?;
            }
        }
        state
            .channels
            .activity
            .record_message(&self.channel, &self.session_id);
        Ok(())
    }
}

/// Stores `text` as the next user message of a session (for edges that
/// answer later, such as webhook delivery).
pub async fn record(
    state: &AppState,
    participant: &Participant,
    session: SessionRef,
    text: &str,
) -> Result<Recorded, ConversationError> {
    let (session_id, _, message) = append_user_message(state, participant, session, text).await?;
    Ok(Recorded {
        session_id,
        message,
    })
}

pub(super) async fn record_input(
    state: &AppState,
    participant: &Participant,
    session: SessionRef,
    input: Input,
) -> Result<RecordedInput, ConversationError> {
    let user = &participant.user;
    match (session, input) {
        (SessionRef::Recognised, Input::Message(text)) => {
            let history = vec![PromptMessage::text(Role::User, text)];
            sync_history(state, participant, None, history).await
        }
        (SessionRef::Recognised, Input::History(history)) => {
            sync_history(state, participant, None, history).await
        }
        (SessionRef::Id(id), Input::History(history)) => {
            let session = state.store.get_session(user, &id).await?;
            sync_history(state, participant, Some(session), history).await
        }
        (SessionRef::External(conversation), Input::History(history)) => {
            let session = conversation_session(state, participant, &conversation).await?;
            sync_history(state, participant, Some(session), history).await
        }
        (session, Input::Message(text)) => {
            let (session_id, branch, message) =
                append_user_message(state, participant, session, &text).await?;
            let mut history = prompt_from_stored(&branch);
            history.push(PromptMessage::text(Role::User, text));
            Ok(RecordedInput {
                session_id,
                anchor: Anchor::of(&message),
                history,
                user_message: Some(message),
                pending: None,
            })
        }
    }
}

/// The session of a client's conversation id (webhook, Slack thread, Discord
/// channel), created when missing. With `sessions.idleTimeoutMinutes`, a
/// session idle for longer is retired (it keeps its messages under its own id)
/// and the conversation continues in a new one.
async fn conversation_session(
    state: &AppState,
    participant: &Participant,
    conversation: &str,
) -> Result<Session, ConversationError> {
    let (user, channel) = (&participant.user, &participant.channel);
    let session = state
        .store
        .session_for_conversation(user, channel, conversation)
        .await?;
    let Some(minutes) = state
        .config
        .sessions
        .idle_timeout_minutes
        .filter(|m| *m > 0)
    else {
        return Ok(session);
    };
    let last = session.last_message_at.unwrap_or(session.created_at);
    if chrono::Utc::now() - last <= chrono::Duration::minutes(i64::from(minutes)) {
        return Ok(session);
    }
    tracing::info!(session = %session.id, idle_minutes = minutes, "conversation idle past the timeout: a new session");
    state
        .store
        .retire_conversation(&session.id, conversation)
        .await?;
    Ok(state
        .store
        .session_for_conversation(user, channel, conversation)
        .await?)
}

/// Appends a user message after the newest of the session's current branch
/// (a new session when none is named); returns the session id, the branch
/// before the message, and the stored message.
async fn append_user_message(
    state: &AppState,
    participant: &Participant,
    session: SessionRef,
    text: &str,
) -> Result<(String, Vec<Message>, Message), ConversationError> {
    let user = &participant.user;
    let session_id = match session {
        // The branch read below checks the session is the user's.
        SessionRef::Id(id) => id,
        SessionRef::External(conversation) => {
            conversation_session(state, participant, &conversation)
                .await?
                .id
        }
        SessionRef::Recognised => {
            state
                .store
                .create_session(NewSession {
                    user_id: user.clone(),
                    channel: participant.channel.clone(),
                    external_id: None,
                    title: None,
                })
                .await?
                .id
        }
    };
    let branch = state.store.conversation(user, &session_id).await?;
    let parent = branch.last();
    let record = NewMessage {
        id: NewMessage::new_id(),
        session_id: session_id.clone(),
        parent_id: parent.map(|m| m.id.clone()),
        role: Role::User,
        content: text.to_owned(),
        model: None,
        tokens_in: state.tokenizer.count(text) as i64,
        tokens_out: 0,
        latency_ms: None,
        error: None,
        chain_hash: chain_hash(
            parent.map(|m| m.chain_hash.as_str()).unwrap_or_default(),
            Role::User,
            text,
        ),
        tool_calls: Vec::new(),
        tool_call_id: None,
        author: participant.author.clone(),
    };
    let message = state
        .store
        .append_messages(std::slice::from_ref(&record))
        .await?
        .pop()
        .ok_or(ConversationError::NothingStored("the user message"))?;
    state
        .channels
        .activity
        .record_message(&participant.channel, &session_id);
    Ok((session_id, branch, message))
}

/// Maps a whole client history to a session (`session` when named, else the
/// one whose stored messages it continues, else a new one); the messages not
/// stored yet are the returned [`PendingWrite`], which the turn writes while
/// the model is called.
async fn sync_history(
    state: &AppState,
    participant: &Participant,
    session: Option<Session>,
    messages: Vec<PromptMessage>,
) -> Result<RecordedInput, ConversationError> {
    let user = participant.user.as_str();
    let mut hashes = Vec::with_capacity(messages.len());
    let mut parent = String::new();
    for m in &messages {
        parent = chain_hash_with_tools(
            &parent,
            m.role,
            &m.content,
            &m.tool_calls,
            m.tool_call_id.as_deref(),
        );
        hashes.push(parent.clone());
    }
    let n = messages.len();
    let (session, matched) = match session {
        Some(session) => {
            let found = state
                .store
                .find_by_chain_hash(user, Some(&session.id), &hashes)
                .await?;
            (session, longest_match(&hashes, found))
        }
        None => {
            // Without an id, continue a session only when the history's newest
            // message, or the one before it, is already stored: a fresh
            // one-message chat always starts a new session.
            let candidates = if n >= 2 {
                hashes[n - 2..].to_vec()
            } else {
                Vec::new()
            };
            let found = state
                .store
                .find_by_chain_hash(user, None, &candidates)
                .await?;
            match longest_match(&hashes, found) {
                Some((index, message)) => {
                    let session = state.store.get_session(user, &message.session_id).await?;
                    (session, Some((index, message)))
                }
                None => {
                    // A new conversation: the session and its messages in one commit.
                    let session_id = uuid::Uuid::now_v7().to_string();
                    let records = new_records(state, &session_id, &messages, &hashes, 0, None);
                    let last = records
                        .last()
                        .ok_or(ConversationError::NothingStored("the history"))?;
                    let anchor = Anchor {
                        id: last.id.clone(),
                        hash: last.chain_hash.clone(),
                    };
                    let new = NewSession {
                        user_id: user.to_owned(),
                        channel: participant.channel.clone(),
                        external_id: None,
                        title: None,
                    };
                    let pending = WriteKind::Session(new, records);
                    return Ok(recorded_history(
                        state,
                        participant,
                        session_id,
                        anchor,
                        messages,
                        Some(pending),
                    ));
                }
            }
        }
    };
    let (start, parent) = match matched {
        Some((index, message)) => (index + 1, Some(Anchor::of(&message))),
        None => (0, None),
    };
    let records = new_records(
        state,
        &session.id,
        &messages,
        &hashes,
        start,
        parent.clone(),
    );
    let anchor = match records.last() {
        Some(last) => Anchor {
            id: last.id.clone(),
            hash: last.chain_hash.clone(),
        },
        None => parent.ok_or(ConversationError::NothingStored("the history"))?,
    };
    let pending = (!records.is_empty()).then_some(WriteKind::Messages(records));
    Ok(recorded_history(
        state,
        participant,
        session.id,
        anchor,
        messages,
        pending,
    ))
}

fn recorded_history(
    state: &AppState,
    participant: &Participant,
    session_id: String,
    anchor: Anchor,
    history: Vec<PromptMessage>,
    pending: Option<WriteKind>,
) -> RecordedInput {
    if pending.is_none() {
        // Nothing to write: the activity counts now (else once written).
        state
            .channels
            .activity
            .record_message(&participant.channel, &session_id);
    }
    RecordedInput {
        pending: pending.map(|kind| PendingWrite {
            session_id: session_id.clone(),
            channel: participant.channel.clone(),
            kind,
        }),
        session_id,
        anchor,
        history,
        user_message: None,
    }
}

/// Records for `messages[start..]`, chained from `parent`.
fn new_records(
    state: &AppState,
    session_id: &str,
    messages: &[PromptMessage],
    hashes: &[String],
    start: usize,
    parent: Option<Anchor>,
) -> Vec<NewMessage> {
    let mut parent_id = parent.map(|a| a.id);
    let mut records = Vec::with_capacity(messages.len().saturating_sub(start));
    for (i, m) in messages.iter().enumerate().skip(start) {
        let id = NewMessage::new_id();
        records.push(NewMessage {
            id: id.clone(),
            session_id: session_id.to_owned(),
            parent_id: parent_id.replace(id),
            role: m.role,
            content: m.content.clone(),
            model: None,
            tokens_in: state.tokenizer.count(&m.content) as i64,
            tokens_out: 0,
            latency_ms: None,
            error: None,
            chain_hash: hashes[i].clone(),
            tool_calls: m.tool_calls.clone(),
            tool_call_id: m.tool_call_id.clone(),
            author: None,
        });
    }
    records
}

/// The stored message matching the longest prefix of `hashes`, with its index.
fn longest_match(hashes: &[String], found: Vec<Message>) -> Option<(usize, Message)> {
    found
        .into_iter()
        .filter_map(|m| {
            hashes
                .iter()
                .rposition(|h| *h == m.chain_hash)
                .map(|i| (i, m))
        })
        .max_by_key(|(i, _)| *i)
}

/// Opens a session for `participant`. A channel's greeting opens it as its
/// first assistant message (one commit with the session).
pub async fn open_session(
    state: &AppState,
    participant: &Participant,
    title: Option<String>,
) -> Result<Session, ConversationError> {
    let new = NewSession {
        user_id: participant.user.clone(),
        channel: participant.channel.clone(),
        external_id: None,
        title,
    };
    let greeting = state
        .channels
        .get(&participant.channel)
        .and_then(|c| c.greeting.clone())
        .filter(|g| !g.trim().is_empty());
    let Some(text) = greeting else {
        return Ok(state.store.create_session(new).await?);
    };
    let id = uuid::Uuid::now_v7().to_string();
    let greeting = NewMessage {
        id: NewMessage::new_id(),
        session_id: id.clone(),
        parent_id: None,
        role: Role::Assistant,
        tokens_in: 0,
        tokens_out: state.tokenizer.count(&text) as i64,
        latency_ms: None,
        error: None,
        model: None,
        chain_hash: chain_hash("", Role::Assistant, &text),
        content: text,
        tool_calls: Vec::new(),
        tool_call_id: None,
        author: None,
    };
    Ok(state
        .store
        .create_session_with_messages(&id, new, &[greeting])
        .await?
        .0)
}

/// The current branch of a session in prompt form, ready to send as an
/// OpenAI `messages` list (failed empty answers left out).
pub async fn current_history(
    state: &AppState,
    user: &str,
    session_id: &str,
) -> Result<Vec<PromptMessage>, ConversationError> {
    let branch = state.store.conversation(user, session_id).await?;
    Ok(prompt_from_stored(&branch))
}

/// The stored conversation as prompt messages (tool calls and results
/// included), skipping failed empty answers.
pub(super) fn prompt_from_stored(messages: &[Message]) -> Vec<PromptMessage> {
    messages
        .iter()
        .filter(|m| !(m.role == Role::Assistant && m.error.is_some() && m.content.is_empty()))
        .map(|m| PromptMessage {
            tool_calls: m.tool_calls(),
            tool_call_id: m.tool_call_id.clone(),
            ..PromptMessage::text(m.role, m.content.clone())
        })
        .collect()
}
