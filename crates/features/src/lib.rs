//! Backbone features and maps of images and slides: `embed` of a folder of patches (one `.npy`)
//! or of each slide's tissue grid (CLAM / TRIDENT `.h5` files), and a classifier's or
//! segmentation network's map over a whole slide, drawn and written for QuPath.

pub mod embed;
pub mod patch_features;
pub mod qupath;
pub mod slide_features;
pub mod slide_map;
pub mod tissue_net;
