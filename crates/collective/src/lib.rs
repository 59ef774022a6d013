//! Data-parallel training on PyTorch's own distributed engine, c10d: the TCPStore rendezvous
//! and the Gloo and NCCL process groups that `torch.distributed` uses, reached through a thin C++
//! shim (`shim/dist.cpp`) compiled against the pinned torch wheel. This crate gives the launch
//! (torchrun's environment, or the release's `nnode`/`hosts`/`dist_url`) and safe collectives;
//! nothing here moves bytes itself.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;
use std::time::Duration;

use tch::Tensor;

pub use patchtcga_launch::{run_node, Launch, LaunchError, OnFailure};

extern "C" {
    fn ptcga_free_error(err: *mut c_char);
    fn ptcga_has_nccl() -> c_int;
    fn ptcga_group_new(
        host: *const c_char,
        port: c_int,
        rank: c_int,
        world: c_int,
        timeout_s: c_int,
        cuda_device: c_int,
        err: *mut *mut c_char,
    ) -> *mut c_void;
    fn ptcga_group_free(group: *mut c_void);
    fn ptcga_group_shutdown(group: *mut c_void, err: *mut *mut c_char) -> c_int;
    fn ptcga_all_reduce_sum(group: *mut c_void, t: *mut c_void, err: *mut *mut c_char) -> c_int;
    fn ptcga_broadcast(group: *mut c_void, t: *mut c_void, root: c_int, err: *mut *mut c_char) -> c_int;
    fn ptcga_all_gather(group: *mut c_void, out: *mut c_void, t: *mut c_void, err: *mut *mut c_char) -> c_int;
    fn ptcga_barrier(group: *mut c_void, err: *mut *mut c_char) -> c_int;
    fn ptcga_buckets_new(
        group: *mut c_void,
        buckets: *const *mut c_void,
        n_buckets: c_int,
        params: *const *mut c_void,
        bucket_of: *const c_int,
        n_params: c_int,
        err: *mut *mut c_char,
    ) -> *mut c_void;
    fn ptcga_buckets_arm(buckets: *mut c_void);
    fn ptcga_buckets_finish(buckets: *mut c_void, err: *mut *mut c_char) -> c_int;
    fn ptcga_buckets_free(buckets: *mut c_void);
    #[allow(clippy::too_many_arguments)]
    fn ptcga_sync_batch_norm(
        group: *mut c_void,
        x: *mut c_void,
        weight: *mut c_void,
        bias: *mut c_void,
        running_mean: *mut c_void,
        running_var: *mut c_void,
        momentum: f64,
        eps: f64,
        err: *mut *mut c_char,
    ) -> *mut c_void;
}

/// Errors of the distributed engine, naming this rank and what failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum CollectiveError {
    #[error("distributed launch: {0}")]
    Launch(String),
    /// A process of the node failed (the others were stopped).
    #[error("distributed run failed: {0}")]
    Failed(String),
    #[error("rank {rank} of {world}: {what} failed (a peer stopped, or none answered within {timeout_s} s): {cause}")]
    Collective { rank: usize, world: usize, what: &'static str, timeout_s: u64, cause: String },
}

impl From<LaunchError> for CollectiveError {
    fn from(e: LaunchError) -> Self {
        match e {
            LaunchError::Launch(m) => Self::Launch(m),
            LaunchError::Failed(m) => Self::Failed(m),
        }
    }
}

/// Which c10d backend carries collectives over CUDA tensors; CPU tensors (metric totals, row
/// counts) always go through Gloo, as torch.distributed's default `"cpu:gloo,cuda:nccl"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Gloo for every tensor (CUDA tensors staged through the host).
    Gloo,
    /// NCCL for CUDA tensors, bound to this GPU of the node.
    Nccl { device: usize },
}

impl Backend {
    /// From the config's `dist_backend` (`auto`, `gloo` or `nccl`) and the GPU this process
    /// trains on, if any: `auto` is NCCL on a GPU where this build has it, Gloo otherwise.
    pub fn choose(name: &str, cuda_device: Option<usize>) -> Result<Self, CollectiveError> {
        match (name, cuda_device) {
            ("gloo", _) => Ok(Self::Gloo),
            ("auto", Some(device)) if nccl_available() => Ok(Self::Nccl { device }),
            ("auto", _) => Ok(Self::Gloo),
            ("nccl", Some(device)) if nccl_available() => Ok(Self::Nccl { device }),
            ("nccl", Some(_)) => Err(CollectiveError::Launch(
                "dist_backend nccl: this build has no NCCL (its LibTorch lacks CUDA, or CUDA's headers were \
                 missing when it was built)"
                    .into(),
            )),
            ("nccl", None) => {
                Err(CollectiveError::Launch("dist_backend nccl needs a CUDA device (device = \"cuda\")".into()))
            }
            (other, _) => Err(CollectiveError::Launch(format!("dist_backend {other:?}: auto, gloo or nccl"))),
        }
    }
}

