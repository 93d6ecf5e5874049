//! The stable figure: instructions executed per chat, counted by valgrind's
//! callgrind. Wall-clock figures on a shared machine swing by 2×; the same
//! binary given the same requests executes nearly the same instructions, so a
//! change's cost shows without noise.
//!
//! The process runs under callgrind with instrumentation off (valgrind's
//! slowdown without its cache and call accounting), is warmed (connections,
//! prepared statements, tokenizer tables; whole and streamed chats), then
//! counting is switched on with `callgrind_control`, `chats` whole chats are
//! sent one at a time and the counts dumped, then `chats` streamed chats (the
//! time-to-first-token path, then the relay and the answer's store) and the
//! counts dumped again, then `chats` follow-ups (a conversation's second
//! question, sent with its stored first turn: the history is read back and
//! matched) and the counts dumped a third time. Each dump is a profile
//! `callgrind_annotate` reads: every thread of the process, the I/O driver
//! and the database client included.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::Proc;

/// What to run under callgrind.
pub struct Target<'a> {
    /// The program.
    pub program: &'a Path,
    /// Its arguments.
    pub args: Vec<String>,
    /// Environment variables it gets.
    pub envs: Vec<(&'static str, String)>,
    /// A URL that answers 2xx once it is ready.
    pub ready_url: String,
    /// The profile's path; the counted window is dumped to `<profile>.1`.
    pub profile: PathBuf,
    /// CPUs it runs on (`taskset -c`), empty for wherever the bench may run. The
    /// count depends a little on where the process runs (a future found ready
    /// or not costs a poll more or less): 270,326 against 292,202 per chat in
    /// one measurement, on the load generator's CPU against a CPU of its own.
    pub cpus: &'a str,
}

/// The counted windows of one process.
pub struct Counts {
    /// Whole (non-streamed) chats.
    pub whole: Counted,
    /// Streamed chats.
    pub streamed: Counted,
    /// Follow-ups: second questions of conversations opened before counting.
    pub follow_up: Counted,
}

/// The chats [`count`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A new one-message chat, answered whole.
    Whole,
    /// A new one-message chat, streamed.
    Streamed,
    /// Opens conversation `i` (not counted): its answer is kept for the
    /// follow-up.
    Opening,
    /// Conversation `i`'s second question, sent with its first turn.
    FollowUp,
}

/// A counted window.
pub struct Counted {
    /// Instructions executed per chat, every thread of the process.
    pub per_chat: u64,
    /// The profile of the counted window, for `callgrind_annotate`.
    pub profile: PathBuf,
}

/// Why no count came out.
#[derive(Debug)]
pub struct NotCounted(pub String);

impl std::fmt::Display for NotCounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Runs `target` under callgrind, warms it with `warm` chats of each kind,
/// opens `chats` conversations, and counts the instructions of the next
/// `chats` whole chats, then of `chats` streamed ones, then of the
/// conversations' follow-ups (each `chat(i, kind)` completes one chat).
pub async fn count<F, Fut>(
    valgrind: &Path,
    target: Target<'_>,
    client: &reqwest::Client,
    warm: usize,
    chats: usize,
    chat: F,
) -> Result<Counts, NotCounted>
where
    F: Fn(usize, Kind) -> Fut,
    Fut: Future<Output = ()>,
{
    for stale in dumps(&target.profile) {
        let _ = std::fs::remove_file(stale);
    }
    let process = Proc {
        child: crate::on_cpus(target.cpus, valgrind)
            .args([
                "--tool=callgrind",
                "--instr-atstart=no",
                // Counting only: no cache simulation, no jumps.
                "--cache-sim=no",
                // Not a chat's cost: opening a database connection (SCRAM
                // authentication alone is ~90 million instructions), which
                // the pool does when timing makes it, not per chat. Counted,
                // one opening would add ~450,000 to each of 200 chats.
                "--toggle-collect=*PgConnection*establish*",
                // (A toggle otherwise turns collection off at start.)
                "--collect-atstart=yes",
            ])
            .arg(format!("--callgrind-out-file={}", target.profile.display()))
            .arg(target.program)
            .args(&target.args)
            .envs(target.envs.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| NotCounted(format!("{} does not start: {e}", valgrind.display())))?,
    };
    let pid = process.pid().to_string();
    // Under valgrind, start-up (migrations, tokenizer tables) takes a while.
    if !crate::wait_http_for(client, &target.ready_url, Duration::from_secs(300)).await {
        return Err(NotCounted(format!(
            "{} did not come up under callgrind",
            target.ready_url
        )));
    }
    for i in 0..warm {
        for kind in [Kind::Whole, Kind::Streamed, Kind::Opening, Kind::FollowUp] {
            chat(i, kind).await;
        }
    }
    for i in warm..warm + chats {
        chat(i, Kind::Opening).await;
    }
    control(&["--instr=on", &pid]).await?;
    // Each dump holds the counts since the one before.
    for (kind, hint) in [
        (Kind::Whole, "--dump=whole"),
        (Kind::Streamed, "--dump=streamed"),
        (Kind::FollowUp, "--dump=follow-up"),
    ] {
        for i in warm..warm + chats {
            chat(i, kind).await;
        }
        control(&[hint, &pid]).await?;
    }
    drop(process);
    let mut windows = dumps(&target.profile).into_iter().map(|profile| {
        let total = total_instructions(&profile)?;
        Ok(Counted {
            per_chat: total / chats.max(1) as u64,
            profile,
        })
    });
    let mut next = || {
        windows
            .next()
            .unwrap_or_else(|| Err(NotCounted("callgrind wrote too few dumps".into())))
    };
    let whole = next()?;
    let streamed = next()?;
    let follow_up = next()?;
    Ok(Counts {
        whole,
        streamed,
        follow_up,
    })
}

/// Sends a command to the process under callgrind.
async fn control(args: &[&str]) -> Result<(), NotCounted> {
    let out = Command::new("callgrind_control")
        .args(args)
        .output()
        .await
        .map_err(|e| NotCounted(format!("callgrind_control: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NotCounted(format!(
            "callgrind_control {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The dumps written next to `profile` (`<profile>.1`, ...), in order.
fn dumps(profile: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (profile.parent(), profile.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// The instructions a dump counts (its `summary:` or `totals:` line).
fn total_instructions(profile: &Path) -> Result<u64, NotCounted> {
    let text = std::fs::read_to_string(profile)
        .map_err(|e| NotCounted(format!("{}: {e}", profile.display())))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| NotCounted(format!("{}: no instruction total", profile.display())))
}
