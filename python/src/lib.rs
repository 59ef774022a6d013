//! `patchtcga._native`: the Rust side of the Python package — slides, batch reads with the GIL
//! released, tissue masks and grids, dataset views; errors become Python exceptions naming the file.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use numpy::ndarray::{Array2, Array3, Array4};
use numpy::{PyArray2, PyArray3, PyArray4, PyReadonlyArray2};
use pyo3::exceptions::{PyException, PyFileNotFoundError, PyIndexError, PyValueError};
use pyo3::prelude::*;
use rayon::prelude::*;

use patchtcga_augment::{normalize, IMAGENET_MEAN, IMAGENET_STD};
use patchtcga_slide::{PatchGeometry, Reader, Roi, SlideError, SlideOptions, TissueGrid, TissueMask, TissueParams};

mod build;
mod dataset;
mod stain;

pyo3::create_exception!(patchtcga, OpenSlideError, PyException, "A slide could not be opened or read.");
pyo3::create_exception!(
    patchtcga,
    OpenSlideUnsupportedFormatError,
    OpenSlideError,
    "The file is not a slide any reader serves."
);

/// The Python exception for a slide error: the message the command line prints.
fn slide_err(e: SlideError) -> PyErr {
    let message = e.to_string();
    match e {
        SlideError::Missing { .. } => PyFileNotFoundError::new_err(message),
        SlideError::Unreadable { .. } => OpenSlideUnsupportedFormatError::new_err(message),
        SlideError::Parameter(_) => PyValueError::new_err(message),
        _ => OpenSlideError::new_err(message),
    }
}

/// Runs `work`, turning a Rust panic into an exception naming `path` instead of letting it
/// cross into Python.
fn guarded<T>(path: &std::path::Path, work: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|payload| {
        let cause = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("unknown cause");
        Err(OpenSlideError::new_err(format!("{}: internal error: {cause}", path.display())))
    })
}

/// Level-0 corners from an (N, 2) array of x, y.
fn corners(coords: &PyReadonlyArray2<i64>) -> PyResult<Vec<(i64, i64)>> {
    let a = coords.as_array();
    if a.ncols() != 2 {
        return Err(PyValueError::new_err(format!("coords must have shape (N, 2), got {:?}", a.shape())));
    }
    Ok(a.rows().into_iter().map(|r| (r[0], r[1])).collect())
}

/// Non-negative level-0 corners, refused in words otherwise.
fn unsigned(corners: &[(i64, i64)]) -> PyResult<Vec<(u32, u32)>> {
    corners
        .iter()
        .map(|&(x, y)| match (u32::try_from(x), u32::try_from(y)) {
            (Ok(x), Ok(y)) => Ok((x, y)),
            _ => Err(PyValueError::new_err(format!("corner ({x}, {y}) is outside the slide's level-0 range"))),
        })
        .collect()
}

/// Threads of the batch reads (`set_threads`; 0: one per core).
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// This process's reading pool. A pool is never shared across `fork` (PyTorch's DataLoader
/// workers): a child finds the parent's pool id and builds its own, as the parent's threads do
/// not exist in it.
fn pool() -> Result<Arc<rayon::ThreadPool>, SlideError> {
    static POOL: Mutex<Option<(u32, usize, Arc<rayon::ThreadPool>)>> = Mutex::new(None);
    let threads = THREADS.load(Ordering::Relaxed);
    let mut slot = POOL.lock().unwrap_or_else(|p| p.into_inner());
    match &*slot {
        Some((pid, n, pool)) if *pid == std::process::id() && *n == threads => Ok(pool.clone()),
        _ => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("patchtcga-read-{i}"))
                .build()
                .map_err(|e| SlideError::Parameter(format!("cannot start reading threads: {e}")))?;
            let pool = Arc::new(pool);
            *slot = Some((std::process::id(), threads, pool.clone()));
            Ok(pool)
        }
    }
}

