//! The commands that run no network, one file each, and what every command shares: worker
//! threads, progress bars, the dataset layout option, how slides are opened, atomic writes,
//! the error line.

pub mod build;
pub mod extract;
pub mod info;
pub mod regions;
pub mod report;
pub mod slide_labels;
pub mod slide_patches;
pub mod split;
pub mod stats;
pub mod verify;
pub mod verify_layout;

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use patchtcga_dataset::{DatasetKind, Share};
use patchtcga_launch::Node;
use patchtcga_slide::{Reader, SlideOptions, DEFAULT_TILE_CACHE_MB};

/// How the commands that read slides open them.
#[derive(Args, Clone, Copy)]
pub struct SlideArgs {
    /// Level-0 µm/px for slides whose metadata has none (or is wrong).
    #[arg(long)]
    pub mpp_override: Option<f64>,
    /// Which reader serves the slides: auto (patchtcga's own for Aperio SVS and tiled TIFF,
    /// OpenSlide for the rest), native or openslide.
    #[arg(long, default_value_t = Reader::Auto)]
    pub reader: Reader,
    /// Decoded tiles the native reader keeps per open slide, in MiB.
    #[arg(long, default_value_t = DEFAULT_TILE_CACHE_MB)]
    pub tile_cache_mb: u64,
}

impl SlideArgs {
    /// The slide crate's options.
    pub fn options(&self) -> SlideOptions {
        SlideOptions { mpp_override: self.mpp_override, reader: self.reader, tile_cache_mb: self.tile_cache_mb }
    }
}

/// Where a job's processes run, as torchrun's options say it: processes on this node, nodes,
/// this node's index. Training adds its rendezvous to them; a job over a slide list (`build`,
/// `embed --slides`) needs none: every rank takes its [`share`](Self::share) of the list and
/// writes into the same folder (a shared filesystem across nodes).
#[derive(Args)]
pub struct LaunchArgs {
    /// Processes on this node (one per GPU for networks); more than 1 starts them and waits.
    #[arg(long, default_value_t = 1)]
    pub nproc_per_node: usize,
    /// Nodes of the job.
    #[arg(long, default_value_t = 1)]
    pub nnodes: usize,
    /// This node's index.
    #[arg(long, default_value_t = 0)]
    pub node_rank: usize,
}

impl LaunchArgs {
    /// The launch crate's node.
    pub fn node(&self) -> Node {
        Node { nproc_per_node: self.nproc_per_node, nnodes: self.nnodes, node_rank: self.node_rank }
    }

    /// This process's share of a list ([`Node::share`]).
    pub fn share(&self) -> Result<Option<Share>> {
        Ok(self.node().share()?.map(|(rank, world)| Share { rank, world }))
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Layout {
    Ptcga200,
    Pcam200,
    Segpanda200,
}

impl Layout {
    fn kind(self) -> DatasetKind {
        match self {
            Layout::Ptcga200 => DatasetKind::Ptcga200,
            Layout::Pcam200 => DatasetKind::Pcam200,
            Layout::Segpanda200 => DatasetKind::SegPanda200,
        }
    }
}

pub fn workers(n: Option<usize>) -> Result<()> {
    if let Some(n) = n {
        rayon::ThreadPoolBuilder::new().num_threads(n.max(1)).build_global().context("starting worker threads")?;
    }
    Ok(())
}

pub fn bar(unit: &str) -> ProgressBar {
    let pb = ProgressBar::new(0);
    let template = format!("{{spinner}} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {unit} {{msg}} (eta {{eta}})");
    pb.set_style(ProgressStyle::with_template(&template).expect("valid template"));
    pb
}

pub fn bytes_bar() -> ProgressBar {
    let pb = ProgressBar::new(0);
    let t = "{spinner} [{elapsed_precise}] {bar:40} {bytes}/{total_bytes} {bytes_per_sec} (eta {eta})";
    pb.set_style(ProgressStyle::with_template(t).expect("valid template"));
    pb
}

/// Writes `path` atomically: `write` makes the file at a temporary path beside it, which is then
/// renamed over it.
pub fn write_file(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    patchtcga_atomic::write_with(path, write, anyhow::Error::from)
        .with_context(|| format!("{}: cannot write", path.display()))
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
