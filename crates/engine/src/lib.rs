//! The training engine of patchtcga on LibTorch: run configs with the release's keys, the
//! loaders of a run, optimizers and schedules, the training loop every method plugs into,
//! checkpoints with exact resume, run logs, TensorBoard events and plots, and the launch of
//! single- and multi-process runs.

pub mod checkpoint;
pub mod choices;
pub mod config;
pub mod context;
pub mod data;
pub mod device;
mod error;
pub mod launch;
pub mod optim;
pub mod plot;
pub mod schedule;
pub mod shards;
pub mod tensorboard;
pub mod trainer;

pub use config::{Config, SelfSupervised};
pub use context::RunContext;
pub use error::{write_atomic, LearnError};
pub use trainer::{train, Holdout, Method, OnProgress, Progress, StepOutput, Summary};
