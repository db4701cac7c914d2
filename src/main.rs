//! The `kvscope` binary: parse arguments, run, map errors to an exit code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    quiet_on_broken_pipe();
    let cli = kvscope::cli::Cli::parse();
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| kvscope::cli::run(cli)));
    match run {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
        // `kvscope … | head`: the reader went away; the output it wanted was written.
        Err(payload) if is_broken_pipe(payload.as_ref()) => std::process::ExitCode::SUCCESS,
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

/// `print!` panics when stdout is a closed pipe (Rust ignores SIGPIPE). Hand-written
/// because every command prints through `print!`: the hook stays silent for that one
/// panic and [`main`] turns it into a quiet exit 0; any other panic is reported as usual.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !is_broken_pipe(info.payload()) {
            default(info);
        }
    }));
}

fn is_broken_pipe(payload: &(dyn std::any::Any + Send)) -> bool {
    let msg = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("");
    msg.contains("failed printing to stdout") && msg.contains("Broken pipe")
}
