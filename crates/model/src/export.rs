//! Writing weights for PyTorch: `torch.save`-compatible `.pth` archives (a state dict that
//! `torch.load(…, weights_only=True)` and `load_state_dict` accept) and safetensors.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use tch::{nn, Device, Kind, Tensor};

use crate::naming::{self, Naming};
use crate::vit::Mlp;
use crate::{Arch, Backbone, BackboneWeights, ModelError, Spec};

/// Options of `patchtcga export`.
#[derive(clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub backbone: BackboneWeights,
    /// ViT input side the exported position embedding is made for.
    #[arg(long, default_value_t = 224)]
    pub image_size: i64,
    /// Output: `.pth` (torch.save format) or `.safetensors`.
    #[arg(long)]
    pub out: PathBuf,
}

/// A backbone written for PyTorch by [`ExportArgs::write`].
pub struct Exported {
    tensors: usize,
    arch: Arch,
    out: PathBuf,
    head: &'static str,
    /// Inception's input transform, which torchvision takes as a constructor argument.
    transform_input: Option<bool>,
}

impl ExportArgs {
    /// Writes `backbone` (its weights in `vs`) with its reference names (torchvision / timm;
    /// Hugging Face for phikon, DINOv2's for dinov2-*) to `--out`, as its extension says.
    pub fn write(&self, vs: &nn::VarStore, backbone: &Backbone) -> Result<Exported, ModelError> {
        let tensors = reference_names(self.backbone.arch, with_bn_counters(vs.variables().into_iter().collect()));
        let out = &self.out;
        match out.extension().and_then(|e| e.to_str()) {
            Some("pth") | Some("pt") => write_pth(out, &tensors)?,
            Some("safetensors") => write_safetensors(out, &tensors, &backbone.spec().attributes())?,
            _ => return Err(bad(out, "the output must end in .pth, .pt or .safetensors")),
        }
        let spec = backbone.spec();
        let transform_input = match spec {
            Spec::Inception(c) => Some(c.transform_input),
            _ => None,
        };
        Ok(Exported {
            tensors: tensors.len(),
            arch: self.backbone.arch,
            out: out.clone(),
            head: spec.head_name(),
            transform_input,
        })
    }
}

/// `322 tensors of resnet50 → b.pth; in PyTorch, set model.fc = nn.Identity() and load_state_dict`.
impl std::fmt::Display for Exported {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{} tensors of {} → {}; in PyTorch, set model.{} = nn.Identity() and load_state_dict",
            self.tensors,
            self.arch,
            self.out.display(),
            self.head
        )?;
        match self.transform_input {
            Some(on) => {
                let on = if on { "True" } else { "False" };
                write!(f, "; build it as inception_v3(init_weights=False, aux_logits=False, transform_input={on})")
            }
            None => Ok(()),
        }
    }
}

/// Writes `tensors` to `path` as safetensors with `attributes` as its metadata (how the network
/// was built: [`Spec::attributes`]), atomically; a failed write names `path` and its cause in words
/// (`No space left on device`).
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    attributes: &[(String, String)],
) -> Result<(), ModelError> {
    let views = tensors
        .iter()
        .map(|(name, t)| Ok((name.as_str(), TensorBytes::of(t).map_err(|e| bad(path, format!("{name}: {e}")))?)))
        .collect::<Result<Vec<_>, ModelError>>()?;
    let metadata = (!attributes.is_empty()).then(|| attributes.iter().cloned().collect());
    let write = |tmp: &Path| {
        safetensors::serialize_to_file(views.iter().map(|(n, v)| (*n, v)), metadata.clone(), tmp).map_err(|e| match e {
            safetensors::SafeTensorError::IoError(io) => bad(path, io),
            other => bad(path, other),
        })
    };
    patchtcga_atomic::write_with(path, write, |e| bad(path, e))
}

/// A tensor's bytes on the CPU, for the safetensors writer.
struct TensorBytes {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl TensorBytes {
    fn of(t: &Tensor) -> Result<Self, String> {
        let dtype =
            crate::source::dtype_of_kind(t.kind()).ok_or_else(|| format!("no safetensors dtype for {:?}", t.kind()))?;
        let t = t.to_device(Device::Cpu).contiguous();
        let numel = t.numel();
        let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut data, numel).map_err(|e| e.to_string())?;
        Ok(Self { dtype, shape: t.size().iter().map(|&d| d as usize).collect(), data })
    }
}

impl safetensors::View for &TensorBytes {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }

    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn bad(path: &Path, cause: impl std::fmt::Display) -> ModelError {
    ModelError::Checkpoint { path: path.to_path_buf(), cause: cause.to_string() }
}

