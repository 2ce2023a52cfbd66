//! The `protoc` that etcd-client's build script runs, taken from a registry package
//! (`protoc-bin-vendored`: Google's release binaries with their well-known `.proto`
//! includes) so that a fresh machine needs no system `protoc` and no `libprotobuf-dev`.
//!
//! The scripts build this crate first (it has no other dependency), then export what it
//! prints for the rest of the build:
//!
//! ```sh
//! eval "$(cargo run --locked -q -p cronfleet-protoc)"   # PROTOC=… PROTOC_INCLUDE=…
//! ```
//!
//! `cronfleet-protoc --check DIR FILE…` compiles FILEs (relative to the import root DIR)
//! with exactly that compiler and include directory and nothing else, the way prost-build
//! runs it: `scripts/check-protoc` uses it on etcd-client's own `.proto` files.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("cronfleet-protoc: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<ExitCode, String> {
    let protoc = protoc_bin_vendored::protoc_bin_path().map_err(|e| e.to_string())?;
    let include = protoc_bin_vendored::include_path().map_err(|e| e.to_string())?;
    // The files the etcd protos import; if the package lost them, say so here rather than
    // deep inside a dependency's build script.
    let descriptor = include.join("google/protobuf/descriptor.proto");
    if !protoc.is_file() || !descriptor.is_file() {
        return Err(format!(
            "the vendored protoc is incomplete: expected {} and {}",
            protoc.display(),
            descriptor.display()
        ));
    }
    match args.split_first() {
        None => {
            println!("export PROTOC={}", shell_quoted(&protoc));
            println!("export PROTOC_INCLUDE={}", shell_quoted(&include));
            Ok(ExitCode::SUCCESS)
        }
        Some((flag, rest)) if flag == "--check" => check(&protoc, &include, rest),
        Some((other, _)) => Err(format!(
            "unknown argument {other:?}: expected none (print PROTOC and PROTOC_INCLUDE) \
             or --check DIR FILE…"
        )),
    }
}

/// Compiles `files` under `root` as prost-build does (`-I root`, then `-I PROTOC_INCLUDE`),
/// with an empty environment so nothing installed on the machine can stand in.
fn check(protoc: &PathBuf, include: &PathBuf, args: &[String]) -> Result<ExitCode, String> {
    let Some((root, files)) = args.split_first().filter(|(_, files)| !files.is_empty()) else {
        return Err("--check needs an import root and at least one .proto file".into());
    };
    let out = std::env::temp_dir().join(format!("cronfleet-protoc-check-{}", std::process::id()));
    let status = Command::new(protoc)
        .env_clear()
        .arg("--include_imports")
        .arg("-o")
        .arg(&out)
        .arg("-I")
        .arg(root)
        .arg("-I")
        .arg(include)
        .args(files)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", protoc.display()))?;
    let _ = std::fs::remove_file(&out);
    if status.success() {
        println!(
            "vendored protoc {} compiles {} file(s) under {root} with only its own includes",
            protoc.display(),
            files.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        Err(format!(
            "{} failed on the files under {root}: {status}",
            protoc.display()
        ))
    }
}

fn shell_quoted(path: &std::path::Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}
