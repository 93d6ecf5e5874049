//! The official `openai` Python SDK as a real client (script:
//! `tests/python/openai_sdk_check.py`). Needs `SWITCHBOARD_PYTHON`: a Python
//! with `openai` installed (the test setup makes `.switchboard/venv`).

mod common;

use std::process::Stdio;

use common::{API_KEY, Db, Harness};

async fn openai_python_sdk_works_against_the_runtime(db: Db) {
    let python = std::env::var("SWITCHBOARD_PYTHON").unwrap_or_else(|_| {
        panic!(
            "SWITCHBOARD_PYTHON is not set: point it at a Python with the `openai` package, e.g. \
             python3 -m venv .switchboard/venv && .switchboard/venv/bin/pip install openai && \
             export SWITCHBOARD_PYTHON=$PWD/.switchboard/venv/bin/python"
        )
    });
    let h = Harness::start(db).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/python/openai_sdk_check.py"
    );
    let output = tokio::process::Command::new(&python)
        .arg(script)
        .env("SWITCHBOARD_BASE_URL", h.url("/v1"))
        .env("SWITCHBOARD_API_KEY", API_KEY)
        .env("SWITCHBOARD_USER", "sdk-user")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "SDK check failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

on_both_databases!(openai_python_sdk_works_against_the_runtime);
