//! DICOM VL Whole Slide Microscopy series written from an image, as wsidicomizer lays them out: one VOLUME instance per level (JPEG or native frames, TILED_FULL or TILED_SPARSE), a label, pixel spacing.

use std::path::{Path, PathBuf};

use dicom_core::value::{DataSetSequence, PixelFragmentSequence};
use dicom_core::{dicom_value, DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use image::RgbImage;

use crate::tiff::{encode, pyramid, tiles};
use crate::Coding;

const WSI_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.77.1.6";
const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
const EXPLICIT_LITTLE: &str = "1.2.840.10008.1.2.1";

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DicomSpec {
    /// Frame side in pixels.
    pub tile: u32,
    /// Frame encoding: [`Coding::Raw`] (native pixel data) or [`Coding::Jpeg`] without shared
    /// tables (JPEG baseline; `ycbcr` gives YBR_FULL_422, else RGB).
    pub coding: Coding,
    /// Pyramid levels, each half the previous, one instance each.
    pub levels: u32,
    /// µm/px in the pixel measures (none: no pixel spacing).
    pub mpp: Option<f64>,
    /// TILED_SPARSE: frames stored in reverse order with their positions, and each level's
    /// last frame left out (it reads as background).
    pub sparse: bool,
    /// A label instance (the image's top-left 96×64 pixels, one frame).
    pub label: bool,
    /// The finest level in two instances (`level-0a`, `level-0b`), halves of its frames: a
    /// concatenation (TILED_FULL) or two sparse parts.
    pub split: bool,
}

impl Default for DicomSpec {
    fn default() -> Self {
        Self { tile: 256, coding: Coding::Raw, levels: 1, mpp: Some(0.5), sparse: false, label: false, split: false }
    }
}

/// UIDs of the study and series the fixtures belong to.
pub const STUDY_UID: &str = "2.25.1001";
pub const SERIES_UID: &str = "2.25.1002";

impl DicomSpec {
    /// Writes `image` as a series in folder `dir` (created); returns the files, finest level
    /// first, then the label.
    pub fn write(&self, dir: &Path, image: &RgbImage) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut files = Vec::new();
        for (i, level) in pyramid(image, self.levels).iter().enumerate() {
            let mpp = self.mpp.map(|m| m * (image.width() as f64 / level.width() as f64));
            if self.split && i == 0 {
                for (part, name) in ["a", "b"].iter().enumerate() {
                    let path = dir.join(format!("level-0{name}.dcm"));
                    self.write_instance(&path, level, "VOLUME", mpp, 50 + part as u32, self.tile, Some(part))?;
                    files.push(path);
                }
                continue;
            }
            let path = dir.join(format!("level-{i}.dcm"));
            self.write_instance(&path, level, "VOLUME", mpp, i as u32 + 1, self.tile, None)?;
            files.push(path);
        }
        if self.label {
            let label = image::imageops::crop_imm(image, 0, 0, 96, 64).to_image();
            let path = dir.join("label.dcm");
            DicomSpec { sparse: false, ..*self }.write_instance(&path, &label, "LABEL", None, 100, 96, None)?;
            files.push(path);
        }
        Ok(files)
    }

    /// One instance of `img` in `t` px frames; `half` 0 or 1 writes only that half of them.
    #[allow(clippy::too_many_arguments)] // an instance: image, kind, scale, number, frames, part
    fn write_instance(
        &self,
        path: &Path,
        img: &RgbImage,
        kind: &str,
        mpp: Option<f64>,
        number: u32,
        t: u32,
        half: Option<usize>,
    ) -> std::io::Result<()> {
        let frames: Vec<Vec<u8>> = tiles(img, t).map(|tile| encode(&tile, self.coding).0).collect();
        let across = img.width().div_ceil(t);
        let mut order: Vec<usize> = (0..frames.len()).collect();
        if self.sparse {
            order.pop();
            order.reverse();
        }
        let cut = order.len() / 2;
        let first_frame = if half == Some(1) { cut } else { 0 };
        match half {
            Some(0) => order.truncate(cut),
            Some(_) => drop(order.drain(..cut)),
            None => {}
        }
        let (ts, photometric) = match self.coding {
            Coding::Raw => (EXPLICIT_LITTLE, "RGB"),
            Coding::Jpeg { ycbcr: true, shared_tables: false } => (JPEG_BASELINE, "YBR_FULL_422"),
            Coding::Jpeg { ycbcr: false, shared_tables: false } => (JPEG_BASELINE, "RGB"),
            other => panic!("DICOM frames are not written as {other:?}"),
        };
        let mut o = InMemDicomObject::new_empty();
        let mut put = |tag, vr, value: PrimitiveValue| {
            o.put(DataElement::new(tag, vr, value));
        };
        put(tags::SOP_CLASS_UID, VR::UI, WSI_SOP_CLASS.into());
        put(tags::SOP_INSTANCE_UID, VR::UI, format!("2.25.1002{number}").into());
        put(tags::STUDY_INSTANCE_UID, VR::UI, STUDY_UID.into());
        put(tags::SERIES_INSTANCE_UID, VR::UI, SERIES_UID.into());
        put(tags::MODALITY, VR::CS, "SM".into());
        put(tags::INSTANCE_NUMBER, VR::IS, number.to_string().into());
        put(tags::IMAGE_TYPE, VR::CS, dicom_value!(Strs, ["ORIGINAL", "PRIMARY", kind, "NONE"]));
        put(tags::SAMPLES_PER_PIXEL, VR::US, dicom_value!(U16, [3]));
        put(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, photometric.into());
        put(tags::PLANAR_CONFIGURATION, VR::US, dicom_value!(U16, [0]));
        put(tags::NUMBER_OF_FRAMES, VR::IS, order.len().to_string().into());
        put(tags::ROWS, VR::US, dicom_value!(U16, [t as u16]));
        put(tags::COLUMNS, VR::US, dicom_value!(U16, [t as u16]));
        put(tags::BITS_ALLOCATED, VR::US, dicom_value!(U16, [8]));
        put(tags::BITS_STORED, VR::US, dicom_value!(U16, [8]));
        put(tags::HIGH_BIT, VR::US, dicom_value!(U16, [7]));
        put(tags::PIXEL_REPRESENTATION, VR::US, dicom_value!(U16, [0]));
        put(tags::TOTAL_PIXEL_MATRIX_COLUMNS, VR::UL, dicom_value!(U32, [img.width()]));
        put(tags::TOTAL_PIXEL_MATRIX_ROWS, VR::UL, dicom_value!(U32, [img.height()]));
        let organisation = if self.sparse { "TILED_SPARSE" } else { "TILED_FULL" };
        put(tags::DIMENSION_ORGANIZATION_TYPE, VR::CS, organisation.into());
        if let (Some(part), false) = (half, self.sparse) {
            put(tags::CONCATENATION_UID, VR::UI, "2.25.1003".into());
            put(tags::SOP_INSTANCE_UID_OF_CONCATENATION_SOURCE, VR::UI, "2.25.1004".into());
            put(tags::CONCATENATION_FRAME_OFFSET_NUMBER, VR::UL, dicom_value!(U32, [first_frame as u32]));
            put(tags::IN_CONCATENATION_NUMBER, VR::US, dicom_value!(U16, [part as u16 + 1]));
            put(tags::IN_CONCATENATION_TOTAL_NUMBER, VR::US, dicom_value!(U16, [2]));
        }
        if let Some(m) = mpp {
            let mm = format!("{:.8}", m / 1000.0);
            let mut measures = InMemDicomObject::new_empty();
            measures.put(DataElement::new(tags::PIXEL_SPACING, VR::DS, dicom_value!(Strs, [mm.clone(), mm])));
            let mut shared = InMemDicomObject::new_empty();
            shared.put(DataElement::new(tags::PIXEL_MEASURES_SEQUENCE, VR::SQ, DataSetSequence::from(vec![measures])));
            o.put(DataElement::new(
                tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(vec![shared]),
            ));
        }
        if self.sparse {
            let per_frame = order.iter().map(|&k| {
                let (col, row) = ((k as u32 % across) * t + 1, (k as u32 / across) * t + 1);
                let mut position = InMemDicomObject::new_empty();
                position.put(DataElement::new(
                    tags::COLUMN_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX,
                    VR::SL,
                    dicom_value!(I32, [col as i32]),
                ));
                position.put(DataElement::new(
                    tags::ROW_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX,
                    VR::SL,
                    dicom_value!(I32, [row as i32]),
                ));
                let mut item = InMemDicomObject::new_empty();
                item.put(DataElement::new(
                    tags::PLANE_POSITION_SLIDE_SEQUENCE,
                    VR::SQ,
                    DataSetSequence::from(vec![position]),
                ));
                item
            });
            o.put(DataElement::new(
                tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(per_frame.collect::<Vec<_>>()),
            ));
        }
        if ts == JPEG_BASELINE {
            let fragments: Vec<Vec<u8>> = order.iter().map(|&k| even(frames[k].clone())).collect();
            o.put(DataElement::new(tags::PIXEL_DATA, VR::OB, PixelFragmentSequence::new(Vec::<u32>::new(), fragments)));
        } else {
            let pixels: Vec<u8> = even(order.iter().flat_map(|&k| frames[k].iter().copied()).collect());
            o.put(DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(pixels)));
        }
        let file = o.with_meta(FileMetaTableBuilder::new().transfer_syntax(ts)).map_err(std::io::Error::other)?;
        file.write_to_file(path).map_err(std::io::Error::other)
    }
}

/// `bytes` padded to an even length, as DICOM values are.
fn even(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    bytes
}
