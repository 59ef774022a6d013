//! A checkpoint's tensors listed by name and shape first, then read one at a time: `torch.save`
//! zip archives (`.pth`, `pytorch_model.bin`), safetensors (memory-mapped), sharded safetensors
//! (`*.safetensors.index.json`) and Hugging Face snapshot folders. Reading one tensor at a time
//! lets a model of a billion parameters load without a second copy of its weights.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use tch::{Kind, Tensor};

use crate::pickle::{self, TensorRef, Value};
use crate::ModelError;

pub(crate) fn bad(path: &Path, cause: impl Into<String>) -> ModelError {
    ModelError::Checkpoint { path: path.to_path_buf(), cause: cause.into() }
}

/// One tensor of a checkpoint, not yet read.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its path through the nested dicts (`state_dict.module.encoder_q.conv1.weight`).
    pub name: String,
    pub shape: Vec<i64>,
    at: At,
}

#[derive(Debug, Clone)]
enum At {
    Pth(TensorRef),
    Safetensors { file: usize, kind: Kind, start: usize, end: usize },
}

/// A `.pth` zip archive, its root folder, and the storage read last (views of one storage are
/// usually listed together, so each storage is read once).
struct Archive {
    zip: zip::ZipArchive<File>,
    root: String,
    last: Option<(String, Tensor)>,
}

/// An open checkpoint: every tensor listed, each read on demand.
pub struct Checkpoint {
    path: PathBuf,
    tensors: Vec<Listed>,
    zip: Option<RefCell<Archive>>,
    maps: Vec<(PathBuf, Mmap)>,
}