/// Whether this build has c10d's NCCL process group (LibTorch with CUDA and CUDA's headers at
/// build time).
pub fn nccl_available() -> bool {
    // SAFETY: no arguments, no state.
    unsafe { ptcga_has_nccl() != 0 }
}

/// A parameter and where its gradient lies: the index of its flat gradient buffer and the
/// element offset in it.
pub type GradientSlot = (Tensor, usize, i64);

/// A c10d process group of this process and its peers: Gloo, and NCCL for CUDA tensors where
/// chosen.
pub struct ProcessGroup {
    raw: *mut c_void,
    rank: usize,
    world: usize,
    timeout: Duration,
}

// SAFETY: the c10d process group is thread-safe for the calls made here, which are serialised
// by the training loop anyway.
unsafe impl Send for ProcessGroup {}
unsafe impl Sync for ProcessGroup {}

fn take_error(err: *mut c_char) -> String {
    if err.is_null() {
        return "unknown error".into();
    }
    // SAFETY: the shim returns a NUL-terminated string it allocated, freed here once.
    let s = unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned();
    unsafe { ptcga_free_error(err) };
    s
}

impl ProcessGroup {
    /// Meets the other processes at the launch's rendezvous (rank 0 serves it) and opens the
    /// group; waits at most `timeout` for them, and every later collective as long (NCCL's
    /// watchdog ends a process whose GPU collective passes it).
    pub fn new(launch: &Launch, timeout: Duration, backend: Backend) -> Result<Self, CollectiveError> {
        let host = CString::new(launch.master_addr.clone())
            .map_err(|_| CollectiveError::Launch("MASTER_ADDR has a NUL".into()))?;
        let mut err = std::ptr::null_mut();
        let t = timeout.as_secs().max(1) as c_int;
        let cuda_device = match backend {
            Backend::Gloo => -1,
            Backend::Nccl { device } => device as c_int,
        };
        // SAFETY: valid C string and out-pointer; the shim owns what it returns.
        let raw = unsafe {
            ptcga_group_new(
                host.as_ptr(),
                launch.master_port as c_int,
                launch.rank as c_int,
                launch.world as c_int,
                t,
                cuda_device,
                &mut err,
            )
        };
        if raw.is_null() {
            return Err(CollectiveError::Launch(format!(
                "rank {} of {}: rendezvous at {}:{} failed: {}",
                launch.rank,
                launch.world,
                launch.master_addr,
                launch.master_port,
                take_error(err)
            )));
        }
        Ok(Self { raw, rank: launch.rank, world: launch.world, timeout })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    fn check(&self, what: &'static str, rc: c_int, err: *mut c_char) -> Result<(), CollectiveError> {
        if rc == 0 {
            return Ok(());
        }
        Err(CollectiveError::Collective {
            rank: self.rank,
            world: self.world,
            what,
            timeout_s: self.timeout.as_secs(),
            cause: take_error(err),
        })
    }

    /// Sums `t` over all ranks, in place (a contiguous tensor).
    pub fn all_reduce_sum(&self, t: &Tensor) -> Result<(), CollectiveError> {
        let mut err = std::ptr::null_mut();
        // SAFETY: `t` is a live tensor; the shim reads its at::Tensor handle.
        let rc = unsafe { ptcga_all_reduce_sum(self.raw, t.as_ptr() as *mut c_void, &mut err) };
        self.check("all-reduce", rc, err)
    }

    /// Copies rank `root`'s `t` into every rank's `t`, in place.
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<(), CollectiveError> {
        let mut err = std::ptr::null_mut();
        // SAFETY: as above.
        let rc = unsafe { ptcga_broadcast(self.raw, t.as_ptr() as *mut c_void, root as c_int, &mut err) };
        self.check("broadcast", rc, err)
    }

    /// Every rank's `t` (same shape on all), stacked in rank order: (world, …).
    pub fn all_gather(&self, t: &Tensor) -> Result<Tensor, CollectiveError> {
        let t = t.contiguous();
        let mut shape = vec![self.world as i64];
        shape.extend(t.size());
        let out = Tensor::empty(shape.as_slice(), (t.kind(), t.device()));
        let mut err = std::ptr::null_mut();
        // SAFETY: as above; `out` has room for every rank's tensor.
        let rc =
            unsafe { ptcga_all_gather(self.raw, out.as_ptr() as *mut c_void, t.as_ptr() as *mut c_void, &mut err) };
        self.check("all-gather", rc, err)?;
        Ok(out)
    }

    /// Every rank's rows of `t` (N_r, …), the N_r free to differ, concatenated in rank order:
    /// what evaluation sharded over ranks gathers (predictions, features, labels).
    pub fn all_gather_rows(&self, t: &Tensor) -> Result<Tensor, CollectiveError> {
        let rows = self.all_gather(&Tensor::from_slice(&[t.size()[0]]))?;
        let rows = Vec::<i64>::try_from(rows.view([-1])).map_err(|e| CollectiveError::Collective {
            rank: self.rank,
            world: self.world,
            what: "all-gather of row counts",
            timeout_s: self.timeout.as_secs(),
            cause: e.to_string(),
        })?;
        let most = rows.iter().copied().max().unwrap_or(0);
        let mut padded = t.size();
        padded[0] = most - t.size()[0];
        let t = Tensor::cat(&[t.shallow_clone(), Tensor::zeros(padded.as_slice(), (t.kind(), t.device()))], 0);
        let all = self.all_gather(&t)?;
        let parts: Vec<Tensor> = rows.iter().enumerate().map(|(r, &n)| all.get(r as i64).narrow(0, 0, n)).collect();
        Ok(Tensor::cat(&parts, 0))
    }

    /// Training-mode batch norm of `x` (N, C, …) whose statistics, and their gradients in the
    /// backward pass, span every rank's batch (`torch.nn.SyncBatchNorm`); updates the running
    /// statistics with the global ones.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm(
        &self,
        x: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        running_mean: &Tensor,
        running_var: &Tensor,
        momentum: f64,
        eps: f64,
    ) -> Result<Tensor, CollectiveError> {
        let ptr = |t: Option<&Tensor>| t.map_or(std::ptr::null_mut(), |t| t.as_ptr() as *mut c_void);
        let mut err = std::ptr::null_mut();
        // SAFETY: live tensors or null; the shim returns a new at::Tensor that tch then owns.
        let out = unsafe {
            ptcga_sync_batch_norm(
                self.raw,
                x.as_ptr() as *mut c_void,
                ptr(weight),
                ptr(bias),
                running_mean.as_ptr() as *mut c_void,
                running_var.as_ptr() as *mut c_void,
                momentum,
                eps,
                &mut err,
            )
        };
        if out.is_null() {
            self.check("synchronised batch norm", 1, err)?;
        }
        // SAFETY: a heap at::Tensor from the shim, freed by tch's Drop.
        Ok(unsafe { Tensor::from_ptr(out as *mut _) })
    }

