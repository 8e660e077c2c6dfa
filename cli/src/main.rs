//! `kafka-identity`: the filter's identity, token and configuration code on the command line.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod config_check;
mod explain;
mod keygen;
mod token;

/// The filter's own identity, token and configuration code, for checking and debugging.
#[derive(Parser)]
#[command(name = "kafka-identity", version, propagate_version = true)]
#[command(
    after_help = "Exit status: 0 success; 1 usage, file or configuration error; \
explain and token: 2 no principal for the certificate; config check: 2 configuration refused."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Explain(explain::Args),
    Token(token::Args),
    Keygen(keygen::Args),
    /// Filter configuration commands.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Prints a shell completion script (e.g. `kafka-identity completions bash > /etc/bash_completion.d/kafka-identity`).
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    Check(config_check::Args),
}

/// The shells `completions` writes scripts for.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // --help and --version go to stdout with exit 0; every usage error exits 1 (the
            // documented code for usage errors; clap's own default would be 2, which our commands
            // use for "no principal" / "configuration refused").
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Explain(args) => explain::run_command(&args),
        Command::Token(args) => token::run_command(&args),
        Command::Keygen(args) => keygen::run_command(&args),
        Command::Config(ConfigCommand::Check(args)) => config_check::run_command(&args),
        Command::Completions { shell } => {
            let shell = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "kafka-identity",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
    }
}
