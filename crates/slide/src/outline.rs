//! `patchtcga tissue`: a slide's tissue (with its holes) and pen ink as QuPath annotations, and the
//! QuPath objects other commands write (patch grids, maps).

use std::fmt;
use std::path::PathBuf;

use geo::{Coord, MultiPolygon, Rect};

use crate::{
    feature_collection, mask_polygons, Ink, ObjectType, QuPathObject, Result, Slide, SlideError, SlideOptions,
    TissueMask, TissueParams,
};

/// The colour QuPath shows tissue in.
const TISSUE_COLOUR: [u8; 3] = [0, 160, 60];

/// Options of `patchtcga tissue`.
#[derive(clap::Args)]
pub struct TissueArgs {
    /// Slide file.
    pub slide: PathBuf,
    /// GeoJSON file to write (QuPath: File ▸ Import objects, or drop it on the slide).
    #[arg(long)]
    pub out: PathBuf,
    /// Only the tissue inside this region of interest (QuPath GeoJSON: every polygon annotation).
    #[arg(long)]
    pub roi: Option<PathBuf>,
    #[command(flatten)]
    pub open: SlideOptions,
    #[command(flatten)]
    pub tissue: TissueParams,
}

/// What `patchtcga tissue` wrote.
pub struct TissueOutline {
    out: PathBuf,
    pieces: usize,
    holes: usize,
    tissue_mm2: f64,
    ink_pieces: usize,
}

impl TissueArgs {
    /// Finds the slide's tissue and ink and writes them as annotations.
    pub fn run(&self) -> Result<TissueOutline> {
        let slide = Slide::open(&self.slide, &self.open)?;
        let mut mask = TissueMask::detect(&slide, &self.tissue)?;
        if let Some(roi) = &self.roi {
            mask = mask.within(&crate::Roi::load(roi, &slide.annotation_frame())?);
        }
        let tissue = tissue_objects(&mask);
        let ink = ink_objects(&mask);
        let holes = tissue.iter().flat_map(|o| &o.geometry.0).map(|p| p.interiors().len()).sum();
        let tissue_px = mask.mask().pixels().filter(|p| p.0[0] != 0).count();
        let text = feature_collection(&[tissue.clone(), ink.clone()].concat(), slide.annotation_frame().qupath_offset);
        patchtcga_atomic::write(&self.out, text.as_bytes())
            .map_err(|source| SlideError::Write { path: self.out.clone(), source })?;
        Ok(TissueOutline {
            out: self.out.clone(),
            pieces: tissue.len(),
            holes,
            tissue_mm2: tissue_px as f64 * mask.pixel_area_um2(slide.mpp()) / 1e6,
            ink_pieces: ink.len(),
        })
    }
}

impl fmt::Display for TissueOutline {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}: {} tissue piece(s) with {} hole(s), {:.2} mm²; {} pen-ink region(s)",
            self.out.display(),
            self.pieces,
            self.holes,
            self.tissue_mm2,
            self.ink_pieces
        )
    }
}

/// The tissue mask's pieces as `Tissue` annotations, one per connected piece, holes included.
pub fn tissue_objects(mask: &TissueMask) -> Vec<QuPathObject> {
    pieces(mask_polygons(mask.mask(), mask.downsample()), "Tissue", TISSUE_COLOUR)
}

/// The pen ink found, as annotations classed by colour (`Blue ink`, …), one per piece.
pub fn ink_objects(mask: &TissueMask) -> Vec<QuPathObject> {
    Ink::ALL
        .iter()
        .flat_map(|&ink| pieces(mask_polygons(&mask.ink().of(ink), mask.downsample()), ink.name(), ink.colour()))
        .collect()
}

fn pieces(polygons: MultiPolygon<f64>, class: &str, colour: [u8; 3]) -> Vec<QuPathObject> {
    polygons
        .0
        .into_iter()
        .map(|p| QuPathObject {
            kind: ObjectType::Annotation,
            geometry: MultiPolygon::new(vec![p]),
            class: Some((class.to_string(), colour)),
            measurements: vec![],
        })
        .collect()
}

/// A tile as a QuPath detection: level-0 corner and size, class, and measurements to colour by.
pub fn tile_object(
    (x, y): (f64, f64),
    (w, h): (f64, f64),
    class: Option<(String, [u8; 3])>,
    measurements: Vec<(String, f64)>,
) -> QuPathObject {
    let rect = Rect::new(Coord { x, y }, Coord { x: x + w, y: y + h });
    QuPathObject {
        kind: ObjectType::Detection,
        geometry: MultiPolygon::new(vec![rect.to_polygon()]),
        class,
        measurements,
    }
}