    /// Gradient buckets of at most `cap_bytes` over the flat gradient buffers `flat` (each cut
    /// from its end, where the last layers' gradients lie, in whole parameters), all-reduced while
    /// the backward pass runs once [`GradientBuckets::arm`]ed. `params` are the parameters with
    /// their buffer and element offset in it; their gradients must live in those buffers.
    pub fn gradient_buckets(
        &self,
        flat: &[Tensor],
        params: &[GradientSlot],
        cap_bytes: usize,
    ) -> Result<GradientBuckets<'_>, CollectiveError> {
        // Bucket boundaries per buffer: parameters by descending offset, a new bucket whenever
        // the current one would pass the cap.
        let mut order: Vec<usize> = (0..params.len()).collect();
        order.sort_by_key(|&i| (params[i].1, std::cmp::Reverse(params[i].2)));
        let mut bucket_of = vec![0 as c_int; params.len()];
        let mut buckets: Vec<Tensor> = Vec::new();
        let mut current: Option<(usize, i64, i64)> = None; // buffer, start, end (elements)
        let close = |c: Option<(usize, i64, i64)>, buckets: &mut Vec<Tensor>| {
            if let Some((f, start, end)) = c {
                buckets.push(flat[f].narrow(0, start, end - start));
            }
        };
        for i in order {
            let (t, f, offset) = (&params[i].0, params[i].1, params[i].2);
            let n = t.numel() as i64;
            let bytes = |start: i64, end: i64| (end - start) as usize * flat[f].kind().elt_size_in_bytes();
            current = match current {
                Some((cf, _, end)) if cf == f && bytes(offset, end) <= cap_bytes => Some((f, offset, end)),
                c => {
                    close(c, &mut buckets);
                    Some((f, offset, offset + n))
                }
            };
            bucket_of[i] = buckets.len() as c_int;
        }
        close(current, &mut buckets);
        let bucket_ptrs: Vec<*mut c_void> = buckets.iter().map(|t| t.as_ptr() as *mut c_void).collect();
        let param_ptrs: Vec<*mut c_void> = params.iter().map(|(t, _, _)| t.as_ptr() as *mut c_void).collect();
        let mut err = std::ptr::null_mut();
        // SAFETY: live tensors; the shim copies the handles it keeps.
        let raw = unsafe {
            ptcga_buckets_new(
                self.raw,
                bucket_ptrs.as_ptr(),
                bucket_ptrs.len() as c_int,
                param_ptrs.as_ptr(),
                bucket_of.as_ptr(),
                param_ptrs.len() as c_int,
                &mut err,
            )
        };
        if raw.is_null() {
            self.check("gradient buckets", 1, err)?;
        }
        Ok(GradientBuckets { raw, group: self, count: buckets.len() })
    }

    /// Ends the group (NCCL's communicators and watchdog), as `destroy_process_group`: later
    /// collectives fail with an error. Dropping the group does the same.
    pub fn shutdown(&self) -> Result<(), CollectiveError> {
        let mut err = std::ptr::null_mut();
        // SAFETY: as above.
        let rc = unsafe { ptcga_group_shutdown(self.raw, &mut err) };
        self.check("shutdown", rc, err)
    }

    /// Waits until every rank gets here.
    pub fn barrier(&self) -> Result<(), CollectiveError> {
        let mut err = std::ptr::null_mut();
        // SAFETY: as above.
        let rc = unsafe { ptcga_barrier(self.raw, &mut err) };
        self.check("barrier", rc, err)
    }
}

