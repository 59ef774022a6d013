//! The methods that plug into the training engine, in lightly's decomposition: heads, losses and
//! target rules, composed into supervised organ classification, one file per self-supervised
//! method (SimCLR, BYOL, MoCo v2, DINO, MAE), and semantic segmentation; the k-NN classifier they
//! monitor with; and the throughput of their updates.

pub mod bench;
pub mod byol;
pub mod dino;
pub mod heads;
pub mod knn;
pub mod loss;
pub mod mae;
pub mod moco;
pub mod pretrain;
pub mod segmentation;
pub mod simclr;
mod ssl;
pub mod supervised;
pub mod target;

pub use pretrain::{method, pretrain};
pub use supervised::Supervised;
