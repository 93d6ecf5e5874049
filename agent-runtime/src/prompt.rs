//! Building the prompt sent upstream: token counting with a real BPE tokenizer
//! (tiktoken) and trimming the history to `context.maxTokens`: system messages
//! and the newest message are always kept, the oldest turns go first; a tool
//! result whose call was trimmed away goes too (a result must follow its call).

use tiktoken_rs::CoreBPE;

use crate::providers::PromptMessage;

/// Tokens OpenAI's chat format adds per message (role and separators).
const PER_MESSAGE_OVERHEAD: usize = 4;
/// Tokens that prime the answer.
const REPLY_PRIMING: usize = 3;

/// Counts tokens for one model family.
#[derive(Clone, Copy)]
pub struct Tokenizer {
    bpe: &'static CoreBPE,
}

impl Tokenizer {
    /// The tokenizer for `model`: `o200k_base` for the GPT-4o/4.1/5 and o-series
    /// families, `cl100k_base` for everything else (a close estimate for
    /// Llama, Mistral or Claude models, whose tokenizers are not public in BPE form).
    pub fn for_model(model: &str) -> Self {
        let m = model.to_ascii_lowercase();
        let o200k = ["gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4", "chatgpt-4o"]
            .iter()
            .any(|p| m.starts_with(p));
        let bpe = if o200k {
            tiktoken_rs::o200k_base_singleton()
        } else {
            tiktoken_rs::cl100k_base_singleton()
        };
        Self { bpe }
    }

    /// Tokens in `text`.
    pub fn count(&self, text: &str) -> usize {
        self.bpe.encode_ordinary(text).len()
    }

    /// Tokens one chat message costs (tool calls' names and arguments included).
    pub fn message_tokens(&self, message: &PromptMessage) -> usize {
        PER_MESSAGE_OVERHEAD
            + self.count(&message.content)
            + message
                .tool_calls
                .iter()
                .map(|c| PER_MESSAGE_OVERHEAD + self.count(&c.name) + self.count(&c.arguments))
                .sum::<usize>()
    }

    /// Tokens a whole prompt costs.
    pub fn prompt_tokens(&self, messages: &[PromptMessage]) -> usize {
        messages
            .iter()
            .map(|m| self.message_tokens(m))
            .sum::<usize>()
            + REPLY_PRIMING
    }
}

/// The prompt does not fit even with all history dropped.
#[derive(Debug, thiserror::Error)]
#[error(
    "the system prompt and the newest message need {needed} tokens, more than the {max} allowed (context.maxTokens)"
)]
pub struct ContextOverflow {
    /// Tokens needed at least.
    pub needed: usize,
    /// The limit.
    pub max: usize,
}

/// Keeps every system message and as many of the newest other messages as fit
/// in `max_tokens`, in their original order. The last message is always kept.
pub fn trim(
    tokenizer: &Tokenizer,
    messages: Vec<PromptMessage>,
    max_tokens: usize,
) -> Result<Vec<PromptMessage>, ContextOverflow> {
    use crate::domain::Role;
    // A token covers at least one byte: a prompt whose bytes (plus overheads)
    // fit needs no counting at all (the common case; skips tokenizing history).
    let upper_bound = REPLY_PRIMING
        + messages
            .iter()
            .map(|m| {
                PER_MESSAGE_OVERHEAD
                    + m.content.len()
                    + m.tool_calls
                        .iter()
                        .map(|c| PER_MESSAGE_OVERHEAD + c.name.len() + c.arguments.len())
                        .sum::<usize>()
            })
            .sum::<usize>();
    if upper_bound <= max_tokens {
        return Ok(messages);
    }
    let costs: Vec<usize> = messages
        .iter()
        .map(|m| tokenizer.message_tokens(m))
        .collect();
    let last = messages.len().saturating_sub(1);
    let mut keep = vec![false; messages.len()];
    let mut used = REPLY_PRIMING;
    for (i, m) in messages.iter().enumerate() {
        if m.role == Role::System || i == last {
            keep[i] = true;
            used += costs[i];
        }
    }
    if used > max_tokens {
        return Err(ContextOverflow {
            needed: used,
            max: max_tokens,
        });
    }
    for i in (0..last).rev() {
        if keep[i] {
            continue;
        }
        if used + costs[i] > max_tokens {
            break;
        }
        used += costs[i];
        keep[i] = true;
    }
    let kept: Vec<PromptMessage> = messages
        .into_iter()
        .zip(keep)
        .filter_map(|(m, k)| k.then_some(m))
        .collect();
    Ok(drop_orphan_results(kept))
}

/// Drops tool results whose call is not among the messages before them
/// (trimmed away), except the newest message.
fn drop_orphan_results(messages: Vec<PromptMessage>) -> Vec<PromptMessage> {
    use crate::domain::Role;
    let last = messages.len().saturating_sub(1);
    let mut calls: Vec<String> = Vec::new();
    let mut kept = Vec::with_capacity(messages.len());
    for (i, m) in messages.into_iter().enumerate() {
        calls.extend(m.tool_calls.iter().map(|c| c.id.clone()));
        let orphan = m.role == Role::Tool
            && i != last
            && m.tool_call_id
                .as_ref()
                .is_some_and(|id| !calls.contains(id));
        if !orphan {
            kept.push(m);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    fn msg(role: Role, content: &str) -> PromptMessage {
        PromptMessage::text(role, content)
    }

    #[test]
    fn counts_real_tokens() {
        let t = Tokenizer::for_model("gpt-4");
        assert_eq!(t.count("hello world"), 2);
        assert_eq!(t.count("antidisestablishmentarianism"), 6);
        let t = Tokenizer::for_model("gpt-4o-mini");
        assert_eq!(t.count("hello world"), 2);
    }

    #[test]
    fn drops_oldest_turns_but_keeps_system_and_newest() {
        let t = Tokenizer::for_model("gpt-4");
        let long = "word ".repeat(50);
        let messages = vec![
            msg(Role::System, "You are terse."),
            msg(Role::User, &long),
            msg(Role::Assistant, &long),
            msg(Role::User, "short one"),
            msg(Role::Assistant, "short two"),
            msg(Role::User, "newest"),
        ];
        let budget = t.prompt_tokens(&[
            messages[0].clone(),
            messages[3].clone(),
            messages[4].clone(),
            messages[5].clone(),
        ]);
        let kept = trim(&t, messages.clone(), budget).expect("fits");
        assert_eq!(
            kept,
            vec![
                messages[0].clone(),
                messages[3].clone(),
                messages[4].clone(),
                messages[5].clone()
            ]
        );
        let all = trim(&t, messages.clone(), 100_000).expect("fits");
        assert_eq!(all, messages);
        let err = trim(&t, vec![msg(Role::User, &long)], 10).expect_err("cannot fit");
        assert!(err.needed > 10);
    }
}