/// Sets how many threads batch reads use (0: one per core).
#[pyfunction]
fn set_threads(threads: usize) {
    THREADS.store(threads, Ordering::Relaxed);
}

/// Reads `n` images of `per` bytes each on the reading pool, into one buffer.
fn read_all(
    n: usize,
    per: usize,
    read: impl Fn(usize) -> Result<Vec<u8>, SlideError> + Sync + Send,
) -> Result<Vec<u8>, SlideError> {
    let mut out = vec![0u8; n * per];
    pool()?.install(|| {
        out.par_chunks_mut(per.max(1)).enumerate().try_for_each(|(i, chunk)| {
            chunk.copy_from_slice(&read(i)?);
            Ok::<(), SlideError>(())
        })
    })?;
    Ok(out)
}

/// An open whole-slide image (patchtcga's native reader where it serves the file, OpenSlide for
/// the rest).
#[pyclass(frozen, module = "patchtcga._native")]
struct Slide {
    inner: patchtcga_slide::Slide,
}

impl Slide {
    fn path(&self) -> &std::path::Path {
        self.inner.path()
    }
}

#[pymethods]
impl Slide {
    /// Opens `path`; `reader` is "auto", "native" or "openslide"; `mpp` overrides the slide's
    /// µm/px; `tile_cache_mb` bounds the decoded tiles kept.
    #[new]
    #[pyo3(signature = (path, reader = "auto", mpp = None, tile_cache_mb = patchtcga_slide::DEFAULT_TILE_CACHE_MB))]
    fn new(py: Python<'_>, path: PathBuf, reader: &str, mpp: Option<f64>, tile_cache_mb: u64) -> PyResult<Self> {
        let reader: Reader = reader.parse().map_err(PyValueError::new_err)?;
        let options = SlideOptions { mpp_override: mpp, reader, tile_cache_mb };
        let inner = guarded(&path, || {
            py.detach(|| patchtcga_slide::Slide::open_unmeasured(&path, &options)).map_err(slide_err)
        })?;
        Ok(Self { inner })
    }

    /// The file this slide was opened from.
    #[getter]
    fn filename(&self) -> PathBuf {
        self.path().to_path_buf()
    }

    /// Which reader serves the slide.
    #[getter]
    fn reader(&self) -> String {
        self.inner.served_by().to_string()
    }

    /// Level-0 (µm/px x, µm/px y), or None where the slide states none.
    #[getter]
    fn mpp(&self) -> Option<(f64, f64)> {
        self.inner.measured_mpp().ok().map(|m| (m.x, m.y))
    }

    /// Where the µm/px came from: "vendor", "tiff-resolution", "override" or "missing".
    #[getter]
    fn mpp_source(&self) -> String {
        self.inner.mpp().source.to_string()
    }

    /// Number of pyramid levels.
    #[getter]
    fn level_count(&self) -> u32 {
        self.inner.level_count()
    }

    /// (width, height) of each level.
    #[getter]
    fn level_dimensions(&self) -> Vec<(u32, u32)> {
        (0..self.inner.level_count()).map(|l| self.inner.level_dimensions(l)).collect()
    }

    /// Level-0 pixels per pixel of each level.
    #[getter]
    fn level_downsamples(&self) -> Vec<f64> {
        (0..self.inner.level_count()).map(|l| self.inner.level_downsample(l)).collect()
    }

    /// The slide's properties (OpenSlide's keys, and `patchtcga.*`).
    #[getter]
    fn properties(&self) -> std::collections::BTreeMap<String, String> {
        self.inner.properties()
    }

