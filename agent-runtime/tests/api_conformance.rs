//! The OpenAPI document against the runtime's behaviour: schemathesis (a
//! property-based API fuzzer, pinned in `tests/python/requirements.txt`)
//! generates requests from `/api/openapi.json`, valid and invalid, sends them
//! to the real binary and checks every answer against the document: no server
//! error, only declared status codes, content types, headers and bodies, invalid
//! data refused and valid data accepted. Needs `SWITCHBOARD_PYTHON`: a Python
//! with `schemathesis` installed (the test setup makes `.switchboard/venv`).
//!
//! Bounded: `MAX_EXAMPLES` cases per operation and phase, a fixed seed (set
//! `SCHEMATHESIS_SEED` to try another; the seed is printed), and a hard time
//! limit after which the run is killed and the test fails.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{ADMIN_KEY, API_KEY, RuntimeProcess};
use switchboard_tests::mock_llm::MockLlm;

/// Cases per operation in each generating phase.
const MAX_EXAMPLES: u32 = 10;
/// The seed used unless `SCHEMATHESIS_SEED` names another.
const DEFAULT_SEED: u64 = 20_261_201;
/// The run is killed (and the test fails) after this long.
const HARD_LIMIT: Duration = Duration::from_secs(600);
/// The webhook channel's signing key (schemathesis cannot sign: its messages
/// are refused with 401, which the document declares).
const SIGNING_KEY: &str = "conformance-signing-key";

/// The channels the fuzzer addresses by name: one with every feature, one with
/// none (403s), and a webhook channel.
const CHANNELS: [&str; 3] = ["web", "locked", "hooks"];

/// The runtime under test: a context window wider than any one message the
/// document admits (a schema-valid request is not refused for its length).
fn runtime_config(mock: &MockLlm) -> String {
    format!(
        "agent: {{name: conformance}}\n\
         model: {{provider: openai, name: mock-gpt, baseUrl: \"{}\", apiKeyEnv: UPSTREAM_KEY, timeoutSeconds: 5}}\n\
         database: {{sqlitePath: \"{{dir}}/rt.db\"}}\n\
         context: {{maxTokens: 1000000}}\n\
         defaultChannel: web\n\
         channels:\n\
         - {{name: web, type: web, greeting: \"Hello!\"}}\n\
         - {{name: locked, type: openai, features: {{history: false, search: false, streaming: false}}}}\n\
         - name: hooks\n  type: webhook\n  webhook: {{callbackUrl: \"{}/callback\", signingKeyEnv: HOOK_KEY}}\n",
        mock.openai_base_url(),
        mock.openai_base_url(),
    )
}

/// schemathesis' configuration: channel names drawn from the configured ones
/// (nine times in ten; otherwise anything the document allows); the admin
/// routes called with the admin key (the client key only gets their 401); an
/// invalid body too large to read refused with 413 counts as refused.
fn schemathesis_config() -> String {
    let names: Vec<String> = CHANNELS.iter().map(|c| format!("{c:?}")).collect();
    format!(
        "[dictionaries.channels]\nvalues = [{}]\n\n\
         [parameters]\n\"path.name\" = {{ dictionary = \"channels\", probability = 0.9 }}\n\n\
         [generation]\ndatabase = \"none\"\n\n\
         [checks.negative_data_rejection]\nexpected-statuses = [\"400\", \"401\", \"403\", \"404\", \
         \"405\", \"406\", \"409\", \"413\", \"415\", \"422\", \"428\", \"429\", \"5xx\"]\n\n\
         [[operations]]\ninclude-path-regex = \"/api/admin/\"\n\
         headers = {{ Authorization = \"Bearer {ADMIN_KEY}\" }}\n",
        names.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_behaves_as_its_openapi_document_says() {
    let python = std::env::var("SWITCHBOARD_PYTHON").unwrap_or_else(|_| {
        panic!(
            "SWITCHBOARD_PYTHON is not set: point it at a Python with `schemathesis` installed, \
             e.g. hack/python-env.sh && export SWITCHBOARD_PYTHON=$PWD/.switchboard/venv/bin/python"
        )
    });
    let seed = std::env::var("SCHEMATHESIS_SEED")
        .ok()
        .map(|s| s.parse::<u64>().expect("SCHEMATHESIS_SEED is a number"))
        .unwrap_or(DEFAULT_SEED);
    let mock = MockLlm::start().await.expect("mock starts");
    let runtime = RuntimeProcess::spawn(
        &runtime_config(&mock),
        &[("UPSTREAM_KEY", "sk-upstream"), ("HOOK_KEY", SIGNING_KEY)],
    )
    .await;
    let config_path = runtime.dir.0.join("schemathesis.toml");
    std::fs::write(&config_path, schemathesis_config()).expect("config written");
    let junit = runtime.dir.0.join("junit.xml");

    let started = Instant::now();
    let child = tokio::process::Command::new(&python)
        .args(["-m", "schemathesis.cli", "--no-color", "--config-file"])
        .arg(&config_path)
        .arg("run")
        .arg(format!("{}/api/openapi.json", runtime.base))
        .args([
            "--header",
            &format!("Authorization: Bearer {API_KEY}"),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance,\
             negative_data_rejection,positive_data_acceptance,missing_required_header,\
             ignored_auth,unsupported_method",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            &MAX_EXAMPLES.to_string(),
            "--seed",
            &seed.to_string(),
            // One worker: Hypothesis' lambda descriptions are not thread-safe on
            // every Python (a `SystemError` from `ast.parse` under two workers).
            "--workers",
            "1",
            // Generation speed depends on the machine's load, not on the API.
            "--suppress-health-check",
            "too_slow",
            "--request-timeout",
            "20",
            "--report",
            "junit",
            "--report-junit-path",
        ])
        .arg(&junit)
        .current_dir(&runtime.dir.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let output = tokio::time::timeout(HARD_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "schemathesis ran longer than {HARD_LIMIT:?} (seed {seed}); runtime log:\n{}",
                runtime.log()
            )
        })
        .expect("schemathesis ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!(
        "schemathesis (seed {seed}, {MAX_EXAMPLES} examples) took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        output.status.success(),
        "the API and its document disagree (schemathesis {}, seed {seed}):\n{stdout}\n{stderr}",
        output.status
    );
    // The closing line counts failures and errors ("22 failures, 22 errors, 2
    // warnings in 94.92s"); a clean run has neither.
    let verdict = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('=') && l.contains(" in "))
        .unwrap_or_default();
    assert!(
        !verdict.is_empty() && !verdict.contains("failure") && !verdict.contains("error"),
        "schemathesis' run was not clean ({verdict:?}):\n{stdout}\n{stderr}"
    );
    // "Selected: 43/43" then "Tested: 43": every operation of the document was run.
    let count_after = |label: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|rest| rest.trim().rsplit('/').next())
            .and_then(|n| n.trim().parse::<usize>().ok())
    };
    let (total, tested) = (count_after("Selected:"), count_after("Tested:"));
    assert!(
        total.is_some_and(|t| t > 0) && tested == total,
        "not every operation was tested ({tested:?} of {total:?}):\n{stdout}"
    );
    drop(runtime);
    mock.stop().await;
}
