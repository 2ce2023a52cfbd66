//! End-to-end tests: drive the real `cronfleet` binary and real services.

pub mod chaos;
pub mod checker;
pub mod cluster;
pub mod history;
pub mod proxy;

use std::path::PathBuf;

/// The path of the `cronfleet` binary built from this workspace.
///
/// Cargo only exposes `CARGO_BIN_EXE_*` to tests of the package that owns the binary, so
/// it is found next to the running test: the test executable is
/// `target/<profile>/deps/<test>-<hash>`, and the binary is `target/<profile>/cronfleet`.
/// Building it is left to the caller (the project's test script builds every binary
/// first), as a test cannot safely run `cargo build` while cargo holds the build lock.
///
/// # Panics
///
/// When the binary has not been built.
pub fn cronfleet_binary() -> PathBuf {
    let test_executable = std::env::current_exe().expect("the path of the running test");
    let profile_dir = test_executable
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from target/<profile>/deps");
    let binary = profile_dir.join(format!("cronfleet{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "{} does not exist: run `cargo build -p cronfleet-cli` first (scripts build every binary before testing)",
        binary.display()
    );
    binary
}
