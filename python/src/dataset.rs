//! `PatchFolder`'s native side: a patch dataset in one of the release's layouts, and a view
//! recipe's views of each sample, the pixels the command-line loader makes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::ValueEnum;
use numpy::ndarray::{Array2, Array3};
use numpy::{PyArray2, PyArray3};
use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;

use patchtcga_augment::{normalize, Preset, Recipe, IMAGENET_MEAN, IMAGENET_STD};
use patchtcga_dataset::{DatasetKind, Index, Split};
use patchtcga_loader::{pcam_samples, sample_views, samples, ImageSource, Sample};

/// A sample's views, and the label mask cut as the first was.
type Views<'py> = (Bound<'py, PyList>, Option<Bound<'py, PyArray2<u8>>>);

/// A patch dataset in one of the release's layouts (PTCGA200, PCam200, segPANDA200), read with
/// a view recipe of pretraining or evaluation.
#[pyclass(frozen, module = "patchtcga._native")]
pub struct PatchFolder {
    samples: Vec<Sample>,
    names: Vec<String>,
    recipe: Recipe,
    seed: u64,
    epoch: AtomicU64,
    mean: [f32; 3],
    std: [f32; 3],
    layout: &'static str,
}

fn parse<T: ValueEnum>(what: &str, name: &str) -> PyResult<T> {
    T::from_str(name, true).map_err(|_| {
        let known: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|v| v.get_name().to_string())
            .collect();
        PyValueError::new_err(format!("unknown {what} {name:?} (one of {})", known.join(", ")))
    })
}

#[pymethods]
impl PatchFolder {
    /// Scans `root` (layout found, or given as "ptcga200", "pcam200", "segpanda200"; "pcam" for
    /// the original PatchCamelyon `.h5` files), keeping only `split` ("train", "val", "test";
    /// for "pcam" "train", "valid" or "test", required) when given; views by `recipe` ("eval", "supervised",
    /// "simclr", "byol", "dino", "mae", "segmentation", "none") at side `size`.
    #[new]
    #[pyo3(signature = (root, recipe = "eval", size = 224, layout = None, split = None, seed = 0, local_crops = 10, mean = IMAGENET_MEAN, std = IMAGENET_STD))]
    #[allow(clippy::too_many_arguments)] // Python keyword arguments
    fn new(
        root: PathBuf,
        recipe: &str,
        size: u32,
        layout: Option<&str>,
        split: Option<&str>,
        seed: u64,
        local_crops: usize,
        mean: [f32; 3],
        std: [f32; 3],
    ) -> PyResult<Self> {
        let preset = parse::<Preset>("recipe", recipe)?;
        let (samples, names, layout) = match layout {
            // The original PatchCamelyon files: `<split>_x.h5` / `_y.h5`, split train, valid or test.
            Some("pcam") => {
                let split =
                    split.ok_or_else(|| PyValueError::new_err("layout \"pcam\" needs split= train, valid or test"))?;
                let samples = pcam_samples(&root, split).map_err(|e| PyValueError::new_err(e.to_string()))?;
                let names = samples.iter().map(|s| ["normal", "tumor"][(s.label == 1) as usize].to_string()).collect();
                (samples, names, "pcam")
            }
            _ => {
                let kind = layout.map(|l| parse::<DatasetKind>("layout", l)).transpose()?;
                let mut index = Index::scan(&root, kind).map_err(|e| PyValueError::new_err(e.to_string()))?;
                if let Some(split) = split {
                    let split = Some(split.parse::<Split>().map_err(PyValueError::new_err)?);
                    index.entries.retain(|e| e.split == split);
                }
                let names = index.entries.iter().map(|e| e.label_name.clone()).collect();
                let samples = samples(&index, None).map_err(|e| PyValueError::new_err(e.to_string()))?;
                (samples, names, index.kind.name())
            }
        };
        Ok(Self {
            samples,
            names,
            recipe: Recipe::preset(preset, size, local_crops),
            seed,
            epoch: AtomicU64::new(0),
            mean,
            std,
            layout,
        })
    }

    fn __len__(&self) -> usize {
        self.samples.len()
    }

    /// The layout found or given.
    #[getter]
    fn layout(&self) -> &'static str {
        self.layout
    }

    /// Class ids, in dataset order.
    #[getter]
    fn labels(&self) -> Vec<i64> {
        self.samples.iter().map(|s| s.label).collect()
    }

    /// The folder each label came from (organ, `normal`/`tumor`, grade).
    #[getter]
    fn label_names(&self) -> Vec<String> {
        self.names.clone()
    }

    /// Image files, in dataset order.
    #[getter]
    fn paths(&self) -> Vec<PathBuf> {
        self.samples.iter().map(|s| s.image.path().to_path_buf()).collect()
    }

    /// Number of views each sample gives.
    #[getter]
    fn views_per_sample(&self) -> usize {
        self.recipe.views.len()
    }

    /// Sets the epoch whose augmentation draws follow (as `DistributedSampler.set_epoch`).
    fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Relaxed);
    }

    /// Sample `index`'s views: normalised CHW `float32` arrays (HWC `uint8` with
    /// `normalized=False`), and its label mask (H, W) `uint8` where the layout has masks.
    #[pyo3(signature = (index, normalized = true))]
    fn views<'py>(&self, py: Python<'py>, index: usize, normalized: bool) -> PyResult<Views<'py>> {
        let sample = self
            .samples
            .get(index)
            .ok_or_else(|| PyIndexError::new_err(format!("sample {index} of a dataset of {}", self.samples.len())))?;
        let epoch = self.epoch.load(Ordering::Relaxed);
        let made = crate::guarded(sample.image.path(), || {
            py.detach(|| sample_views(sample, &self.recipe, self.seed, epoch, index))
                .map_err(|e| PyValueError::new_err(e.to_string()))
        })?;
        let views = PyList::empty(py);
        for view in &made.views {
            let (w, h) = view.dimensions();
            if normalized {
                let mut out = vec![0f32; (3 * w * h) as usize];
                normalize(view, self.mean, self.std, &mut out).map_err(|e| PyValueError::new_err(e.to_string()))?;
                let a = Array3::from_shape_vec((3, h as usize, w as usize), out)
                    .map_err(|e| PyValueError::new_err(e.to_string()))?;
                views.append(PyArray3::from_owned_array(py, a))?;
            } else {
                views.append(crate::array3(py, h, w, 3, view.as_raw().clone())?)?;
            }
        }
        let mask = match made.mask {
            Some(m) => {
                let (w, h) = m.dimensions();
                let a = Array2::from_shape_vec((h as usize, w as usize), m.into_raw())
                    .map_err(|e| PyValueError::new_err(e.to_string()))?;
                Some(PyArray2::from_owned_array(py, a))
            }
            None => None,
        };
        Ok((views, mask))
    }

    fn __repr__(&self) -> String {
        let root = match self.samples.first().map(|s| &s.image) {
            Some(ImageSource::File(p)) | Some(ImageSource::H5 { path: p, .. }) => p.display().to_string(),
            None => String::new(),
        };
        format!("PatchFolder({} samples, {}, first {root:?})", self.samples.len(), self.recipe.preset)
    }
}