/// Gradient buckets all-reduced during the backward pass (see
/// [`ProcessGroup::gradient_buckets`]); dropping them removes their hooks.
pub struct GradientBuckets<'g> {
    raw: *mut c_void,
    group: &'g ProcessGroup,
    count: usize,
}

impl GradientBuckets<'_> {
    /// Makes the next backward pass all-reduce the buckets as they fill (the last micro-batch of
    /// an update; earlier ones only accumulate).
    pub fn arm(&self) {
        // SAFETY: created by ptcga_buckets_new, alive until drop.
        unsafe { ptcga_buckets_arm(self.raw) }
    }

    /// All-reduces (sums) what the backward pass did not, and waits for every bucket.
    pub fn finish(&self) -> Result<(), CollectiveError> {
        let mut err = std::ptr::null_mut();
        // SAFETY: as above.
        let rc = unsafe { ptcga_buckets_finish(self.raw, &mut err) };
        self.group.check("gradient all-reduce", rc, err)
    }

    /// Number of buckets.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

impl Drop for GradientBuckets<'_> {
    fn drop(&mut self) {
        // SAFETY: created by ptcga_buckets_new, freed once.
        unsafe { ptcga_buckets_free(self.raw) };
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: created by ptcga_group_new, freed once.
        unsafe { ptcga_group_free(self.raw) };
    }
}

static GROUP: OnceLock<ProcessGroup> = OnceLock::new();

/// Joins the run this process was launched into (torchrun's environment), once; `None` for a
/// single process.
pub fn init_from_env(timeout: Duration, backend: Backend) -> Result<Option<&'static ProcessGroup>, CollectiveError> {
    let Some(launch) = Launch::from_env()? else { return Ok(None) };
    if GROUP.get().is_none() {
        let g = ProcessGroup::new(&launch, timeout, backend)?;
        let _ = GROUP.set(g);
    }
    Ok(GROUP.get())
}

/// The group this process joined, if any (the default group, as in `torch.distributed`).
pub fn group() -> Option<&'static ProcessGroup> {
    GROUP.get()
}
