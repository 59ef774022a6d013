//! `embed-slides`: every slide's patch features (a folder of `.h5`, from `embed --slides`, CLAM or
//! TRIDENT) through a slide encoder, checked against its input contract, into one `.h5` of slide
//! embeddings (`features` S × D float32, `slide_ids`, attributes saying how it was made).

use std::path::{Path, PathBuf};

use hdf5_metno::types::VarLenUnicode;
use patchtcga_engine::LearnError;
use patchtcga_features::slide_features::read_coords;

use crate::encoder::{FeaturesMade, PatchFeatures, SlideEncoder, SlideEncoderKind};

/// One embedding per slide, and how they were made.
#[derive(Debug, Clone, PartialEq)]
pub struct SlideEmbeddings {
    /// Slide ids (the feature files' stems), in row order.
    pub slides: Vec<String>,
    /// S × `width` values, row-major.
    pub features: Vec<f32>,
    pub width: usize,
    /// The slide encoder (`--encoder`).
    pub encoder: String,
    /// MD5 of its weight file (empty for mean pooling).
    pub weights_md5: String,
    /// The patch encoder the features came from, when their files say.
    pub patch_encoder: String,
}

/// The `.h5` files of a folder, sorted by name; an empty folder is refused.
pub fn feature_files(dir: &Path) -> Result<Vec<PathBuf>, LearnError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| LearnError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "h5"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(LearnError::Config(format!(
            "{}: no .h5 patch features (write them with `patchtcga embed --slides`, CLAM or TRIDENT)",
            dir.display()
        )));
    }
    Ok(files)
}

/// What `path` records of how its features were made (attributes of `embed --slides` on the
/// file, CLAM's and TRIDENT's on `coords`).
pub fn features_made(path: &Path) -> Result<FeaturesMade, LearnError> {
    let file = hdf5_metno::File::open(path)
        .map_err(|e| LearnError::Config(format!("{}: not a readable HDF5 file ({e})", path.display())))?;
    let coords = file.dataset("coords").ok();
    let number = |o: &hdf5_metno::Location, k: &str| o.attr(k).and_then(|a| a.read_scalar::<f64>()).ok();
    let on_coords = |k: &str| coords.as_ref().and_then(|c| number(c, k));
    Ok(FeaturesMade {
        patch_encoder: file.attr("model").and_then(|a| a.read_scalar::<VarLenUnicode>()).ok().map(|v| v.to_string()),
        mpp: number(&file, "mpp"),
        patch_size: number(&file, "patch_size").or_else(|| on_coords("patch_size")).map(|s| s.round() as u32),
        magnification: on_coords("target_magnification"),
        footprint: on_coords("patch_size_level0").map(|s| s.round() as i64),
    })
}

/// Embeds every slide of `features` (a folder of `.h5`) with `encoder` (`kind` with the weights
/// at `weights`), each file checked against the encoder's contract as it comes. `footprint`
/// (a patch's level-0 side) stands in for files that do not record it.
pub fn embed_folder(
    (encoder, kind, weights): (&SlideEncoder, SlideEncoderKind, Option<&Path>),
    features: &Path,
    footprint: Option<i64>,
    progress: &indicatif::ProgressBar,
) -> Result<SlideEmbeddings, LearnError> {
    let files = feature_files(features)?;
    let weights_md5 = match weights {
        Some(w) => patchtcga_dataset::archive::md5_file(w, &indicatif::ProgressBar::hidden())?,
        None => String::new(),
    };
    let made: Vec<FeaturesMade> = files.iter().map(|f| features_made(f)).collect::<Result<_, _>>()?;
    progress.set_length(files.len() as u64);
    let mut out = SlideEmbeddings {
        slides: Vec::with_capacity(files.len()),
        features: Vec::new(),
        width: 0,
        encoder: kind.name().to_owned(),
        weights_md5,
        patch_encoder: made.iter().find_map(|m| m.patch_encoder.clone()).unwrap_or_default(),
    };
    for (file, made) in files.iter().zip(&made) {
        let x = patchtcga_mil::bags::read_features(file)?;
        let width = x.size()[1];
        if let (Some(contract), Some(w)) = (kind.contract(), encoder.input_width()) {
            contract.check(kind, file, (width, w), made)?;
        }
        let coords = match kind.needs_coords() {
            true => read_coords(file)?.into_iter().map(|(x, y)| [x as i64, y as i64]).collect(),
            false => Vec::new(),
        };
        let patches = PatchFeatures { features: x, coords, footprint: made.footprint.or(footprint) };
        let z = encoder.encode(&patches).map_err(|e| LearnError::Config(format!("{}: {e}", file.display())))?;
        let z = Vec::<f32>::try_from(z.contiguous())?;
        if out.width != 0 && z.len() != out.width {
            return Err(LearnError::Config(format!(
                "{}: {width}-wide features, unlike the slides before it; one folder holds one patch encoder's features",
                file.display()
            )));
        }
        out.width = z.len();
        out.features.extend(z);
        out.slides.push(file.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned());
        progress.inc(1);
    }
    Ok(out)
}

