//! Writes the CRD YAML for every Switchboard resource into `config/crd` and the API
//! reference into `docs/api.md`; with `--check`, fails when the committed files differ
//! from what the types generate.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut check = false;
    let mut root = PathBuf::from(".");
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!(
                    "usage: crdgen [--check] [REPO_ROOT]\n\
                     writes REPO_ROOT/config/crd/*.yaml and REPO_ROOT/docs/api.md (REPO_ROOT defaults to .)"
                );
                return ExitCode::SUCCESS;
            }
            other => root = PathBuf::from(other),
        }
    }
    match run(&root, check) {
        Ok(stale) if stale.is_empty() => ExitCode::SUCCESS,
        Ok(stale) => {
            eprintln!(
                "crdgen: generated files differ from the committed ones: {}\n\
                 run `make crds` and commit the result",
                stale.join(", ")
            );
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("crdgen: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Writes (or, with `check`, compares) every generated file; returns the stale ones.
fn run(root: &Path, check: bool) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let crds = crds::all_crds();
    let mut files = Vec::new();
    for crd in &crds {
        let path = root.join("config/crd").join(crds::crd_file_name(crd));
        files.push((path, crds::crd_yaml(crd)?));
    }
    files.push((root.join("docs/api.md"), crds::docs::api_reference(&crds)));

    let mut stale = Vec::new();
    for (path, content) in files {
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(content.as_str()) {
                stale.push(path.display().to_string());
            }
        } else {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&path, content).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(stale)
}
