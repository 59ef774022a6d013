//! Slide-level learning from patch features: bags read from `.h5` files, ABMIL (gated
//! attention), CLAM-SB and TransMIL, k-fold cross-validation by case, attention heat maps, and
//! `infer`: a classifier's or a slide-level run's map of a slide.

pub mod args;
pub mod bags;
pub mod checkpoint;
pub mod cv;
pub mod heatmap;
pub mod infer;
pub mod model;
pub mod run;
pub mod transmil;

pub use args::{with_config, HeatmapArgs, MilCommand, TrainArgs};
pub use bags::{load, Bag, Bags};
pub use cv::{cross_validate, CrossValidation, EpochLosses, FoldResult, FoldStore, LrSchedule, MilOptions, Unkept};
pub use model::{bag_loss, Abmil, AbmilConfig, BagOutput, InstanceCriterion, InstanceLoss, MilArch, MilNet};
pub use run::{MilRun, SlidePrediction};
