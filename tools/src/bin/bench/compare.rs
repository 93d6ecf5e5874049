//! `bench --litellm PATH` and/or `--langdb PATH` (`make bench-compare`): the
//! runtime side by side with other gateways, each in front of the same mock-llm,
//! pinned to the same CPUs and measured in one run by the same client: the LiteLLM
//! proxy (the popular Python gateway) and LangDB's AI Gateway (a Rust gateway
//! published on crates.io). Measured per server: one-at-a-time latency (whole
//! answers and streamed first tokens, each server's chats interleaved with the
//! same chats sent to mock-llm directly, every other server stopped meanwhile),
//! its CPU per chat, chats per second at `--concurrency` and the latency there,
//! and memory. The runtime persists every user message and answer (Postgres with
//! `--database-url`, else SQLite); the others run without a database, as their
//! quick starts do, so they store nothing: the comparison favours them.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::{
    API_KEY, Args, Database, Load, Proc, Target, cpu_time, free_port, interleaved, load_average,
    machine_cpus, micros, ms, per_request, percentile, pinned, rss_kib, start_runtime, stolen,
    throughput, wait_http_for,
};

/// The proxy's master key (it refuses to start without one).
const LITELLM_KEY: &str = "sk-bench-000000000000000000000000000000000000";

/// Requests sent to each server before measuring (the proxy's first ones are
/// slow: imports, routers and clients made on first use).
const WARM_CHATS: usize = 200;

/// The environment that keeps the proxy off the network: it would otherwise
/// fetch its model cost map, blog posts and policy templates from the
/// internet at start (the machine has none; the bench sends traffic to
/// loopback only). Whatever else it might try goes to a proxy on a loopback port nobody
/// listens on (`127.0.0.1:9`) and fails there, except loopback itself.
const OFFLINE: [(&str, &str); 12] = [
    ("HTTP_PROXY", "http://127.0.0.1:9"),
    ("HTTPS_PROXY", "http://127.0.0.1:9"),
    ("ALL_PROXY", "http://127.0.0.1:9"),
    ("http_proxy", "http://127.0.0.1:9"),
    ("https_proxy", "http://127.0.0.1:9"),
    ("NO_PROXY", "127.0.0.1,localhost"),
    ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
    ("LITELLM_LOCAL_BLOG_POSTS", "True"),
    ("LITELLM_LOCAL_POLICY_TEMPLATES", "True"),
    ("LITELLM_LOCAL_AUTOROUTER_PRESETS", "True"),
    ("LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS", "True"),
    ("LITELLM_LOG", "ERROR"),
];

