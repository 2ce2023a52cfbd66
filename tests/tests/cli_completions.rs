//! `cronfleet completions SHELL`: the real binary prints a completion script for each
//! shell, and bash's knows every top-level command.

use std::process::Command;

use cronfleet_e2e::cronfleet_binary;

fn completions(shell: &str) -> (Option<i32>, String, String) {
    let output = Command::new(cronfleet_binary())
        .args(["completions", shell])
        .output()
        .expect("run cronfleet");
    (
        output.status.code(),
        String::from_utf8(output.stdout).expect("utf-8 script"),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn each_shell_gets_a_script() {
    for (shell, marker) in [
        ("bash", "complete -F _cronfleet"),
        ("zsh", "#compdef cronfleet"),
        ("fish", "complete -c cronfleet"),
        ("elvish", "cronfleet"),
        ("powershell", "cronfleet"),
    ] {
        let (status, script, stderr) = completions(shell);
        assert_eq!(status, Some(0), "{shell}: {stderr}");
        assert!(stderr.is_empty(), "{shell}: {stderr}");
        assert!(script.len() > 1000, "{shell}: {} bytes", script.len());
        assert!(script.contains(marker), "{shell} lacks {marker:?}");
    }
}

#[test]
fn the_bash_script_knows_every_command_and_their_flags() {
    let (_, script, _) = completions("bash");
    for command in [
        "dev",
        "coordinator",
        "worker",
        "job",
        "apply",
        "runs",
        "run",
        "workers",
        "status",
        "schedule",
        "completions",
    ] {
        assert!(
            script.contains(&format!("cronfleet__{command}"))
                || script.contains(&format!(" {command} ")),
            "bash completions lack the {command} command"
        );
    }
    for flag in [
        "--dry-run",
        "--prune",
        "--manager",
        "--handler",
        "--catch-up-window",
    ] {
        assert!(script.contains(flag), "bash completions lack {flag}");
    }
}

#[test]
fn an_unknown_shell_is_refused_with_the_valid_ones() {
    let (status, script, stderr) = completions("tcsh");
    assert_eq!(status, Some(2));
    assert!(script.is_empty());
    assert!(stderr.contains("invalid value 'tcsh'"), "{stderr}");
    assert!(
        stderr.contains("bash, elvish, fish, powershell, zsh"),
        "{stderr}"
    );
}