    /// The ICC colour profile the slide embeds, or None.
    #[getter]
    fn icc_profile<'py>(&self, py: Python<'py>) -> Option<Bound<'py, pyo3::types::PyBytes>> {
        self.inner.icc_profile().map(|b| pyo3::types::PyBytes::new(py, b))
    }

    /// Names of the associated images (label, macro, thumbnail…).
    #[getter]
    fn associated_image_names(&self) -> Vec<String> {
        self.inner.associated_image_names()
    }

    /// The associated image `name` as an (H, W, 4) RGBA array.
    fn associated_image<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyArray3<u8>>> {
        let image = guarded(self.path(), || py.detach(|| self.inner.associated_image(name)).map_err(slide_err))?;
        rgba_array(py, image)
    }

    /// Reads `width`×`height` pixels of `level` from level-0 corner (`x`, `y`), which may lie
    /// outside the slide, as an (H, W, 3) RGB array, white where the slide has no pixels.
    fn read_region<'py>(
        &self,
        py: Python<'py>,
        x: i64,
        y: i64,
        level: u32,
        width: u32,
        height: u32,
    ) -> PyResult<Bound<'py, PyArray3<u8>>> {
        self.check_level(level)?;
        let image = guarded(self.path(), || {
            py.detach(|| match (u32::try_from(x), u32::try_from(y)) {
                (Ok(x), Ok(y)) => self.inner.read_rgb(level, x, y, width, height),
                _ => self.inner.read_rgba(level, x, y, width, height).map(|rgba| on_white(&rgba)),
            })
            .map_err(slide_err)
        })?;
        array3(py, height, width, 3, image.into_raw())
    }

    /// The same region as an (H, W, 4) straight-alpha RGBA array, transparent outside the slide
    /// (openslide-python's `read_region`, without PIL).
    fn read_region_rgba<'py>(
        &self,
        py: Python<'py>,
        x: i64,
        y: i64,
        level: u32,
        width: u32,
        height: u32,
    ) -> PyResult<Bound<'py, PyArray3<u8>>> {
        self.check_level(level)?;
        let image =
            guarded(self.path(), || py.detach(|| self.inner.read_rgba(level, x, y, width, height)).map_err(slide_err))?;
        rgba_array(py, image)
    }

    /// Reads a `width`×`height` RGB region of `level` at each level-0 corner of `coords`
    /// ((N, 2) integers, x then y) on the thread pool, without the GIL: an (N, H, W, 3) array.
    fn read_regions<'py>(
        &self,
        py: Python<'py>,
        coords: PyReadonlyArray2<i64>,
        level: u32,
        width: u32,
        height: u32,
    ) -> PyResult<Bound<'py, PyArray4<u8>>> {
        self.check_level(level)?;
        let at = unsigned(&corners(&coords)?)?;
        let per = width as usize * height as usize * 3;
        let data = guarded(self.path(), || {
            py.detach(|| {
                read_all(at.len(), per, |i| Ok(self.inner.read_rgb(level, at[i].0, at[i].1, width, height)?.into_raw()))
            })
            .map_err(slide_err)
        })?;
        batch_array(py, at.len(), height, width, data)
    }

    /// Patches of `size` px at `mpp` µm/px whose level-0 top-left corners are `coords` ((N, 2)),
    /// resampled (Lanczos-3) from the level just finer, as `embed --slides` reads them: an
    /// (N, size, size, 3) array.
    #[pyo3(signature = (coords, mpp, size, stain = None))]
    fn read_patches<'py>(
        &self,
        py: Python<'py>,
        coords: PyReadonlyArray2<i64>,
        mpp: f64,
        size: u32,
        stain: Option<PyRef<'py, stain::StainNormalizer>>,
    ) -> PyResult<Bound<'py, PyArray4<u8>>> {
        let geometry = self.geometry(mpp, size)?;
        let stain = stain.map(|s| (*s).clone());
        let at = unsigned(&corners(&coords)?)?;
        let per = size as usize * size as usize * 3;
        let data = guarded(self.path(), || {
            py.detach(|| read_all(at.len(), per, |i| Ok(self.patch(&geometry, at[i], stain.as_ref())?.into_raw())))
                .map_err(slide_err)
        })?;
        batch_array(py, at.len(), size, size, data)
    }

    /// The patches of [`read_patches`](Self::read_patches), as the network takes them: an
    /// (N, 3, size, size) `float32` array scaled to [0, 1] and standardised by `mean` and `std`.
    #[pyo3(signature = (coords, mpp, size, mean = IMAGENET_MEAN, std = IMAGENET_STD, stain = None))]
    #[allow(clippy::too_many_arguments)] // Python keyword arguments
    fn read_patches_normalized<'py>(
        &self,
        py: Python<'py>,
        coords: PyReadonlyArray2<i64>,
        mpp: f64,
        size: u32,
        mean: [f32; 3],
        std: [f32; 3],
        stain: Option<PyRef<'py, stain::StainNormalizer>>,
    ) -> PyResult<Bound<'py, PyArray4<f32>>> {
        let geometry = self.geometry(mpp, size)?;
        let stain = stain.map(|s| (*s).clone());
        let at = unsigned(&corners(&coords)?)?;
        let per = 3 * size as usize * size as usize;
        let data = guarded(self.path(), || {
            py.detach(|| {
                let mut out = vec![0f32; at.len() * per];
                pool()?.install(|| {
                    out.par_chunks_mut(per.max(1)).zip(&at).try_for_each(|(chunk, &(x, y))| {
                        let patch = self.patch(&geometry, (x, y), stain.as_ref())?;
                        normalize(&patch, mean, std, chunk).map_err(|e| SlideError::Parameter(e.to_string()))
                    })
                })?;
                Ok(out)
            })
            .map_err(slide_err)
        })?;
        let s = size as usize;
        let array =
            Array4::from_shape_vec((at.len(), 3, s, s), data).map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(PyArray4::from_owned_array(py, array))
    }

    /// A low-resolution RGB view of the whole slide with about `downsample` level-0 pixels per
    /// pixel: (array, exact downsample).
    fn overview<'py>(&self, py: Python<'py>, downsample: f64) -> PyResult<(Bound<'py, PyArray3<u8>>, f64)> {
        if !(downsample.is_finite() && downsample >= 1.0) {
            return Err(PyValueError::new_err(format!("downsample must be ≥ 1, got {downsample}")));
        }
        let (image, ds) = guarded(self.path(), || py.detach(|| self.inner.overview(downsample)).map_err(slide_err))?;
        let (w, h) = image.dimensions();
        Ok((array3(py, h, w, 3, image.into_raw())?, ds))
    }

    /// The tissue mask the commands use (saturation + Otsu, pen ink taken out unless
    /// `keep_ink`): ((H, W) bool array, level-0 pixels per mask pixel).
    #[pyo3(signature = (mask_mpp = 8.0, keep_ink = false))]
    fn tissue_mask<'py>(
        &self,
        py: Python<'py>,
        mask_mpp: f64,
        keep_ink: bool,
    ) -> PyResult<(Bound<'py, PyArray2<bool>>, f64)> {
        self.measured()?;
        let params = TissueParams { mask_mpp, keep_ink, ..TissueParams::default() };
        let mask = guarded(self.path(), || py.detach(|| TissueMask::detect(&self.inner, &params)).map_err(slide_err))?;
        let (w, h) = mask.mask().dimensions();
        let values: Vec<bool> = mask.mask().as_raw().iter().map(|&v| v > 0).collect();
        let array = Array2::from_shape_vec((h as usize, w as usize), values)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok((PyArray2::from_owned_array(py, array), mask.downsample()))
    }

    /// The tissue grid `embed --slides` embeds: level-0 top-left corners ((N, 2) int64, row by
    /// row) of the non-overlapping `size`-px patches at `mpp` µm/px holding at least
    /// `min_tissue` tissue (only inside the QuPath GeoJSON region `roi` when given).
    #[pyo3(signature = (mpp, size, min_tissue = 0.5, roi = None))]
    fn tissue_grid<'py>(
        &self,
        py: Python<'py>,
        mpp: f64,
        size: u32,
        min_tissue: f64,
        roi: Option<PathBuf>,
    ) -> PyResult<Bound<'py, PyArray2<i64>>> {
        let geometry = self.geometry(mpp, size)?;
        let grid = guarded(self.path(), || {
            py.detach(|| {
                let roi = roi.as_ref().map(|r| Roi::load(r, &self.inner.annotation_frame())).transpose()?;
                TissueGrid::of(&self.inner, &geometry, min_tissue, roi.as_ref())
            })
            .map_err(slide_err)
        })?;
        let flat: Vec<i64> = grid.corners.iter().flat_map(|&(x, y)| [x as i64, y as i64]).collect();
        let array =
            Array2::from_shape_vec((grid.corners.len(), 2), flat).map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(PyArray2::from_owned_array(py, array))
    }

    /// The coarsest level whose downsample does not exceed `downsample`.
    fn level_for_downsample(&self, downsample: f64) -> u32 {
        self.inner.level_for_downsample(downsample)
    }

    fn __repr__(&self) -> String {
        format!("Slide({:?})", self.path().display().to_string())
    }
}

