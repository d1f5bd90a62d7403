//! `netpol-agent completion SHELL`: a completion script for bash, zsh, fish
//! (and elvish, PowerShell), generated from the command-line definitions so
//! it always knows every subcommand and flag.
use clap::CommandFactory as _;

use crate::cli::{Cli, CompletionArgs};

pub fn completion(args: &CompletionArgs) -> anyhow::Result<()> {
    print!("{}", script(args.shell));
    Ok(())
}

/// The script for `shell`, completing the binary named `netpol-agent`.
pub fn script(shell: clap_complete::Shell) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "netpol-agent", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use clap_complete::Shell;

    use super::*;

    #[test]
    fn every_shell_knows_the_commands_and_their_flags() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let text = script(shell);
            for word in ["check", "explain", "status", "version", "completion"] {
                assert!(text.contains(word), "{shell}: {word} missing");
            }
            for flag in ["output", "policy-dir", "allow-empty-policy"] {
                // fish spells a long flag `-l NAME`.
                let spelt = match shell {
                    Shell::Fish => format!("-l {flag}"),
                    _ => format!("--{flag}"),
                };
                assert!(text.contains(&spelt), "{shell}: {spelt} missing");
            }
            // The formats -o takes are offered as its values.
            assert!(text.contains("table") && text.contains("yaml"), "{shell}");
        }
    }
}
