//! Launching a job over processes as torchrun does, and knowing where this process sits in one:
//! `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT` (or SLURM's `SLURM_PROCID`,
//! `SLURM_NTASKS`, `SLURM_LOCALID`), the release's `hosts`/`dist_url`, and this node's ranks
//! started and watched. Free of LibTorch: training joins a c10d group with it (`patchtcga-collective`),
//! dataset builds share their slide lists with it.

/// Why a launch failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum LaunchError {
    /// The launch's settings are inconsistent, or a process could not be started.
    #[error("distributed launch: {0}")]
    Launch(String),
    /// A process of the node failed (the others were stopped).
    #[error("distributed run failed: {0}")]
    Failed(String),
}

/// What a node does when one of its processes fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Stop the others (a training: a rank lost before the rendezvous would otherwise keep its
    /// peers waiting for the whole timeout).
    StopOthers,
    /// Let the others finish their work (a dataset build: a bad slide fails alone).
    LetFinish,
}

/// Starts this node's processes — this program again, with the arguments it was given and each
/// launch's torchrun environment — and waits for them. As torchrun, the node's cores are shared
/// among them (`OMP_NUM_THREADS`, unless set). Fails naming every process that failed.
pub fn run_node(launches: &[Launch], on_failure: OnFailure) -> Result<(), LaunchError> {
    let launch_err = |what: String| LaunchError::Launch(what);
    let exe = std::env::current_exe().map_err(|e| launch_err(format!("cannot find this program: {e}")))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads =
        std::env::var("OMP_NUM_THREADS").unwrap_or_else(|_| (cores / launches.len().max(1)).max(1).to_string());
    let mut children = Vec::new();
    for l in launches {
        let child = std::process::Command::new(&exe)
            .args(std::env::args_os().skip(1))
            .envs(l.env())
            .env("OMP_NUM_THREADS", &threads)
            .spawn()
            .map_err(|e| launch_err(format!("cannot start rank {}: {e}", l.rank)))?;
        children.push((l.rank, child));
    }
    let mut failed = Vec::new();
    while !children.is_empty() && (failed.is_empty() || on_failure == OnFailure::LetFinish) {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut running = Vec::new();
        for (rank, mut c) in children {
            match c.try_wait().map_err(|e| launch_err(format!("rank {rank}: {e}")))? {
                Some(status) if !status.success() => failed.push(format!("rank {rank} ({status})")),
                Some(_) => {}
                None => running.push((rank, c)),
            }
        }
        children = running;
    }
    if failed.is_empty() {
        return Ok(());
    }
    let stopped: Vec<String> = children
        .iter_mut()
        .map(|(rank, c)| {
            let _ = c.kill();
            let _ = c.wait();
            rank.to_string()
        })
        .collect();
    let stopped = if stopped.is_empty() { String::new() } else { format!("; stopped rank {}", stopped.join(", ")) };
    Err(LaunchError::Failed(format!("{}{stopped}", failed.join(", "))))
}

/// Where this process sits in a run: rank, number of processes, and the rendezvous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub world: usize,
    /// Rank within this node (which GPU it drives).
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
}

impl Launch {
    /// From torchrun's environment (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`,
    /// `MASTER_PORT`), or inside a SLURM job step started by `srun` (`SLURM_PROCID`,
    /// `SLURM_STEP_NUM_TASKS`, `SLURM_LOCALID`, with `MASTER_ADDR`/`MASTER_PORT` as given);
    /// `None` for a single process.
    pub fn from_env() -> Result<Option<Self>, LaunchError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let num = |k: &str, v: &str| {
            v.parse::<usize>().map_err(|_| LaunchError::Launch(format!("{k}={v:?} is not a number")))
        };
        let (world_key, rank_key, local_key) = if var("WORLD_SIZE").is_some() {
            ("WORLD_SIZE", "RANK", "LOCAL_RANK")
        } else {
            ("SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "SLURM_LOCALID")
        };
        let Some(world) = var(world_key) else { return Ok(None) };
        let world = num(world_key, &world)?;
        if world <= 1 {
            return Ok(None);
        }
        let rank =
            var(rank_key).ok_or_else(|| LaunchError::Launch(format!("{world_key} is set but {rank_key} is not")))?;
        let rank = num(rank_key, &rank)?;
        let local_rank = var(local_key).map(|v| num(local_key, &v)).transpose()?.unwrap_or(rank);
        let master_addr = var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into());
        let port = var("MASTER_PORT").unwrap_or_else(|| "29500".into());
        let master_port =
            port.parse().map_err(|_| LaunchError::Launch(format!("MASTER_PORT={port:?} is not a port")))?;
        Self::checked(Self { rank, world, local_rank, master_addr, master_port }).map(Some)
    }

    /// From the release's config keys: `hosts` (one per node), this node's index in it, processes
    /// per node, and `dist_url` (`tcp://host:port`): rank = per node × node index + local rank.
    pub fn from_hosts(
        hosts: &[String],
        node: usize,
        per_node: usize,
        local_rank: usize,
        dist_url: &str,
    ) -> Result<Self, LaunchError> {
        let rest = dist_url
            .strip_prefix("tcp://")
            .ok_or_else(|| LaunchError::Launch(format!("dist_url {dist_url:?}: expected tcp://host:port")))?;
        let (addr, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| LaunchError::Launch(format!("dist_url {dist_url:?}: expected tcp://host:port")))?;
        let master_port = port.parse().map_err(|_| LaunchError::Launch(format!("dist_url {dist_url:?}: bad port")))?;
        if node >= hosts.len() {
            return Err(LaunchError::Launch(format!("node {node} is not in hosts ({} listed)", hosts.len())));
        }
        let world = hosts.len() * per_node;
        Self::checked(Self {
            rank: per_node * node + local_rank,
            world,
            local_rank,
            master_addr: addr.into(),
            master_port,
        })
    }

    fn checked(self) -> Result<Self, LaunchError> {
        if self.rank >= self.world {
            return Err(LaunchError::Launch(format!("rank {} is not below the world size {}", self.rank, self.world)));
        }
        Ok(self)
    }

    /// The environment a child process of this launch gets (what torchrun sets).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("RANK", self.rank.to_string()),
            ("WORLD_SIZE", self.world.to_string()),
            ("LOCAL_RANK", self.local_rank.to_string()),
            ("MASTER_ADDR", self.master_addr.clone()),
            ("MASTER_PORT", self.master_port.to_string()),
        ]
    }
}

