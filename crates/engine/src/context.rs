//! Where a run stands, found once at the edge (the command that starts it) and handed down: the
//! device it drives, the process group it joined, its rank, and LibTorch seeded with its seed.

use patchtcga_collective::ProcessGroup;
use tch::Device;

use crate::device::device;
use crate::{Config, LearnError};

/// The device and process group of a run, made by [`RunContext::new`] (which seeds LibTorch).
#[derive(Clone, Copy)]
pub struct RunContext {
    /// What the run's networks run on (checked against the GPUs this process sees).
    pub device: Device,
    /// The distributed run this process joined; `None` for a single process.
    pub group: Option<&'static ProcessGroup>,
}

impl RunContext {
    /// The context of `config` in a process that joined `group`: its device resolved, and
    /// LibTorch seeded (every rank alike, so their random initialisations agree).
    pub fn new(config: &Config, group: Option<&'static ProcessGroup>) -> Result<Self, LearnError> {
        let device = device(config.device)?;
        tch::manual_seed(config.seed as i64);
        Ok(Self { device, group })
    }

    /// This process's rank (0 alone).
    pub fn rank(&self) -> usize {
        self.group.map_or(0, |g| g.rank())
    }

    /// How many processes run (1 alone).
    pub fn world(&self) -> usize {
        self.group.map_or(1, |g| g.world())
    }

    /// Whether this process speaks for the run (rank 0): it alone writes the run folder.
    pub fn leads(&self) -> bool {
        self.rank() == 0
    }
}
