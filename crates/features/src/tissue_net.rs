//! Learned tissue segmentation from the user's weight files: HEST's tissue segmenter (torchvision's
//! DeepLabv3-ResNet50 with a 2-class head, 512 px windows at 1 µm/px, ImageNet normalisation,
//! tissue where its probability exceeds one half), slid over the whole slide and written as QuPath
//! tissue annotations, which `build`, `embed --slides` and `infer` take as regions of interest.

use std::path::Path;

use image::GrayImage;
use patchtcga_model::{load, load_head, Arch, ImportOptions, SegHead, SegNet};
use patchtcga_slide::{feature_collection, mask_polygons, ObjectType, QuPathObject, Slide};
use tch::nn::ModuleT;
use tch::{Device, Kind, Tensor};

use patchtcga_engine::LearnError;

use crate::slide_map::{slide_map, MapOptions, WindowModel};

/// A learned tissue segmenter, as `--model` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TissueModel {
    /// HEST's tissue segmenter (Hugging Face MahmoodLab/hest-tissue-seg, `deeplabv3_seg_v4.ckpt`).
    Hest,
}

/// Window side in pixels, and its µm/px (10×), as HEST runs it.
const WINDOW: u32 = 512;
const WINDOW_MPP: f64 = 1.0;
/// Cells per window side of the mask (16 µm cells).
const CELLS: usize = 32;

/// A tissue segmenter with its weights on a device.
pub struct TissueNet {
    net: SegNet,
    _vs: tch::nn::VarStore,
}

impl TissueNet {
    /// HEST's network with the weights of `path` (its Lightning checkpoint: `model.backbone.*`,
    /// `model.classifier.*`; the auxiliary classifier left out).
    pub fn load(model: TissueModel, path: &Path, device: Device) -> Result<Self, LearnError> {
        let TissueModel::Hest = model;
        let vs = tch::nn::VarStore::new(device);
        let net = SegNet::new(&vs.root(), Arch::ResNet50.spec(WINDOW as i64), SegHead::DeepLabV3, 2)?;
        load(&vs, path, "classifier", &ImportOptions::default())?;
        let head = load_head(&vs, path)?;
        if !head.left.is_empty() || head.loaded.len() != head_tensors(&vs) {
            return Err(LearnError::Config(format!(
                "{}: not HEST's 2-class DeepLabv3 head ({} of its tensors found; the published file is \
                 deeplabv3_seg_v4.ckpt of MahmoodLab/hest-tissue-seg)",
                path.display(),
                head.loaded.len()
            )));
        }
        Ok(Self { net, _vs: vs })
    }
}

fn head_tensors(vs: &tch::nn::VarStore) -> usize {
    vs.variables().keys().filter(|n| n.starts_with("classifier.")).count()
}

impl WindowModel for TissueNet {
    fn cells(&self) -> usize {
        CELLS
    }

    fn values(&self, x: &Tensor, g: i64) -> Tensor {
        let y = tch::no_grad(|| self.net.forward_t(x, false)).to_kind(Kind::Float).softmax(1, Kind::Float);
        y.narrow(1, 1, 1).adaptive_avg_pool2d([g, g])
    }

    fn cell(&self, sums: &[f32], seen: u32) -> f32 {
        sums[0] / seen as f32
    }

    fn summary(&self, scored: &[f32]) -> String {
        let tissue = scored.iter().filter(|&&p| p > 0.5).count();
        format!("tissue on {:.1} % of the slide", 100.0 * tissue as f64 / scored.len().max(1) as f64)
    }

    fn class(&self) -> Option<i64> {
        Some(1)
    }
}

/// The slide's tissue as the segmenter sees it: its probability, averaged over 16 µm cells,
/// above one half, over the whole slide (the last windows run past its edges). Returns the polygons in level-0 pixels and the tissue share of the slide.
pub fn segment_tissue(
    slide: &Slide,
    net: &TissueNet,
    (batch_size, device): (usize, Device),
    progress: &indicatif::ProgressBar,
) -> Result<(geo::MultiPolygon<f64>, f64), LearnError> {
    let (mean, std) = patchtcga_model::foundation::IMAGENET;
    let o = MapOptions {
        field_um: WINDOW as f64 * WINDOW_MPP,
        image_size: WINDOW,
        overlap: 1,
        min_tissue: 0.0,
        mean,
        std,
        batch_size,
        device,
        roi: None,
        cover: true,
    };
    let map = slide_map(slide, net, &o, progress)?;
    // The cells that start on the slide; the last ones' outlines are clipped to its edges.
    let (w, h) = slide.dimensions();
    let cols = ((w as f64 / map.cell.0).ceil() as usize).min(map.cols);
    let rows = ((h as f64 / map.cell.1).ceil() as usize).min(map.rows);
    let mask = GrayImage::from_fn(cols as u32, rows as u32, |x, y| {
        let p = map.values[y as usize * map.cols + x as usize];
        image::Luma([if p > 0.5 { 255 } else { 0 }])
    });
    let share = mask.pixels().filter(|p| p.0[0] != 0).count() as f64 / (rows * cols).max(1) as f64;
    let clip = |c: geo::Coord<f64>| geo::Coord { x: c.x.clamp(0.0, w as f64), y: c.y.clamp(0.0, h as f64) };
    Ok((geo::MapCoords::map_coords(&mask_polygons(&mask, map.cell.0), clip), share))
}

/// Writes `tissue` as one QuPath annotation of class `Tissue` (GeoJSON, atomically).
pub fn write_tissue(slide: &Slide, tissue: geo::MultiPolygon<f64>, out: &Path) -> Result<(), LearnError> {
    let object = QuPathObject {
        kind: ObjectType::Annotation,
        geometry: tissue,
        class: Some(("Tissue".into(), [80, 160, 80])),
        measurements: Vec::new(),
    };
    let text = feature_collection(&[object], slide.annotation_frame().qupath_offset);
    patchtcga_atomic::write(out, text.as_bytes()).map_err(|e| LearnError::io(out, e))
}