fn storage_class(kind: Kind) -> Option<&'static str> {
    Some(match kind {
        Kind::Float => "FloatStorage",
        Kind::Double => "DoubleStorage",
        Kind::Half => "HalfStorage",
        Kind::BFloat16 => "BFloat16Storage",
        Kind::Int64 => "LongStorage",
        Kind::Int => "IntStorage",
        Kind::Uint8 => "ByteStorage",
        Kind::Bool => "BoolStorage",
        _ => return None,
    })
}

/// The pickle opcodes a state dict needs (protocol 2).
struct Pickle(Vec<u8>);

impl Pickle {
    fn op(&mut self, op: u8) {
        self.0.push(op);
    }
    fn global(&mut self, module: &str, name: &str) {
        self.0.push(b'c');
        self.0.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }
    fn str(&mut self, s: &str) {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn int(&mut self, v: i64) {
        if let Ok(small) = i32::try_from(v) {
            self.0.push(b'J');
            self.0.extend_from_slice(&small.to_le_bytes());
        } else {
            self.0.push(0x8a); // LONG1
            self.0.push(8);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }
    fn ints(&mut self, v: &[i64]) {
        self.op(b'(');
        for &x in v {
            self.int(x);
        }
        self.op(b't');
    }
    fn ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.op(b')');
        self.op(b'R');
    }
}

/// Writes `tensors` as `torch.save(OrderedDict(tensors), path)` would: a zip of `data.pkl`,
/// one 64-byte-aligned record per tensor, `version` and `byteorder`; atomically.
pub fn write_pth(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), ModelError> {
    let stem =
        path.file_stem().and_then(|s| s.to_str()).filter(|s| s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    let root = stem.unwrap_or("archive");
    let mut p = Pickle(vec![0x80, 2]);
    p.ordered_dict();
    p.op(b'(');
    let mut records = Vec::with_capacity(tensors.len());
    for (i, (name, t)) in tensors.iter().enumerate() {
        let t = t.to_device(Device::Cpu).contiguous();
        let class =
            storage_class(t.kind()).ok_or_else(|| bad(path, format!("{name}: dtype {:?} not supported", t.kind())))?;
        let size = t.size();
        let mut stride = vec![1i64; size.len()];
        for d in (0..size.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * size[d + 1].max(1);
        }
        p.str(name);
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.op(b'(');
        // Persistent id of the storage: ('storage', class, key, location, numel).
        p.op(b'(');
        p.str("storage");
        p.global("torch", class);
        p.str(&i.to_string());
        p.str("cpu");
        p.int(t.numel() as i64);
        p.op(b't');
        p.op(b'Q');
        p.int(0);
        p.ints(&size);
        p.ints(&stride);
        p.op(0x89); // requires_grad False
        p.ordered_dict(); // backward hooks
        p.op(b't');
        p.op(b'R');
        let mut bytes = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut bytes, t.numel()).map_err(|e| bad(path, e))?;
        records.push(bytes);
    }
    p.op(b'u');
    p.op(b'.');
    let write = |tmp: &Path| {
        let file = File::create(tmp).map_err(|e| bad(tmp, e))?;
        let mut zip = zip::ZipWriter::new(file);
        let opts =
            zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored).large_file(true);
        let mut put = |name: String, data: &[u8]| -> Result<(), ModelError> {
            zip.start_file_aligned(name, opts, 64).map_err(|e| bad(path, e))?;
            zip.write_all(data).map_err(|e| bad(path, e))
        };
        put(format!("{root}/data.pkl"), &p.0)?;
        put(format!("{root}/byteorder"), b"little")?;
        for (i, r) in records.iter().enumerate() {
            put(format!("{root}/data/{i}"), r)?;
        }
        put(format!("{root}/version"), b"3\n")?;
        zip.finish().map_err(|e| bad(path, e))?;
        Ok(())
    };
    patchtcga_atomic::write_with(path, write, |e| bad(path, e))
}

/// Weights with torchvision's bookkeeping: every batch norm (`…running_mean`) also gets the
/// `num_batches_tracked` counter that `load_state_dict(strict=True)` expects.
pub fn with_bn_counters(mut tensors: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    let extra: Vec<(String, Tensor)> = tensors
        .iter()
        .filter_map(|(n, _)| n.strip_suffix("running_mean"))
        .map(|p| (format!("{p}num_batches_tracked"), Tensor::from(0i64)))
        .collect();
    tensors.extend(extra);
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

/// A backbone's tensors (patchtcga's, i.e. timm's or torchvision's names) under the names of the
/// codebase `arch`'s weights are published in: Hugging Face for Phikon, DINOv2's for `dinov2-*`.
pub fn reference_names(arch: Arch, tensors: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    let naming = match arch {
        Arch::Foundation(f) => f.naming(),
        _ => Naming::Timm,
    };
    let swiglu = matches!(arch.spec(224), Spec::Vit(v) if v.mlp == Mlp::SwiGlu);
    naming::to_reference(naming, swiglu, tensors)
}
