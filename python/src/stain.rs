//! `StainNormalizer`: the build's stain normalisers (Reinhard, Macenko, Vahadane) from Python.

use clap::ValueEnum;
use numpy::PyReadonlyArray3;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use patchtcga_augment::StainMethod;

/// A stain normaliser fitted to a target image, as `build --stain-normalize` fits it.
#[pyclass(frozen, module = "patchtcga._native")]
#[derive(Clone)]
pub struct StainNormalizer {
    pub(crate) inner: patchtcga_augment::StainNormalizer,
}

/// An (H, W, 3) `uint8` array as an image.
pub(crate) fn rgb_image(array: &PyReadonlyArray3<u8>) -> PyResult<image::RgbImage> {
    let a = array.as_array();
    let (h, w, c) = a.dim();
    if c != 3 {
        return Err(PyValueError::new_err(format!("an image is an (H, W, 3) uint8 array, got {:?}", a.shape())));
    }
    let raw: Vec<u8> = a.iter().copied().collect();
    image::RgbImage::from_raw(w as u32, h as u32, raw).ok_or_else(|| PyValueError::new_err("image size overflows"))
}

#[pymethods]
impl StainNormalizer {
    /// Fits `method` ("macenko", "reinhard" or "vahadane") to `target`, an (H, W, 3) `uint8` array.
    #[new]
    fn new(method: &str, target: PyReadonlyArray3<u8>) -> PyResult<Self> {
        let method = StainMethod::from_str(method, true).map_err(|_| {
            PyValueError::new_err(format!("unknown stain method {method:?} (macenko, reinhard or vahadane)"))
        })?;
        let target = rgb_image(&target)?;
        let inner = patchtcga_augment::StainNormalizer::fit(method, &target)
            .ok_or_else(|| PyValueError::new_err("the target holds too little stain to fit a normaliser to"))?;
        Ok(Self { inner })
    }

    /// `image` ((H, W, 3) `uint8`) normalised; returned as it is when it holds too little stain.
    fn __call__<'py>(&self, py: Python<'py>, image: PyReadonlyArray3<u8>) -> PyResult<Bound<'py, numpy::PyArray3<u8>>> {
        let img = rgb_image(&image)?;
        let out = py.detach(|| self.inner.apply(img));
        let (w, h) = out.dimensions();
        crate::array3(py, h, w, 3, out.into_raw())
    }

    /// The fitted values as JSON (what a build records in its settings).
    fn to_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.inner).map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// A normaliser from [`to_json`](Self::to_json)'s text.
    #[staticmethod]
    fn from_json(text: &str) -> PyResult<Self> {
        let inner =
            serde_json::from_str(text).map_err(|e| PyValueError::new_err(format!("not a stain normaliser: {e}")))?;
        Ok(Self { inner })
    }

    fn __repr__(&self) -> String {
        format!("StainNormalizer({})", self.to_json().unwrap_or_default())
    }
}
