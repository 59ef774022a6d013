//! Slide encoders (FEATHER, TITAN, mean pooling): one embedding per slide from the patch features `embed --slides` (or CLAM,
//! TRIDENT) writes, with each published encoder's network and input contract; and the k-fold
//! logistic-regression probe the slide-encoder papers report.

pub mod embed;
pub mod encoder;
pub mod feather;
pub mod probe;
pub mod titan;

pub use embed::{embed_folder, SlideEmbeddings};
pub use encoder::{Contract, FeaturesMade, PatchFeatures, SlideEncoder, SlideEncoderKind};
pub use patchtcga_metrics::slide_probe::{ProbeFold, SlideProbeReport, SLIDE_PROBE_FILE};
pub use probe::{probe, LogisticProbe, SlideProbeOptions};
