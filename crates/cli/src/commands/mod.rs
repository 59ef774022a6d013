//! The commands that run no network and need more than a call, and what every command shares:
//! worker threads, progress bars, peak memory, the error line.

pub mod build;
pub mod checks;

use std::process::ExitCode;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

/// Sizes the global worker pool (rayon's) to `n` threads when given.
pub fn workers(n: Option<usize>) -> Result<()> {
    if let Some(n) = n {
        rayon::ThreadPoolBuilder::new().num_threads(n.max(1)).build_global().context("starting worker threads")?;
    }
    Ok(())
}

/// Prints what a command made (its report, its files), a line or more.
pub fn say(made: impl std::fmt::Display) -> Result<()> {
    println!("{made}");
    Ok(())
}

/// A progress bar counting `unit`s.
pub fn bar(unit: &str) -> ProgressBar {
    let pb = ProgressBar::new(0);
    let template = format!("{{spinner}} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {unit} {{msg}} (eta {{eta}})");
    pb.set_style(ProgressStyle::with_template(&template).expect("valid template"));
    pb
}

/// A progress bar counting bytes.
pub fn bytes_bar() -> ProgressBar {
    let pb = ProgressBar::new(0);
    let t = "{spinner} [{elapsed_precise}] {bar:40} {bytes}/{total_bytes} {bytes_per_sec} (eta {eta})";
    pb.set_style(ProgressStyle::with_template(t).expect("valid template"));
    pb
}

/// This process's peak resident memory in MiB (`VmHWM`).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// What every `patchtcga` binary does first: a closed output pipe ends the process quietly, as
/// it does `head` and `grep`; and a panic (LibTorch reports failures inside a network's passes,
/// out of memory or a peer lost, as panics) is printed as one error line, not a crash report.
pub fn start() {
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::panic::set_hook(Box::new(|info| {
        let p = info.payload();
        let msg = p.downcast_ref::<String>().map(String::as_str).or_else(|| p.downcast_ref::<&str>().copied());
        eprintln!("error: {}", msg.unwrap_or("internal failure"));
    }));
}

/// The exit status of a command; an error is printed as one line, its context chain without
/// repeating a cause a message already quotes.
pub fn exit_status(done: Result<()>) -> ExitCode {
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = e.to_string();
            for cause in e.chain().skip(1).map(ToString::to_string) {
                if !msg.contains(&cause) {
                    msg = format!("{msg}: {cause}");
                }
            }
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}
