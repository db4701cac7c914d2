//! The `kvscope` binary: parse arguments, run, map errors to an exit code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = kvscope_cli::Cli::parse();
    match kvscope_cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

#[path = "cli/mod.rs"]
mod kvscope_cli;