impl SlideEmbeddings {
    /// Writes them atomically to `path`: `features` (S × D float32), `slide_ids`, and the
    /// attributes `encoder`, `weights_md5`, `patch_encoder`.
    pub fn write(&self, path: &Path) -> Result<(), LearnError> {
        let bad = |e: hdf5_metno::Error| LearnError::Config(format!("{}: cannot write: {e}", path.display()));
        let text = |s: &str| s.parse::<VarLenUnicode>().map_err(|e| LearnError::Config(format!("{s:?}: {e}")));
        let write = |tmp: &Path| -> Result<(), LearnError> {
            let file = hdf5_metno::File::create(tmp).map_err(bad)?;
            let rows = ndarray::Array2::from_shape_vec((self.slides.len(), self.width), self.features.clone())
                .map_err(|e| LearnError::Config(e.to_string()))?;
            file.new_dataset_builder().with_data(&rows).create("features").map_err(bad)?;
            let ids: Vec<VarLenUnicode> = self.slides.iter().map(|s| text(s)).collect::<Result<_, _>>()?;
            file.new_dataset_builder().with_data(&ids).create("slide_ids").map_err(bad)?;
            for (k, v) in
                [("encoder", &self.encoder), ("weights_md5", &self.weights_md5), ("patch_encoder", &self.patch_encoder)]
            {
                let v = text(v)?;
                file.new_attr::<VarLenUnicode>().create(k).and_then(|a| a.write_scalar(&v)).map_err(bad)?;
            }
            Ok(())
        };
        patchtcga_atomic::write_with(path, write, |e| LearnError::io(path, e))
    }

    /// Reads a file [`SlideEmbeddings::write`] wrote.
    pub fn read(path: &Path) -> Result<Self, LearnError> {
        let bad = |what: String| LearnError::Config(format!("{}: {what}", path.display()));
        let file = hdf5_metno::File::open(path).map_err(|e| bad(format!("not a readable HDF5 file ({e})")))?;
        let ds = file.dataset("features").map_err(|_| bad("no `features` (write it with `embed-slides`)".into()))?;
        let shape = ds.shape();
        let features: Vec<f32> = ds.read_raw().map_err(|e| bad(format!("`features`: {e}")))?;
        let slides: Vec<String> = file
            .dataset("slide_ids")
            .and_then(|d| d.read_raw::<VarLenUnicode>())
            .map_err(|_| bad("no `slide_ids` beside `features`".into()))?
            .iter()
            .map(|s| s.to_string())
            .collect();
        if shape.len() != 2 || shape[0] != slides.len() {
            return Err(bad(format!("`features` is {shape:?} for {} slide ids", slides.len())));
        }
        let attr = |k: &str| file.attr(k).and_then(|a| a.read_scalar::<VarLenUnicode>()).map(|v| v.to_string());
        Ok(Self {
            slides,
            features,
            width: shape[1],
            encoder: attr("encoder").unwrap_or_default(),
            weights_md5: attr("weights_md5").unwrap_or_default(),
            patch_encoder: attr("patch_encoder").unwrap_or_default(),
        })
    }
}
