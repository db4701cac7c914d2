//! The `kvscope` binary: parse arguments, run, map errors to an exit code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    tune_malloc();
    quiet_on_broken_pipe();
    let cli = kvscope::cli::Cli::parse();
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| kvscope::cli::run(cli)));
    match run {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            eprintln!("error: {}", kvscope::cli::error_message(&e));
            std::process::ExitCode::from(2)
        }
        // `kvscope … | head`: the reader went away; the output it wanted was written.
        Err(payload) if is_broken_pipe(payload.as_ref()) => std::process::ExitCode::SUCCESS,
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

/// Tunes glibc's malloc. Caps its arenas at one per core. glibc gives threads that
/// allocate at the same time arenas of their own, up to eight per core, and memory
/// freed in one arena serves only the threads attached to it: the catalog's workers,
/// then the merge's parsers and encoder, then the summary each left freed memory the
/// next stage could not reuse, so peak RSS grew with the length of an analysis (a busy
/// 5 × 10⁷-sample fleet peaked at 506–530 MB against 340–390 MB at 10⁷; capped, 409–449
/// MB in the same time).
///
/// Also keeps freed memory for reuse instead of handing it back to the kernel: an
/// analysis allocates and frees columns of a chunk (~0.5 MB each) thousands of times,
/// and glibc served them with fresh `mmap`s or trimmed its heap after each, so every
/// chunk faulted its pages in again (a 10⁶-sample fleet: 85,000–89,000 minor faults and
/// 0.29–0.34 s of system time; with these, 55,000 and 0.23–0.27 s, peak RSS 280 → 290
/// MB). Blocks over 32 MiB (glibc's largest `mmap` threshold) are still mapped.
///
/// Hand-written: `mallopt` is the one knob, and no crate wraps it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cores = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
    // SAFETY: `mallopt` only sets allocator parameters (glibc takes its own locks); it
    // reads and writes no memory of ours.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, cores);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

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