/// Starts the proxy (one worker, pinned like the runtime) routing model
/// `bench` to mock-llm; waits until it answers.
async fn start_litellm(
    args: &Args,
    dir: &Path,
    mock_url: &str,
    litellm: &Path,
    client: &reqwest::Client,
) -> (Proc, String) {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let config = dir.join("litellm.yaml");
    std::fs::write(
        &config,
        format!(
            "model_list:\n  - model_name: bench\n    litellm_params:\n      model: openai/bench-model\n      \
             api_base: {mock_url}/v1\n      api_key: none\n"
        ),
    )
    .expect("LiteLLM config written");
    let log = dir.join("litellm.log");
    let proxy = Proc {
        child: pinned(args, litellm)
            .args(["--config", &config.display().to_string()])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--num_workers", "1"])
            .env("LITELLM_MASTER_KEY", LITELLM_KEY)
            .envs(OFFLINE)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("LiteLLM log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("litellm starts"),
    };
    wait_started(
        client,
        &format!("{url}/health/liveliness"),
        180,
        &log,
        "the LiteLLM proxy",
    )
    .await;
    (proxy, url)
}

/// Waits up to `seconds` for `url` to answer; panics with the end of `log` if it
/// does not.
async fn wait_started(client: &reqwest::Client, url: &str, seconds: u64, log: &Path, what: &str) {
    if !wait_http_for(client, url, Duration::from_secs(seconds)).await {
        let tail = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(30).collect();
        panic!(
            "{what} did not answer within {seconds} s; its log ends:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
}

/// The installed proxy's version, from the Python next to its executable.
fn litellm_version(litellm: &Path) -> String {
    let python = litellm.with_file_name("python");
    std::process::Command::new(python)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "(version unknown)".to_owned())
}

/// LangDB's gateway does not read the key (any bearer token is taken).
const LANGDB_KEY: &str = "sk-bench-langdb";

/// Starts LangDB's AI Gateway (`ai-gateway serve`, pinned like the runtime, so
/// actix starts one worker) routing model `bench` to mock-llm; waits until it
/// answers. Its model list is read from `$HOME/.langdb/models.yaml`, written here
/// with the one model, so it fetches nothing at start. The model's provider is one
/// it does not know (`mock`): such a provider is called as an OpenAI-compatible API
/// at the model's `endpoint` (its `openai` provider always calls api.openai.com). It
/// also serves OTLP on port 4317 of every address, which must be free.
async fn start_langdb(
    args: &Args,
    dir: &Path,
    mock_url: &str,
    langdb: &Path,
    client: &reqwest::Client,
) -> (Proc, String) {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let home = dir.join("langdb-home");
    std::fs::create_dir_all(home.join(".langdb")).expect("LangDB home made");
    std::fs::write(
        home.join(".langdb").join("models.yaml"),
        format!(
            "- model: bench\n  model_provider: openai\n  inference_provider:\n    provider: mock\n    \
             model_name: bench-model\n    endpoint: {mock_url}/v1\n  price:\n    per_input_token: 0.0\n    \
             per_output_token: 0.0\n    valid_from: null\n  input_formats: [text]\n  output_formats: [text]\n  \
             capabilities: []\n  type: completions\n  limits:\n    max_context_size: 128000\n  \
             description: mock-llm\n"
        ),
    )
    .expect("LangDB models written");
    // No config file: its defaults (no ClickHouse, no limits, no guards).
    let config = dir.join("langdb-config.yaml");
    let log = dir.join("langdb.log");
    let gateway = Proc {
        child: pinned(args, langdb)
            .args(["--config", &config.display().to_string()])
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
            .env("HOME", &home)
            .env("LANGDB_MOCK_API_KEY", "none")
            .env("LANGDB_OPENAI_API_KEY", "none")
            .env("RUST_LOG", "error")
            .envs(OFFLINE.iter().take(6).copied())
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("LangDB log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("ai-gateway starts"),
    };
    wait_started(
        client,
        &format!("{url}/v1/models"),
        60,
        &log,
        "LangDB's AI Gateway",
    )
    .await;
    (gateway, url)
}

/// The gateway's version, as `ai-gateway --version` prints it.
fn langdb_version(langdb: &Path) -> String {
    std::process::Command::new(langdb)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| v.split_whitespace().last().map(str::to_owned))
        .unwrap_or_else(|| "(version unknown)".to_owned())
}

/// One server's figures, measured with every other server stopped, and the
/// series sent to mock-llm directly in the same phase.
struct Alone {
    direct_whole: Vec<Duration>,
    direct_first: Vec<Duration>,
    /// mock-llm's CPU per answer over the whole-answer series.
    mock_cpu: Duration,
    whole: Vec<Duration>,
    first_token: Vec<Duration>,
    /// CPU per chat over the one-at-a-time whole-answer series.
    sequential_cpu: Duration,
    load: Load,
    /// RSS after warming up.
    idle_rss: u64,
}

/// Picks a direct series and the server's, from one [`Alone`].
type Pick = fn(&Alone) -> (&Vec<Duration>, &Vec<Duration>);

/// A process stopped (`SIGSTOP`) while this lives, continued (`SIGCONT`) after.
struct Paused(u32);

impl Paused {
    fn new(pid: u32) -> Self {
        signal(pid, "-STOP");
        Self(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

fn signal(pid: u32, which: &str) {
    let _ = std::process::Command::new("kill")
        .args([which, &pid.to_string()])
        .status();
}

/// One server's phase: warm-up, one-at-a-time series interleaved with the
/// same chats sent to mock-llm directly, then the closed-loop load.
async fn alone(
    client: &reqwest::Client,
    args: &Args,
    mock: &Proc,
    mock_url: &str,
    base: &str,
    key: &'static str,
    pid: u32,
) -> Alone {
    let targets = [
        Target {
            base: mock_url,
            key: None,
            pid: None,
        },
        Target {
            base,
            key: Some(key),
            pid: None,
        },
    ];
    let _ = interleaved(client, &targets, WARM_CHATS, false).await;
    let _ = interleaved(client, &targets, WARM_CHATS / 4, true).await;
    let idle_rss = rss_kib(pid);
    let before = [mock.pid(), pid].map(cpu_time);
    let mut whole = interleaved(client, &targets, args.latency_requests, false)
        .await
        .into_iter();
    let after = [mock.pid(), pid].map(cpu_time);
    let mut streamed = interleaved(client, &targets, args.latency_requests, true)
        .await
        .into_iter();
    let load = throughput(client, base, Some(key), pid, Some(mock.pid()), args).await;
    let (direct_whole, whole) = (
        whole.next().unwrap_or_default().total,
        whole.next().unwrap_or_default().total,
    );
    let (direct_first, first_token) = (
        streamed.next().unwrap_or_default().first,
        streamed.next().unwrap_or_default().first,
    );
    Alone {
        direct_whole,
        direct_first,
        // mock-llm answered both servers' series: the direct chats and the
        // server's.
        mock_cpu: per_request(
            after[0].saturating_sub(before[0]),
            2 * args.latency_requests,
        ),
        whole,
        first_token,
        sequential_cpu: per_request(after[1].saturating_sub(before[1]), args.latency_requests),
        load,
        idle_rss,
    }
}

/// A gateway measured against the runtime.
struct Other {
    /// As the table names it.
    name: &'static str,
    version: String,
    proc: Proc,
    url: String,
    key: &'static str,
}

/// Runs the comparison and prints a table per gateway given.
pub(crate) async fn run(
    args: &Args,
    dir: &Path,
    mock: &Proc,
    mock_url: &str,
    database: &Database,
    client: &reqwest::Client,
) {
    let load_start = load_average();
    let (runtime, runtime_url) = start_runtime(args, dir, mock_url, database, client).await;
    let mut others = Vec::new();
    if let Some(litellm) = &args.litellm {
        let (proc, url) = start_litellm(args, dir, mock_url, litellm, client).await;
        others.push(Other {
            name: "LiteLLM",
            version: format!("LiteLLM proxy {}", litellm_version(litellm)),
            proc,
            url,
            key: LITELLM_KEY,
        });
    }
    if let Some(langdb) = &args.langdb {
        let (proc, url) = start_langdb(args, dir, mock_url, langdb, client).await;
        others.push(Other {
            name: "LangDB",
            version: format!("LangDB AI Gateway {}", langdb_version(langdb)),
            proc,
            url,
            key: LANGDB_KEY,
        });
    }
    // With taskset the pid is taskset's until it execs; it execs at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Each server is measured alone on its CPU, the others stopped (SIGSTOP):
    // pinned to the same CPU, an idle server still wakes up (an event loop's
    // timers) and would add its time to the measured one's chats.
    let pause_others = |except: Option<u32>| -> Vec<Paused> {
        others
            .iter()
            .map(|o| o.proc.pid())
            .chain(std::iter::once(runtime.pid()))
            .filter(|pid| Some(*pid) != except)
            .map(Paused::new)
            .collect()
    };
    let ours = {
        let _paused = pause_others(Some(runtime.pid()));
        alone(
            client,
            args,
            mock,
            mock_url,
            &runtime_url,
            API_KEY,
            runtime.pid(),
        )
        .await
    };
    let mut theirs = Vec::new();
    for other in &others {
        let _paused = pause_others(Some(other.proc.pid()));
        theirs.push(
            alone(
                client,
                args,
                mock,
                mock_url,
                &other.url,
                other.key,
                other.proc.pid(),
            )
            .await,
        );
    }
    let direct_load = {
        let _paused = pause_others(None);
        throughput(client, mock_url, None, mock.pid(), None, args).await
    };
    drop(runtime);
    for (other, theirs) in others.iter().zip(&theirs) {
        print_table(
            args,
            database,
            &load_start,
            other,
            &ours,
            theirs,
            &direct_load,
        );
    }
}

/// The table of the runtime against `other`.
fn print_table(
    args: &Args,
    database: &Database,
    load_start: &str,
    other: &Other,
    ours: &Alone,
    theirs: &Alone,
    direct_load: &Load,
) {
    let them = other.name;
    println!(
        "\n## Switchboard agent runtime vs. {}, both in front of mock-llm (one run)\n",
        other.version
    );
    println!(
        "Both pinned to CPU(s) `{}` on a {}-CPU machine, {them} with one worker (load average over a minute: \
         {load_start} at the start, {} at the end; CPU time taken by the host: {}). The runtime persists every \
         user message and answer to {} before answering; {them} runs without a database and stores nothing. \
         Each is measured with every other server stopped (SIGSTOP), so it has its CPU to itself. One at a time: {} requests per series, each interleaved with the same chat sent to mock-llm directly (the direct column: Switchboard's phase / {them}'s phase). Added: over that phase's direct series. \
         Last column: {them}'s figure ÷ the runtime's (added latency, CPU per chat, memory) or the runtime's ÷ \
         {them}'s (chats/s): how many times better the runtime does (below 1: worse).\n",
        if args.runtime_cpus.is_empty() {
            "any"
        } else {
            &args.runtime_cpus
        },
        machine_cpus(),
        load_average(),
        stolen(),
        database.name(),
        args.latency_requests,
    );
    println!("| figure | direct | Switchboard | {them} | Switchboard added | {them} added | × |");
    println!("|---|---|---|---|---|---|---|");
    for (name, pick) in [
        (
            "chat, non-streaming",
            (|m: &Alone| (&m.direct_whole, &m.whole)) as Pick,
        ),
        ("chat, streaming, time to first token", |m: &Alone| {
            (&m.direct_first, &m.first_token)
        }),
    ] {
        for (p, label) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")] {
            let [(od, o), (td, t)] =
                [ours, theirs].map(|m| (percentile(pick(m).0, p), percentile(pick(m).1, p)));
            let (oa, ta) = (o.saturating_sub(od), t.saturating_sub(td));
            println!(
                "| {name}, {label} | {} / {} ms | {} ms | {} ms | +{} ms | +{} ms | {:.1} |",
                ms(od),
                ms(td),
                ms(o),
                ms(t),
                ms(oa),
                ms(ta),
                times(ta.as_secs_f64(), oa.as_secs_f64()),
            );
        }
    }
    println!(
        "| CPU time per chat, one at a time | {:.0} µs (mock-llm, per answer) | {:.0} µs | {:.0} µs | — | — | {:.1} |",
        micros(ours.mock_cpu),
        micros(ours.sequential_cpu),
        micros(theirs.sequential_cpu),
        times(micros(theirs.sequential_cpu), micros(ours.sequential_cpu)),
    );
    println!(
        "| chats/s at concurrency {} ({} s; failed: {} / {} / {}) | {:.0} | {:.0} | {:.0} | — | — | {:.1} |",
        args.concurrency,
        args.seconds,
        direct_load.failed,
        ours.load.failed,
        theirs.load.failed,
        direct_load.rps,
        ours.load.rps,
        theirs.load.rps,
        times(ours.load.rps, theirs.load.rps),
    );
    println!(
        "| CPU time per chat at that concurrency | {:.0} µs (mock-llm) | {:.0} µs | {:.0} µs | — | — | {:.1} |",
        micros(direct_load.cpu_per_chat),
        micros(ours.load.cpu_per_chat),
        micros(theirs.load.cpu_per_chat),
        times(
            micros(theirs.load.cpu_per_chat),
            micros(ours.load.cpu_per_chat)
        ),
    );
    for (p, label) in [(0.5, "p50"), (0.99, "p99")] {
        let d = percentile(&direct_load.latencies, p);
        let [o, t] = [ours, theirs].map(|m| percentile(&m.load.latencies, p));
        println!(
            "| latency at that concurrency, {label} | {} ms | {} ms | {} ms | — | — | {:.1} |",
            ms(d),
            ms(o),
            ms(t),
            times(t.as_secs_f64(), o.as_secs_f64()),
        );
    }
    println!(
        "| memory idle after warm-up (RSS) | — | {:.1} MiB | {:.1} MiB | — | — | {:.1} |",
        ours.idle_rss as f64 / 1024.0,
        theirs.idle_rss as f64 / 1024.0,
        times(theirs.idle_rss as f64, ours.idle_rss as f64),
    );
    println!(
        "| memory under load (peak RSS) | — | {:.1} MiB | {:.1} MiB | — | — | {:.1} |",
        ours.load.peak_rss as f64 / 1024.0,
        theirs.load.peak_rss as f64 / 1024.0,
        times(theirs.load.peak_rss as f64, ours.load.peak_rss as f64),
    );
}

/// `a ÷ b`, or 0 when `b` is 0.
fn times(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}