impl Checkpoint {
    /// Lists the tensors of `path`: a `.pth`/`.pt`/`.bin` zip archive, a `.safetensors` file, a
    /// `*.safetensors.index.json` of shards, or a folder holding one of `model.safetensors`,
    /// `model.safetensors.index.json`, `pytorch_model.bin`.
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        if path.is_dir() {
            let names = ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"];
            let found = names.iter().map(|n| path.join(n)).find(|p| p.is_file());
            let file = found.ok_or_else(|| bad(path, format!("a folder without any of {}", names.join(", "))))?;
            return Self::open(&file);
        }
        if path.to_string_lossy().ends_with(".index.json") {
            return Self::open_shards(path);
        }
        let mut head = [0u8; 16];
        let n = File::open(path).and_then(|mut f| f.read(&mut head)).map_err(|e| bad(path, e.to_string()))?;
        let head = &head[..n];
        let mut ckpt = Self { path: path.to_path_buf(), tensors: Vec::new(), zip: None, maps: Vec::new() };
        if head.starts_with(b"PK\x03\x04") {
            ckpt.list_pth()?;
        } else if head.len() >= 9 && head[8] == b'{' {
            ckpt.map_safetensors(path, None)?;
        } else if head.starts_with(&[0x80, 0x02, 0x8a]) {
            return Err(bad(
                path,
                "a legacy (PyTorch < 1.6) torch.save file; re-save it with torch.save(obj, path) in a recent PyTorch",
            ));
        } else {
            return Err(bad(path, "neither a PyTorch zip checkpoint (.pth/.pt/.bin) nor safetensors"));
        }
        if ckpt.tensors.is_empty() {
            return Err(bad(path, "holds no tensors"));
        }
        Ok(ckpt)
    }

    /// The tensors, in file order.
    pub fn tensors(&self) -> &[Listed] {
        &self.tensors
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads one tensor (contiguous, on the CPU).
    pub fn read(&self, t: &Listed) -> Result<Tensor, ModelError> {
        match &t.at {
            At::Pth(r) => self.read_pth(&t.name, r),
            At::Safetensors { .. } => self.with_view(t, |view| view.copy()),
        }
    }

    /// Runs `f` on the tensor without copying it where the file allows (an aligned safetensors
    /// tensor is handed over as a view of the map), then gives the file's pages back, so resident
    /// memory holds one copy of the weights: the one `f` copies them into. `f` must not keep the
    /// view (nor a shallow clone of it) past its return.
    pub(crate) fn with_view<R>(&self, t: &Listed, f: impl FnOnce(&Tensor) -> R) -> Result<R, ModelError> {
        let At::Safetensors { file, kind, start, end } = &t.at else {
            return Ok(f(&self.read(t)?));
        };
        let (path, map) = &self.maps[*file];
        let bytes = &map[*start..*end];
        let numel: i64 = t.shape.iter().product();
        if bytes.len() as i64 != numel * kind.elt_size_in_bytes() as i64 {
            return Err(bad(path, format!("{}: {} bytes for shape {:?}", t.name, bytes.len(), t.shape)));
        }
        let out = if (bytes.as_ptr() as usize).is_multiple_of(kind.elt_size_in_bytes()) {
            let strides = contiguous_strides(&t.shape);
            // SAFETY: the bytes are in bounds (checked above), aligned for `kind`, and live in the
            // map borrowed for this call; the view is dropped before the call returns (the caller
            // keeps no alias, as documented).
            let view = unsafe { Tensor::f_from_blob(bytes.as_ptr(), &t.shape, &strides, *kind, tch::Device::Cpu) }
                .map_err(|e| bad(path, e.to_string()))?;
            f(&view)
        } else {
            let copied = Tensor::f_from_data_size(bytes, &t.shape, *kind).map_err(|e| bad(path, e.to_string()))?;
            f(&copied)
        };
        // SAFETY: the range lies inside the read-only private map and the view is gone; DONTNEED on
        // a file map only drops pages, which are re-read from the file if touched again.
        unsafe {
            let _ = map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, *start, *end - *start);
        }
        Ok(out)
    }

    /// Every tensor, read.
    pub fn read_all(&self) -> Result<Vec<(String, Tensor)>, ModelError> {
        self.tensors.iter().map(|t| Ok((t.name.clone(), self.read(t)?))).collect()
    }

    fn open_shards(index: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(index).map_err(|e| bad(index, e.to_string()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(index, format!("not a JSON shard index: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad(index, "no `weight_map` object (not a safetensors shard index)"))?;
        let files: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut ckpt = Self { path: index.to_path_buf(), tensors: Vec::new(), zip: None, maps: Vec::new() };
        for f in files {
            let shard = dir.join(f);
            if !shard.is_file() {
                return Err(bad(index, format!("names shard {f}, which is not in {}", dir.display())));
            }
            ckpt.map_safetensors(&shard, Some(map))?;
        }
        Ok(ckpt)
    }

    /// Maps a safetensors file and lists its tensors (those the shard index assigns to it, if any).
    fn map_safetensors(
        &mut self,
        path: &Path,
        index: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<(), ModelError> {
        let file = File::open(path).map_err(|e| bad(path, e.to_string()))?;
        // SAFETY: the map is read-only; a checkpoint rewritten while it loads is the user's race,
        // as with PyTorch's own `safe_open`.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| bad(path, e.to_string()))?;
        let (header, meta) =
            SafeTensors::read_metadata(&map).map_err(|e| bad(path, format!("not a readable safetensors file: {e}")))?;
        let base = 8 + header;
        let shard_name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let mut listed: Vec<Listed> = Vec::new();
        for (name, info) in meta.tensors() {
            let here = index.map(|m| m.get(&name).and_then(|v| v.as_str()) == Some(shard_name)).unwrap_or(true);
            if !here {
                continue;
            }
            let kind = kind_of_dtype(info.dtype).ok_or_else(|| bad(path, format!("{name}: dtype {:?}", info.dtype)))?;
            let (start, end) = info.data_offsets;
            let at = At::Safetensors { file: self.maps.len(), kind, start: base + start, end: base + end };
            listed.push(Listed { name, shape: info.shape.iter().map(|&d| d as i64).collect(), at });
        }
        listed.sort_by_key(|t| match t.at {
            At::Safetensors { start, .. } => start,
            At::Pth(_) => 0,
        });
        self.tensors.extend(listed);
        self.maps.push((path.to_path_buf(), map));
        Ok(())
    }

    fn list_pth(&mut self) -> Result<(), ModelError> {
        let path = self.path.clone();
        let file = File::open(&path).map_err(|e| bad(&path, e.to_string()))?;
        let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(&path, format!("broken zip archive: {e}")))?;
        let pkl_name = zip
            .file_names()
            .find(|n| n.ends_with("data.pkl") && n.matches('/').count() == 1)
            .map(str::to_owned)
            .ok_or_else(|| {
                bad(&path, "no data.pkl in the archive (a TorchScript file? use torch.save(model.state_dict()))")
            })?;
        let root = pkl_name.trim_end_matches("data.pkl").to_owned();
        if let Ok(order) = entry(&mut zip, &path, &format!("{root}byteorder")) {
            if order != b"little" {
                return Err(bad(&path, "written on a big-endian machine; not supported"));
            }
        }
        let value =
            pickle::parse(&entry(&mut zip, &path, &pkl_name)?).map_err(|e| bad(&path, format!("data.pkl: {}", e.0)))?;
        let mut refs = Vec::new();
        flatten(&value, String::new(), &mut refs);
        self.tensors =
            refs.into_iter().map(|(name, r)| Listed { name, shape: r.size.clone(), at: At::Pth(r) }).collect();
        self.zip = Some(RefCell::new(Archive { zip, root, last: None }));
        Ok(())
    }

    fn read_pth(&self, name: &str, t: &TensorRef) -> Result<Tensor, ModelError> {
        let path = &self.path;
        let mut archive = self.zip.as_ref().expect("a .pth checkpoint keeps its archive").borrow_mut();
        let s = &t.storage;
        let kind =
            kind_of(&s.dtype).ok_or_else(|| bad(path, format!("{name}: unsupported storage type {}", s.dtype)))?;
        let last = t.offset + t.size.iter().zip(&t.stride).map(|(n, st)| (n - 1).max(0) * st).sum::<i64>();
        if t.size.iter().all(|&n| n > 0) && (t.offset < 0 || last >= s.numel) {
            return Err(bad(path, format!("{name} reaches past its storage")));
        }
        if archive.last.as_ref().map(|(k, _)| k != &s.key).unwrap_or(true) {
            archive.last = None;
            let entry_name = format!("{}data/{}", archive.root, s.key);
            let bytes = entry(&mut archive.zip, path, &entry_name)?;
            let expected = s.numel * kind.elt_size_in_bytes() as i64;
            if bytes.len() as i64 != expected {
                let got = bytes.len();
                return Err(bad(path, format!("storage {} of {name} has {got} bytes, expected {expected}", s.key)));
            }
            let base = Tensor::f_from_data_size(&bytes, &[s.numel], kind).map_err(|e| bad(path, e.to_string()))?;
            archive.last = Some((s.key.clone(), base));
        }
        let base = &archive.last.as_ref().expect("just read").1;
        let view = base
            .f_as_strided(t.size.as_slice(), t.stride.as_slice(), t.offset)
            .map_err(|e| bad(path, e.to_string()))?;
        Ok(view.contiguous())
    }
}

/// Every tensor in a checkpoint, named by its path through the nested dicts, in file order.
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>, ModelError> {
    Checkpoint::open(path)?.read_all()
}

fn contiguous_strides(shape: &[i64]) -> Vec<i64> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1].max(1);
    }
    strides
}

