//! What every training command (`pretrain`, `finetune`) takes: its config, overrides, resume,
//! and how it spreads over processes: this node's ranks started here, or this process joining
//! the run it was started for.

use std::path::PathBuf;

use patchtcga_collective::ProcessGroup;
use patchtcga_launch::Node;

use crate::device::device;
use crate::{Config, LearnError, RunContext};

/// What every training command takes: its config, overrides, resume, and how it spreads over
/// processes.
#[derive(clap::Args)]
pub struct RunFlags {
    /// Run config (TOML with the release's keys), e.g. configs/supervised_resnet50_ptcga200.toml
    /// or configs/pcam200_resnet50.toml.
    #[arg(long)]
    pub config: PathBuf,
    /// Override a key: `--set epochs=1 --set lr=0.1` (values as in TOML); `--set fine_tune=true`
    /// for a linear probe.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Continue from the run folder's latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub dist: DistFlags,
}

impl RunFlags {
    /// The run's config (the user's overrides, then `extra`), with this process in its place in
    /// a distributed run: [`Started::Here`] to train in this process, or [`Started::Ranks`] when
    /// it started this node's ranks and they are done.
    pub fn start(&self, extra: &[String]) -> Result<Started, LearnError> {
        let config = Config::load(Some(&self.config), &[self.set.as_slice(), extra].concat())?;
        if self.dist.spawn(&config)? {
            return Ok(Started::Ranks { run_dir: config.run_dir() });
        }
        let group = self.dist.join(&config)?;
        let context = RunContext::new(&config, group)?;
        Ok(Started::Here(Box::new(config), context))
    }
}

/// What `patchtcga finetune` takes: a training command's flags and the initial weights.
#[derive(clap::Args)]
pub struct FinetuneFlags {
    #[command(flatten)]
    pub run: RunFlags,
    /// Initial backbone weights: a pretraining run's model.safetensors, any .pth (ImageNet
    /// torchvision/timm, MoCo, DINO, MAE, …), or `none` for random weights (default: the
    /// config's `pretrained`).
    #[arg(long)]
    pub init: Option<String>,
}

impl FinetuneFlags {
    /// As [`RunFlags::start`], with `pretrained` set by `--init`.
    pub fn start(&self) -> Result<Started, LearnError> {
        let init = match self.init.as_deref() {
            Some("none") => vec!["pretrained=\"\"".to_owned()],
            Some(path) if !std::path::Path::new(path).is_file() => {
                return Err(LearnError::Config(format!("--init {path}: no such file (a .pth/.safetensors, or `none`)")))
            }
            Some(path) => vec![format!("pretrained={path:?}")],
            None => Vec::new(),
        };
        self.run.start(&init)
    }
}

/// Where a training command's work happens.
pub enum Started {
    /// In this process, with this config, where the process stands.
    Here(Box<Config>, RunContext),
    /// In the ranks this process started, now done, writing into `run_dir`.
    Ranks { run_dir: PathBuf },
}

/// How a training spreads over processes (torchrun's options; a process started with torchrun's
/// environment — `RANK`, `WORLD_SIZE`, … — or by `srun` as a task of a SLURM job step joins that
/// run instead).
#[derive(clap::Args)]
pub struct DistFlags {
    /// Processes per node (one per GPU), nodes, this node's index.
    #[command(flatten)]
    pub node: Node,
    /// Rendezvous address (node 0).
    #[arg(long, default_value = "127.0.0.1")]
    pub master_addr: String,
    #[arg(long, default_value_t = 29500)]
    pub master_port: u16,
    /// Seconds to wait for peers at the rendezvous and in each collective.
    #[arg(long, default_value_t = 1800)]
    pub dist_timeout: u64,
}

impl DistFlags {
    /// The launches of this node's processes: from the options, or from the config's `hosts`
    /// and `dist_url` (the release's way).
    pub fn launches(&self, config: &Config) -> Result<Vec<patchtcga_collective::Launch>, LearnError> {
        let node = self.node;
        Ok(if !config.hosts.is_empty() && self.node.nnodes == 1 {
            node.launches_from_hosts(&config.hosts, &config.dist_url)?
        } else {
            node.launches(&self.master_addr, self.master_port)?
        })
    }

    /// Starts this node's processes (this program again, with torchrun's environment) and waits
    /// for them; `false` when this process is to train itself.
    pub fn spawn(&self, config: &Config) -> Result<bool, LearnError> {
        if patchtcga_collective::Launch::from_env()?.is_some() {
            return Ok(false);
        }
        let launches = self.launches(config)?;
        if launches.len() == 1 && launches[0].world == 1 {
            return Ok(false);
        }
        backend(config)?;
        patchtcga_collective::run_node(&launches, patchtcga_collective::OnFailure::StopOthers)?;
        Ok(true)
    }

    /// Joins the run this process belongs to, if any: its process group.
    pub fn join(&self, config: &Config) -> Result<Option<&'static ProcessGroup>, LearnError> {
        if patchtcga_collective::Launch::from_env()?.is_none() {
            return Ok(None);
        }
        let timeout = std::time::Duration::from_secs(self.dist_timeout);
        Ok(patchtcga_collective::init_from_env(timeout, backend(config)?)?)
    }
}

/// The config's `dist_backend` for the GPU its device gives this process.
pub fn backend(config: &Config) -> Result<patchtcga_collective::Backend, LearnError> {
    let gpu = match device(config.device)? {
        tch::Device::Cuda(i) => Some(i),
        _ => None,
    };
    Ok(patchtcga_collective::Backend::choose(config.dist_backend.as_str(), gpu)?)
}
