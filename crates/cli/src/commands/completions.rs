//! `cronfleet completions SHELL`: a shell completion script for every command and flag,
//! generated from the same clap definitions the binary parses with.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::output;

/// Print a completion script for a shell (bash, zsh, fish, elvish or powershell).
#[derive(Debug, Args)]
#[command(after_help = COMPLETIONS_EXAMPLES)]
pub struct CompletionsCommand {
    /// The shell the script is for.
    #[arg(value_enum, value_name = "SHELL")]
    shell: Shell,
}

const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  source <(cronfleet completions bash)                               # this bash session
  cronfleet completions bash > ~/.local/share/bash-completion/completions/cronfleet
  cronfleet completions zsh > \"${fpath[1]}/_cronfleet\"
  cronfleet completions fish > ~/.config/fish/completions/cronfleet.fish";

impl CompletionsCommand {
    pub fn run(self) -> anyhow::Result<()> {
        output::print(&script(self.shell)?)
    }
}

/// The completion script for `shell`.
pub fn script(shell: Shell) -> anyhow::Result<String> {
    let mut command = crate::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "cronfleet", &mut script);
    Ok(String::from_utf8(script)?)
}
