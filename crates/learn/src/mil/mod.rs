//! Slide-level learning from patch features: bags read from `.h5` files, ABMIL (gated
//! attention), and k-fold cross-validation by case.

pub mod bags;
pub mod cv;
pub mod model;

pub use bags::{load, Bag, Bags};
pub use cv::{cross_validate, CrossValidation, FoldResult, MilOptions};
pub use model::{Abmil, AbmilConfig, BagOutput};