impl Slide {
    fn check_level(&self, level: u32) -> PyResult<()> {
        if level >= self.inner.level_count() {
            return Err(PyIndexError::new_err(format!(
                "{}: no level {level} (the slide has {})",
                self.path().display(),
                self.inner.level_count()
            )));
        }
        Ok(())
    }

    /// The patch at `corner`, stain-normalised when a normaliser is given (as `build` does).
    fn patch(
        &self,
        geometry: &PatchGeometry,
        corner: (u32, u32),
        stain: Option<&stain::StainNormalizer>,
    ) -> Result<image::RgbImage, SlideError> {
        let patch = self.inner.read_patch(geometry, corner.0, corner.1)?;
        Ok(match stain {
            Some(s) => s.inner.apply(patch),
            None => patch,
        })
    }

    fn measured(&self) -> PyResult<()> {
        self.inner.measured_mpp().map(|_| ()).map_err(slide_err)
    }

    fn geometry(&self, mpp: f64, size: u32) -> PyResult<PatchGeometry> {
        self.measured()?;
        PatchGeometry::resolve(Some(mpp), Some(size), None).map_err(slide_err)
    }
}

/// RGBA composited over white.
fn on_white(rgba: &image::RgbaImage) -> image::RgbImage {
    image::RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let over = |c: u8| ((c as u32 * a as u32 + 255 * (255 - a as u32) + 127) / 255) as u8;
        image::Rgb([over(r), over(g), over(b)])
    })
}

