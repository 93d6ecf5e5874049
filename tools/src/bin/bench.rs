//! `bench` (run by `make bench`): the agent runtime against `mock-llm`, compared with
//! calling `mock-llm` directly, in one run. Prints a table of added latency (p50/p99,
//! non-streaming and time to first token when streaming), requests per second at a
//! fixed concurrency with every message persisted to Postgres, memory idle and under
//! load, and memory per idle SSE stream. Figures are reported, never asserted.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use tokio::process::{Child, Command};

#[derive(Parser)]
#[command(about = "Benchmark the agent runtime against the mock LLM")]
struct Args {
    /// The agent-runtime binary.
    #[arg(long)]
    runtime: PathBuf,
    /// The mock-llm binary.
    #[arg(long)]
    mock: PathBuf,
    /// A Postgres URL of an empty database for the runtime.
    #[arg(long, env = "BENCH_DATABASE_URL")]
    database_url: String,
    /// Sequential requests per latency series.
    #[arg(long, default_value_t = 2000)]
    latency_requests: usize,
    /// Concurrent clients in the throughput run.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds of the throughput run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Idle SSE stream counts to measure memory at, one HTTP/1.1 connection per
    /// stream (each stream costs the runtime two sockets: the client's and the
    /// upstream's).
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    streams: Vec<usize>,
    /// Idle SSE stream counts to measure memory at over HTTP/2 (h2c), 100
    /// streams per client connection (one socket per stream: the upstream's).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    h2_streams: Vec<usize>,
    /// CPU list the runtime is pinned to (taskset), e.g. "0"; empty for none.
    #[arg(long, default_value = "0")]
    runtime_cpus: String,
}

const API_KEY: &str = "bench-key";

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