/// A node of a job as torchrun's options say it: processes on this node, nodes, this node's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct Node {
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

/// One process's part of a job over a list (slides to tile or embed): rank `rank` of `world`
/// takes items `rank`, `rank + world`, … of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// This process's rank, below `world`.
    pub rank: usize,
    /// Processes sharing the list.
    pub world: usize,
}

impl Default for Share {
    fn default() -> Self {
        Self { rank: 0, world: 1 }
    }
}

impl Share {
    /// Whether the item at `index` of the list is this process's.
    pub fn takes(&self, index: usize) -> bool {
        index % self.world == self.rank
    }

    /// `rank 1 of 2: ` to put before what this process says, when the list is shared; else nothing.
    pub fn prefix(&self) -> String {
        if self.world > 1 {
            format!("rank {} of {}: ", self.rank, self.world)
        } else {
            String::new()
        }
    }
}

impl Node {
    /// The launches of this node's processes, meeting at `master_addr:master_port`.
    pub fn launches(&self, master_addr: &str, master_port: u16) -> Result<Vec<Launch>, LaunchError> {
        let (per_node, nnodes) = (self.nproc_per_node.max(1), self.nnodes.max(1));
        if self.node_rank >= nnodes {
            return Err(LaunchError::Launch(format!(
                "--node-rank {} is not below --nnodes {}",
                self.node_rank, self.nnodes
            )));
        }
        Ok((0..per_node)
            .map(|l| Launch {
                rank: self.node_rank * per_node + l,
                world: nnodes * per_node,
                local_rank: l,
                master_addr: master_addr.into(),
                master_port,
            })
            .collect())
    }

    /// This node's launches by the release's config keys: this machine's name (`/etc/hostname`,
    /// or its first label) picks its index in `hosts`; `dist_url` is the rendezvous.
    pub fn launches_from_hosts(&self, hosts: &[String], dist_url: &str) -> Result<Vec<Launch>, LaunchError> {
        let me = std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim().to_owned();
        let node =
            hosts.iter().position(|h| h == &me || h.split('.').next() == Some(me.as_str())).ok_or_else(|| {
                LaunchError::Launch(format!("this machine ({me:?}) is not in the config's hosts {hosts:?}"))
            })?;
        let per_node = self.nproc_per_node.max(1);
        (0..per_node).map(|l| Launch::from_hosts(hosts, node, per_node, l, dist_url)).collect()
    }

    /// This process's (rank, world) in a job over a list that every rank takes its share of (no
    /// rendezvous): from torchrun's or `srun`'s environment when it has one, or this node's place
    /// when it runs one process; with several, they are started here (each with that
    /// environment) and waited for, and `None` is returned.
    pub fn share(&self) -> Result<Option<Share>, LaunchError> {
        if let Some(l) = Launch::from_env()? {
            return Ok(Some(Share { rank: l.rank, world: l.world }));
        }
        let launches = self.launches("127.0.0.1", 0)?;
        if let [one] = launches.as_slice() {
            return Ok(Some(Share { rank: one.rank, world: one.world }));
        }
        run_node(&launches, OnFailure::LetFinish)?;
        Ok(None)
    }
}
