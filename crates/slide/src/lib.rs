//! Whole-slide image access for patch datasets.
//!
//! A [`Slide`] opens anything OpenSlide reads (tiled TIFF and Aperio SVS through patchtcga's
//! own reader, `patchtcga-tiff`, unless told otherwise), knows its µm/px, and reads patches at a target
//! resolution ([`PatchGeometry`]) with antialiased resampling. Around it: tissue detection on a
//! low-resolution view ([`TissueMask`], pen ink taken out: [`InkMask`]), candidate patch positions ([`Sampler`]), patch quality
//! checks ([`QualityCheck`]), Camelyon/ASAP polygon annotations ([`Annotations`]) and PANDA label
//! masks ([`LabelScheme`]).

mod annotation;
mod error;
mod geometry;
mod info;
mod ink;
mod labelmask;
mod outline;
mod quality;
mod qupath;
mod sampling;
mod tissue;
mod wsi;

pub use annotation::{AnnotationFrame, AnnotationGroups, Annotations, Roi};
pub use error::SlideError;
pub use geometry::{GeometryFlags, PatchGeometry, DEFAULT_MPP, DEFAULT_PATCH_SIZE};
pub use info::{InfoArgs, RegionBench, RegionTiming, SlideInfo};
pub use ink::{Ink, InkMask};
pub use labelmask::{LabelScheme, SEGPANDA_CLASSES};
pub use outline::{ink_objects, tile_object, tissue_objects, TissueArgs, TissueOutline};
pub use quality::{background_fraction, sharpness, QualityCheck, QualityVerdict};
pub use qupath::{feature_collection, mask_polygons, ClassifiedPolygon, ObjectType, QuPathObject, UNCLASSIFIED};
pub use sampling::{Candidate, Candidates, Sampler, Sampling, TissueGrid};
pub use tissue::{TissueMask, TissueParams};
pub use wsi::{Mpp, MppSource, Reader, ServedBy, Slide, SlideOptions, DEFAULT_TILE_CACHE_MB};

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, SlideError>;

/// The value an options type takes on an empty command line: its flags' defaults, so a default
/// is written once, on the flag, and `Default` agrees with the command line.
pub fn flag_defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults"));
    T::from_arg_matches(&command.get_matches_from(["defaults"])).expect("every flag of an options type has a default")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults of the options types, now read off their flags, are the values they had.
    #[test]
    fn defaults_come_from_the_flags() {
        let t = TissueParams::default();
        assert_eq!((t.mask_mpp, t.saturation_threshold, t.median_radius, t.close_radius), (8.0, None, 3, 2));
        assert_eq!((t.min_saturation, t.min_area_um2, t.max_hole_um2), (15, 20_000.0, 10_000.0));
        assert_eq!((t.keep_ink, t.max_ink), (false, 0.05));
        assert_eq!(QualityCheck::default(), QualityCheck { max_background: 0.5, min_sharpness: 15.0 });
        let o = SlideOptions::default();
        assert_eq!((o.mpp_override, o.reader, o.tile_cache_mb), (None, Reader::Auto, DEFAULT_TILE_CACHE_MB));
        let g = AnnotationGroups::default();
        assert_eq!(
            (g.tumor.join(","), g.exclusion.join(",")),
            ("Tumor,_0,_1,metastases".into(), "_2,Exclusion,Ignore*".into())
        );
        let s: Sampler = flag_defaults();
        assert_eq!(s, Sampler { sampling: Sampling::Grid, min_tissue: 0.5, seed: 0 });
    }
}