fn entry(zip: &mut zip::ZipArchive<File>, path: &Path, name: &str) -> Result<Vec<u8>, ModelError> {
    let mut f = zip.by_name(name).map_err(|e| bad(path, format!("{name}: {e}")))?;
    let mut buf = Vec::with_capacity(f.size() as usize);
    f.read_to_end(&mut buf).map_err(|e| bad(path, format!("{name}: {e} (truncated download?)")))?;
    Ok(buf)
}

fn kind_of(storage: &str) -> Option<Kind> {
    Some(match storage {
        "FloatStorage" => Kind::Float,
        "DoubleStorage" => Kind::Double,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        _ => return None,
    })
}

/// The `__metadata__` of a single safetensors file (what patchtcga records of how its network was
/// built); empty for other formats, folders and sharded checkpoints.
pub fn safetensors_attributes(path: &Path) -> Result<std::collections::HashMap<String, String>, ModelError> {
    if !path.is_file() || path.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        return Ok(Default::default());
    }
    let file = File::open(path).map_err(|e| bad(path, e.to_string()))?;
    // SAFETY: read-only, as in `map_safetensors`.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| bad(path, e.to_string()))?;
    let (_, meta) =
        SafeTensors::read_metadata(&map).map_err(|e| bad(path, format!("not a readable safetensors file: {e}")))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// The safetensors dtype of a tensor kind, where it has one.
pub(crate) fn dtype_of_kind(k: Kind) -> Option<Dtype> {
    Some(match k {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Int16 => Dtype::I16,
        Kind::Int8 => Dtype::I8,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        _ => return None,
    })
}

fn kind_of_dtype(d: Dtype) -> Option<Kind> {
    Some(match d {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

fn key_name(k: &Value) -> Option<String> {
    match k {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn flatten(v: &Value, prefix: String, out: &mut Vec<(String, TensorRef)>) {
    let join = |k: &str| if prefix.is_empty() { k.to_owned() } else { format!("{prefix}.{k}") };
    match v {
        Value::Tensor(t) => out.push((prefix, t.clone())),
        Value::Dict(items) => {
            for (k, v) in items {
                if let Some(k) = key_name(k) {
                    flatten(v, join(&k), out);
                }
            }
        }
        Value::List(items) | Value::Tuple(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten(v, join(&i.to_string()), out);
            }
        }
        Value::Object { state: Some(state), .. } => flatten(state, prefix, out),
        _ => {}
    }
}