struct Proc {
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id().unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// CPU time (user + system) a process has used, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command (which may hold spaces) start at ") ".
            let rest = s.rsplit_once(") ")?.1.to_owned();
            let fields: Vec<&str> = rest.split(' ').collect();
            // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command.
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// Resident memory of a process in KiB, from /proc.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

async fn wait_http(client: &reqwest::Client, url: &str) {
    for _ in 0..300 {
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not come up");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn chat_body(text: &str, stream: bool, user: &str) -> serde_json::Value {
    serde_json::json!({
        "model": "bench",
        "stream": stream,
        "user": user,
        "messages": [{ "role": "user", "content": text }],
    })
}

/// One request; returns (total time, time to first body chunk).
async fn timed(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    body: &serde_json::Value,
) -> (Duration, Duration) {
    let start = Instant::now();
    let mut req = client.post(url).json(body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.expect("request sent");
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    let mut stream = resp.bytes_stream();
    let mut first = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("body chunk");
        if first.is_none() && !chunk.is_empty() {
            first = Some(start.elapsed());
        }
    }
    let total = start.elapsed();
    (total, first.unwrap_or(total))
}

struct Series {
    direct: Vec<Duration>,
    runtime: Vec<Duration>,
}

/// Interleaves direct and through-the-runtime requests so drift hits both alike.
async fn latency_series(
    client: &reqwest::Client,
    mock: &str,
    runtime: &str,
    n: usize,
    stream: bool,
) -> (Series, Series) {
    let mut total = Series {
        direct: vec![],
        runtime: vec![],
    };
    let mut ttft = Series {
        direct: vec![],
        runtime: vec![],
    };
    for i in 0..n {
        let body = chat_body(&format!("latency probe {i}"), stream, "bench-latency");
        let (t, f) = timed(client, &format!("{mock}/v1/chat/completions"), None, &body).await;
        total.direct.push(t);
        ttft.direct.push(f);
        let (t, f) = timed(
            client,
            &format!("{runtime}/v1/chat/completions"),
            Some(API_KEY),
            &body,
        )
        .await;
        total.runtime.push(t);
        ttft.runtime.push(f);
    }
    for s in [&mut total, &mut ttft] {
        s.direct.sort();
        s.runtime.sort();
    }
    (total, ttft)
}

fn row(name: &str, s: &Series) {
    let (d50, d99) = (percentile(&s.direct, 0.5), percentile(&s.direct, 0.99));
    let (r50, r99) = (percentile(&s.runtime, 0.5), percentile(&s.runtime, 0.99));
    println!(
        "| {name} | {} / {} | {} / {} | {} / {} |",
        ms(d50),
        ms(d99),
        ms(r50),
        ms(r99),
        ms(r50.saturating_sub(d50)),
        ms(r99.saturating_sub(d99)),
    );
}

/// Requests per second through the runtime at fixed concurrency; samples RSS.
async fn throughput(
    client: &reqwest::Client,
    runtime: &str,
    pid: u32,
    args: &Args,
) -> (f64, u64, u64, Duration) {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for worker in 0..args.concurrency {
        let (client, url) = (client.clone(), format!("{runtime}/v1/chat/completions"));
        let (done, failed) = (done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < deadline {
                let body = chat_body(
                    &format!("load {worker} {i}"),
                    false,
                    &format!("bench-user-{worker}"),
                );
                i += 1;
                let ok = client
                    .post(&url)
                    .bearer_auth(API_KEY)
                    .json(&body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok { &done } else { &failed }.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    let cpu_start = cpu_time(pid);
    let mut peak = 0;
    while Instant::now() < deadline {
        peak = peak.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_time(pid).saturating_sub(cpu_start);
    let done = done.load(Ordering::Relaxed);
    (
        done as f64 / secs,
        failed.load(Ordering::Relaxed),
        peak,
        cpu.checked_div(u32::try_from(done).unwrap_or(u32::MAX).max(1))
            .unwrap_or_default(),
    )
}

/// Opens `n` streaming chats whose upstream sends its first chunk and then nothing
/// more (the runtime has relayed it, so the stream is open and idle), and returns
/// the runtime's RSS once all are open, then closes them.
async fn idle_streams(runtime: &str, pid: u32, n: usize) -> (u64, usize) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let url = format!("{runtime}/v1/chat/completions");
    hold_idle_streams(pid, n, move |i| {
        let request = client.post(&url).bearer_auth(API_KEY).json(&chat_body(
            &format!("idle {i} [[mock: fault=hang; after=1]]"),
            true,
            &format!("idle-{i}"),
        ));
        async move {
            let response = request.send().await.ok()?;
            if !response.status().is_success() {
                return None;
            }
            let mut stream = response.bytes_stream();
            // Open once the first chunk (the role delta) has arrived.
            stream.next().await?.ok()?;
            Some(Box::new(stream) as Box<dyn Send>)
        }
    })
    .await
}

/// Opens stream `i` with `open(i)` for `i` in `0..n` (a few hundred at a time),
/// holding each open stream; returns the runtime's RSS once all are open (or
/// after 120 s) and how many are, then closes them.
async fn hold_idle_streams<F, Fut>(pid: u32, n: usize, open: F) -> (u64, usize)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Option<Box<dyn Send>>> + Send + 'static,
{
    let opened = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for i in 0..n {
        let stream = open(i);
        let (opened, mut stop) = (opened.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            if let Some(stream) = stream.await {
                opened.fetch_add(1, Ordering::Relaxed);
                let _ = stop.changed().await;
                drop(stream);
            }
        }));
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while (opened.load(Ordering::Relaxed) as usize) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = rss_kib(pid);
    let open = opened.load(Ordering::Relaxed) as usize;
    let _ = stop_tx.send(true);
    for t in tasks {
        t.abort();
    }
    (rss, open)
}

/// Like [`idle_streams`], over HTTP/2 without TLS (prior knowledge): `n`
/// streams multiplexed 100 to a connection.
async fn idle_h2_streams(runtime: &str, pid: u32, n: usize) -> (u64, usize) {
    use http_body_util::BodyExt as _;
    type H2Client = hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >;
    let connections = n.div_ceil(100).max(1);
    let clients: Vec<H2Client> = (0..connections)
        .map(|_| {
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(true)
                .build_http()
        })
        .collect();
    let url = format!("{runtime}/v1/chat/completions");
    hold_idle_streams(pid, n, move |i| {
        let client = clients[i % connections].clone();
        let body = chat_body(
            &format!("idle2 {i} [[mock: fault=hang; after=1]]"),
            true,
            &format!("idle2-{i}"),
        );
        let request = hyper::Request::post(&url)
            .header("authorization", format!("Bearer {API_KEY}"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                serde_json::to_vec(&body).expect("json"),
            )))
            .expect("request");
        async move {
            let response = client.request(request).await.ok()?;
            if !response.status().is_success() {
                return None;
            }
            let mut body = response.into_body();
            body.frame().await?.ok()?;
            Some(Box::new(body) as Box<dyn Send>)
        }
    })
    .await
}

/// Starts the runtime (pinned per `--runtime-cpus`) on a free port; waits until ready.
async fn start_runtime(
    args: &Args,
    dir: &std::path::Path,
    mock_url: &str,
    client: &reqwest::Client,
) -> (Proc, String) {
    let port = free_port();
    let runtime_url = format!("http://127.0.0.1:{port}");
    let config = dir.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "agent:\n  name: bench\nmodel:\n  provider: openai\n  name: bench-model\n  baseUrl: {mock_url}/v1\n\
             database:\n  urlEnv: DATABASE_URL\nserver:\n  listen: 127.0.0.1:{port}\n\
             limits:\n  upstreamConcurrency: 20000\n  upstreamQueue: 100\n"
        ),
    )
    .expect("config written");
    let mut cmd = if args.runtime_cpus.is_empty() {
        Command::new(&args.runtime)
    } else {
        let mut c = Command::new("taskset");
        c.args(["-c", &args.runtime_cpus]).arg(&args.runtime);
        c
    };
    let runtime = Proc {
        child: cmd
            .args(["--config", &config.display().to_string()])
            .env("SWITCHBOARD_API_KEY", API_KEY)
            .env("DATABASE_URL", &args.database_url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("agent-runtime starts"),
    };
    wait_http(client, &format!("{runtime_url}/readyz")).await;
    // With taskset the pid is taskset's until it execs; it execs at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    (runtime, runtime_url)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let client = reqwest::Client::new();

    let mock_port = free_port();
    let mock_url = format!("http://127.0.0.1:{mock_port}");
    let _mock = Proc {
        child: Command::new(&args.mock)
            .args(["--listen", &format!("127.0.0.1:{mock_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("mock-llm starts"),
    };
    wait_http(&client, &format!("{mock_url}/healthz")).await;

    let dir = std::env::temp_dir().join(format!("switchboard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let (runtime, runtime_url) = start_runtime(&args, &dir, &mock_url, &client).await;
    let pid = runtime.pid();
    let idle_rss = rss_kib(pid);

    // Warm both paths (connections, prepared statements, tokenizer tables).
    let _ = latency_series(&client, &mock_url, &runtime_url, 50, false).await;

    let (plain, _) = latency_series(
        &client,
        &mock_url,
        &runtime_url,
        args.latency_requests,
        false,
    )
    .await;
    let (_, ttft) = latency_series(
        &client,
        &mock_url,
        &runtime_url,
        args.latency_requests,
        true,
    )
    .await;
    let (rps, failed, peak_rss, cpu_per_request) =
        throughput(&client, &runtime_url, pid, &args).await;

    let mut stream_rows = Vec::new();
    let runs = args
        .streams
        .iter()
        .map(|&n| (n, "HTTP/1.1"))
        .chain(args.h2_streams.iter().map(|&n| (n, "HTTP/2")));
    drop(runtime);
    for (n, protocol) in runs {
        // A fresh runtime per row: memory a process has freed stays in its
        // allocator and would hide what the next row costs.
        let (runtime, runtime_url) = start_runtime(&args, &dir, &mock_url, &client).await;
        let pid = runtime.pid();
        let _ = latency_series(&client, &mock_url, &runtime_url, 20, true).await;
        let before = rss_kib(pid);
        let (rss, open) = if protocol == "HTTP/2" {
            idle_h2_streams(&runtime_url, pid, n).await
        } else {
            idle_streams(&runtime_url, pid, n).await
        };
        drop(runtime);
        let per = if open > 0 {
            (rss.saturating_sub(before) as f64) / open as f64
        } else {
            0.0
        };
        stream_rows.push((n, protocol, open, before, rss, per));
        // Let the mock drop the closed upstream connections before the next row.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    println!("\n## Switchboard agent runtime vs. mock-llm directly (one run)\n");
    println!(
        "Runtime pinned to CPU(s) `{}`; every request through the runtime persists its user and assistant \
         messages to Postgres. Latency: {} sequential requests per series, interleaved.\n",
        if args.runtime_cpus.is_empty() {
            "any"
        } else {
            &args.runtime_cpus
        },
        args.latency_requests
    );
    println!("| series | direct p50 / p99 (ms) | runtime p50 / p99 (ms) | added p50 / p99 (ms) |");
    println!("|---|---|---|---|");
    row("chat, non-streaming (total)", &plain);
    row("chat, streaming (time to first token)", &ttft);
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| requests/s at concurrency {} ({} s, persisted) | {rps:.0} |",
        args.concurrency, args.seconds
    );
    println!("| failed requests in that run | {failed} |");
    println!(
        "| runtime CPU time per request in that run (user + system) | {} µs (one core's worth: {:.0} requests/s) |",
        cpu_per_request.as_micros(),
        if cpu_per_request.is_zero() {
            0.0
        } else {
            1.0 / cpu_per_request.as_secs_f64()
        }
    );
    println!(
        "| memory idle (RSS) | {:.1} MiB |",
        idle_rss as f64 / 1024.0
    );
    println!(
        "| memory under load (peak RSS) | {:.1} MiB |",
        peak_rss as f64 / 1024.0
    );
    for (n, protocol, open, before, rss, per) in stream_rows {
        println!(
            "| memory per idle SSE stream at {n}, {protocol} ({open} open; RSS {:.1} → {:.1} MiB) | {per:.1} KiB |",
            before as f64 / 1024.0,
            rss as f64 / 1024.0
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