fn rgba_array(py: Python<'_>, image: image::RgbaImage) -> PyResult<Bound<'_, PyArray3<u8>>> {
    let (w, h) = image.dimensions();
    array3(py, h, w, 4, image.into_raw())
}

fn array3(py: Python<'_>, h: u32, w: u32, c: usize, data: Vec<u8>) -> PyResult<Bound<'_, PyArray3<u8>>> {
    let array =
        Array3::from_shape_vec((h as usize, w as usize, c), data).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(PyArray3::from_owned_array(py, array))
}

fn batch_array(py: Python<'_>, n: usize, h: u32, w: u32, data: Vec<u8>) -> PyResult<Bound<'_, PyArray4<u8>>> {
    let array = Array4::from_shape_vec((n, h as usize, w as usize, 3), data)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(PyArray4::from_owned_array(py, array))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Slide>()?;
    m.add_class::<dataset::PatchFolder>()?;
    m.add_class::<stain::StainNormalizer>()?;
    m.add_function(wrap_pyfunction!(set_threads, m)?)?;
    m.add_function(wrap_pyfunction!(build::build, m)?)?;
    m.add("OpenSlideError", m.py().get_type::<OpenSlideError>())?;
    m.add("OpenSlideUnsupportedFormatError", m.py().get_type::<OpenSlideUnsupportedFormatError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
