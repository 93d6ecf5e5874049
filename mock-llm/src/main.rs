//! `mock-llm`: the mock LLM upstream as a process, for benchmarks and the demo.
//!
//! Usage: `mock-llm [--listen ADDR]` (or `MOCK_LLM_LISTEN`; default `127.0.0.1:8090`).
//! Prints `listening on ADDR` once ready and stops on Ctrl-C or SIGTERM.

use clap::Parser;
use mock_llm::MockLlm;

/// The mock LLM upstream (OpenAI Chat Completions and Anthropic Messages).
#[derive(Parser)]
#[command(name = "mock-llm")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "MOCK_LLM_LISTEN", default_value = "127.0.0.1:8090")]
    listen: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let Args { listen } = Args::parse();
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
