//! The device a run or a command drives, checked against the GPUs this process sees.

use tch::Device;

use crate::choices::DeviceChoice;
use crate::LearnError;

/// The device a `--device` flag names (`cpu`, `cuda`, `cuda:N`), as [`device`] resolves it.
pub fn parse_device(flag: &str) -> Result<Device, String> {
    flag.parse().and_then(device).map_err(|e| e.to_string())
}

/// The device a config names, checked against the GPUs this process sees.
pub fn device(choice: DeviceChoice) -> Result<Device, LearnError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        // A distributed run's process drives the GPU of its local rank (torchrun's LOCAL_RANK,
        // or SLURM_LOCALID in an srun step).
        DeviceChoice::Cuda => {
            let visible = tch::Cuda::device_count().max(0) as usize;
            let local = patchtcga_collective::Launch::from_env().ok().flatten().map_or(0, |l| l.local_rank);
            match visible {
                0 => Err(LearnError::Config("device cuda: no CUDA device is visible".into())),
                n if local >= n => Err(LearnError::Config(format!(
                    "device cuda: local rank {local} drives GPU {local}, but {n} GPU(s) are visible (one process \
                     per GPU; to share one, set device = \"cuda:0\" and dist_backend = \"gloo\")"
                ))),
                _ => Ok(Device::Cuda(local)),
            }
        }
        DeviceChoice::CudaIndex(n) if (n as i64) < tch::Cuda::device_count() => Ok(Device::Cuda(n)),
        other => Err(LearnError::Config(format!("device \"{other}\": cpu, cuda or cuda:N with a visible GPU"))),
    }
}
