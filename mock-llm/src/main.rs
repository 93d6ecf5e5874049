//! `mock-llm`: the mock LLM upstream as a process, for benchmarks and the demo.
//!
//! Usage: `mock-llm [--listen ADDR]` (or `MOCK_LLM_LISTEN`; default `127.0.0.1:8090`).
//! Prints `listening on ADDR` once ready and stops on Ctrl-C or SIGTERM.

use switchboard_tests::mock_llm::MockLlm;

fn listen_address() -> Result<String, String> {
    let mut args = std::env::args().skip(1);
    let mut listen = std::env::var("MOCK_LLM_LISTEN").unwrap_or_else(|_| "127.0.0.1:8090".into());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?,
            "-h" | "--help" => {
                return Err("usage: mock-llm [--listen ADDR]  (env MOCK_LLM_LISTEN)".into());
            }
            other => match other.strip_prefix("--listen=") {
                Some(value) => listen = value.to_owned(),
                None => return Err(format!("unknown argument {other:?}; try --help")),
            },
        }
    }
    Ok(listen)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let listen = match listen_address() {
        Ok(listen) => listen,
        Err(message) => {
            eprintln!("{message}");
            return std::process::ExitCode::from(2);
        }
    };
    let mock = match MockLlm::start_on(&listen).await {
        Ok(mock) => mock,
        Err(err) => {
            eprintln!("mock-llm: cannot listen on {listen}: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("listening on {}", mock.addr());
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            eprintln!("mock-llm: cannot watch SIGTERM: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    mock.stop().await;
    std::process::ExitCode::SUCCESS
}
