//! Run configuration: the keys of the release's `config.py`, in TOML, with `--set key=value`
//! overrides.

use std::path::{Path, PathBuf};

use patchtcga_model::inception::InceptionConfig;
use patchtcga_model::vit::{PosResample, VitConfig};
use patchtcga_model::{Arch, SegHead, Spec};
use serde::{Deserialize, Serialize};

use crate::choices::empty_as_none;
pub use crate::choices::{ClipMode, DeviceChoice, DistBackend, ImageStats, OnNonFinite, Optim, SelfSupervised};
use crate::LearnError;

/// Everything a run needs, in one file. Keys are the release's; ours are marked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Run name: outputs go to `<root_dir>/<name>/` (ours).
    pub name: String,
    /// Backbone: resnet18, resnet50, vit-s16, vit-b16, vit-b32, vit-l16.
    pub model_name: String,
    /// Classes of the head (ours; PTCGA200 has 20).
    pub num_classes: i64,
    /// Dropout before the linear head.
    pub dropout_p: f64,
    /// Reset batch-norm running statistics of loaded weights.
    pub reset_bn: bool,
    /// `none` for supervised training, or a self-supervised method: simclr, byol, mocov2, dino,
    /// mae.
    pub self_supervised: SelfSupervised,
    /// Freeze the backbone and train only the head.
    pub fine_tune: bool,
    /// Mixed precision (bf16 autocast) on CUDA.
    pub enable_autocast: bool,
    pub image_size: i64,
    pub val_image_size: i64,
    /// `imagenet`, `ptcga`, or six numbers `m0,m1,m2,s0,s1,s2` (default: the preset's own for a
    /// foundation model, ImageNet's otherwise).
    pub image_stats: ImageStats,
    pub seed: u64,
    pub epochs: usize,
    /// Stop after this many updates (0 = no limit); a checkpoint is written there.
    pub stop_num_updates: usize,
    /// A checkpoint folder to resume from (absent or "" = none).
    #[serde(deserialize_with = "empty_as_none", skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<PathBuf>,
    /// Initial weights, a `.pth` / `.safetensors` of the backbone (absent or "" = random).
    #[serde(deserialize_with = "empty_as_none", skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<PathBuf>,
    /// Resume from `<run>/checkpoints/epoch_<N>` (0 = start afresh).
    pub resume_epoch: usize,
    /// Samples per process per micro-batch.
    pub batch_size: usize,
    /// Loader worker threads.
    pub num_workers: usize,
    /// Peak lr = `lr` × total batch / `base_batch_size` (as a real ratio).
    pub base_batch_size: usize,
    /// Micro-batches accumulated per update.
    pub num_accum: usize,
    /// Trials in the split file.
    pub n_fold: usize,
    pub lr: f64,
    /// adam, adamw, sgd, lars.
    pub optim: Optim,
    /// SGD / LARS momentum (ours).
    pub momentum: f64,
    /// Adam / AdamW betas (ours).
    pub betas: [f64; 2],
    /// Epochs at learning rate 0 before warm-up (batch-norm statistics settle).
    pub cold_epochs: f64,
    pub warmup_epochs: f64,
    /// Checkpoint every this many epochs (and always at the end).
    pub snapshot_epoch: usize,
    /// Checkpoints kept whole, the newest (0 = every one); the best validation epoch's weights
    /// are kept besides, for fine-tuning's selection (ours).
    pub keep_checkpoints: usize,
    /// Weight decay (never on norms, biases, `cls_token`, `pos_embed`).
    pub wd: f64,
    /// Weight decay at the end of the run, reached on a cosine from `wd` (DINO's 0.04 → 0.4);
    /// absent = constant (ours).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wd_end: Option<f64>,
    /// Gradient clipping by norm (0 = off).
    pub clip_norm: f64,
    /// `global` (one norm over all gradients, `clip_grad_norm_`) or `per_parameter` (each
    /// parameter's own, DINO's `clip_gradients`) (ours).
    pub clip_mode: ClipMode,
    /// What to do when an update's loss or gradients are not finite: `stop` (an error naming the
    /// update and the last good checkpoint) or `skip` (drop the update and count it) (ours).
    pub on_nonfinite: OnNonFinite,
    pub dataset_dir: String,
    /// Where run folders go.
    pub root_dir: String,
    /// Split file (`3fold_dict_idx_filenames.pickle` or `splits.json`), relative to
    /// `dataset_dir`; "" = the `train`/`val`/`test` folders of PCam200 and segPANDA200, or
    /// everything for training, no validation, elsewhere (ours).
    pub split: String,
    /// Which trial of the split file (ours).
    pub trial: usize,
    /// Validate every this many updates (and at each epoch's end) (ours; the release used 200).
    pub val_every: usize,
    /// `cpu`, `cuda` or `cuda:N` (ours).
    pub device: DeviceChoice,
    /// Contrastive temperature (SimCLR NT-Xent 0.1, MoCo v2 InfoNCE 0.2) (ours).
    pub temperature: f64,
    /// Projector hidden and output widths (SimCLR/MoCo 2048 → 128, BYOL 4096 → 256) (ours).
    pub proj_hidden_dim: i64,
    pub proj_dim: i64,
    /// BYOL predictor hidden width (ours).
    pub pred_hidden_dim: i64,
    /// Momentum of target networks: BYOL's base (cosine to 1), MoCo's constant (ours).
    pub momentum_base: f64,
    /// MoCo's queue of negative keys (a multiple of `batch_size`) (ours).
    pub queue_size: i64,
    /// BYOL's extra linear organ classifier on the (detached) online representation.
    pub organ_classifier: bool,
    /// k-NN monitor of self-supervised runs on the validation set: neighbours, temperature (ours).
    pub knn_k: i64,
    pub knn_temperature: f64,
    /// Stochastic depth rate of a ViT's last block (timm's `drop_path_rate`) (ours).
    pub drop_path: f64,
    /// DINO: local crops per image beside the two global ones (ours, as upstream's
    /// `local_crops_number`).
    pub local_crops: usize,
    /// DINO head output width (upstream `out_dim`); hidden and bottleneck widths are
    /// `proj_hidden_dim` and `proj_dim`.
    pub out_dim: i64,
    /// DINO teacher temperature: `warmup_teacher_temp` rising linearly to `teacher_temp` over
    /// `warmup_teacher_temp_epochs`; the student's is `temperature`.
    pub warmup_teacher_temp: f64,
    pub teacher_temp: f64,
    pub warmup_teacher_temp_epochs: usize,
    /// DINO centre momentum (upstream `center_momentum`).
    pub center_momentum: f64,
    /// DINO: epochs during which the head's last layer is not trained (upstream
    /// `freeze_last_layer`).
    pub freeze_last_layer: usize,
    /// MAE: share of patches hidden from the encoder, and the loss on per-patch normalised pixels.
    pub mask_ratio: f64,
    pub norm_pix_loss: bool,
    /// MAE decoder width, depth and heads (upstream names).
    pub decoder_embed_dim: i64,
    pub decoder_depth: i64,
    pub decoder_num_heads: i64,
    /// Segmentation head: absent or "" (classification), `fcn` (the release's) or `deeplabv3`
    /// (ours).
    #[serde(deserialize_with = "empty_as_none", skip_serializing_if = "Option::is_none")]
    pub seg_head: Option<SegHead>,
    /// Mask value that does not count in the segmentation loss and metrics (ours).
    pub ignore_index: i64,
    /// The release's multi-node launch: nodes, their host names (this machine's name picks its
    /// index), and the rendezvous `tcp://host:port` (see `patchtcga pretrain --nproc-per-node`).
    pub nnode: usize,
    pub hosts: Vec<String>,
    pub dist_url: String,
    /// c10d backend for GPU tensors: `auto` (NCCL on a GPU where the build has it, else Gloo),
    /// `nccl` or `gloo` (the release: NCCL); CPU tensors always go through Gloo.
    pub dist_backend: DistBackend,
    /// Batch norm statistics over every rank's batch in a distributed run, so that N processes
    /// of batch b train as one of batch N·b (ours; PyTorch's `SyncBatchNorm`).
    pub sync_batch_norm: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: "run".into(),
            model_name: "resnet50".into(),
            num_classes: 20,
            dropout_p: 0.4,
            reset_bn: false,
            self_supervised: SelfSupervised::None,
            fine_tune: false,
            enable_autocast: false,
            image_size: 224,
            val_image_size: 224,
            image_stats: ImageStats::default(),
            seed: 0,
            epochs: 10,
            stop_num_updates: 0,
            checkpoint: None,
            pretrained: None,
            resume_epoch: 0,
            batch_size: 128,
            num_workers: 8,
            base_batch_size: 512,
            num_accum: 1,
            n_fold: 3,
            lr: 1e-4,
            optim: Optim::Adam,
            momentum: 0.9,
            betas: [0.9, 0.999],
            cold_epochs: 0.0,
            warmup_epochs: 1.0,
            snapshot_epoch: 1,
            keep_checkpoints: 1,
            wd: 5e-5,
            wd_end: None,
            clip_norm: 1.0,
            clip_mode: ClipMode::Global,
            on_nonfinite: OnNonFinite::Stop,
            dataset_dir: "data/PTCGA200".into(),
            root_dir: "runs".into(),
            split: String::new(),
            trial: 0,
            val_every: 200,
            device: DeviceChoice::Cpu,
            temperature: 0.1,
            proj_hidden_dim: 2048,
            proj_dim: 128,
            pred_hidden_dim: 4096,
            momentum_base: 0.99,
            queue_size: 65536,
            organ_classifier: false,
            knn_k: 20,
            knn_temperature: 0.07,
            drop_path: 0.0,
            local_crops: 10,
            out_dim: 65536,
            warmup_teacher_temp: 0.04,
            teacher_temp: 0.07,
            warmup_teacher_temp_epochs: 30,
            center_momentum: 0.9,
            freeze_last_layer: 1,
            mask_ratio: 0.75,
            norm_pix_loss: true,
            decoder_embed_dim: 512,
            decoder_depth: 8,
            decoder_num_heads: 16,
            seg_head: None,
            ignore_index: 255,
            nnode: 1,
            hosts: Vec::new(),
            dist_url: String::new(),
            dist_backend: DistBackend::Auto,
            sync_batch_norm: true,
        }
    }
}

impl Config {
    /// Reads a TOML file (missing keys take their defaults) and applies `key=value` overrides,
    /// each value written as in TOML (`lr=0.1`, `optim=sgd`, `betas=[0.9,0.95]`).
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Self, LearnError> {
        let mut table: toml::Table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| LearnError::io(p, e))?;
                text.parse().map_err(|e| LearnError::Config(format!("{}: {e}", p.display())))?
            }
            None => toml::Table::new(),
        };
        for o in overrides {
            let (key, value) =
                o.split_once('=').ok_or_else(|| LearnError::Config(format!("--set {o:?}: expected key=value")))?;
            let key = key.trim();
            let value = value.trim();
            let parsed = format!("v = {value}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.to_owned()));
            table.insert(key.to_owned(), parsed);
        }
        let stats_given = table.contains_key("image_stats");
        let mut config: Config = table.try_into().map_err(|e: toml::de::Error| {
            // toml names the key on a line of its own ("in `optim`").
            let place = path.map(|p| format!("{}: ", p.display())).unwrap_or_default();
            LearnError::Config(format!("{place}{}", e.to_string().trim().replace('\n', " ")))
        })?;
        if !stats_given {
            // A foundation-model preset brings the normalisation its weights were trained with.
            config.image_stats = ImageStats::of(config.model_name.parse()?);
        }
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), LearnError> {
        let bad = |m: String| Err(LearnError::Config(m));
        if self.batch_size == 0 || self.num_accum == 0 || self.base_batch_size == 0 {
            return bad("batch_size, num_accum and base_batch_size must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.dropout_p) {
            return bad(format!("dropout_p {} is not in [0, 1)", self.dropout_p));
        }
        if !(0.0..1.0).contains(&self.mask_ratio) {
            return bad(format!("mask_ratio {} is not in [0, 1)", self.mask_ratio));
        }
        if !(0.0..1.0).contains(&self.drop_path) {
            return bad(format!("drop_path {} is not in [0, 1)", self.drop_path));
        }
        Ok(())
    }

    /// Inception's input transform (torchvision's `transform_input`) for this run: off from scratch
    /// (no `pretrained`), as torchvision builds `inception_v3(weights=None)`; with `pretrained`
    /// weights, as the file records (a patchtcga run's), else on (torchvision's ImageNet weights,
    /// as the release's `pretrained = true` takes them).
    pub fn inception_transform(&self) -> Result<bool, LearnError> {
        Ok(match &self.pretrained {
            None => false,
            Some(weights) => patchtcga_model::inception::recorded_transform_input(weights)?.unwrap_or(true),
        })
    }

    /// The backbone `model_name` names, at `image_size`, with `drop_path` for ViTs; Inception's
    /// input transform follows how its starting weights were made ([`Config::inception_transform`]).
    pub fn backbone_spec(&self) -> Result<Spec, LearnError> {
        Ok(match self.model_name.parse::<Arch>()?.spec(self.image_size) {
            Spec::Inception(_) => Spec::Inception(InceptionConfig { transform_input: self.inception_transform()? }),
            Spec::Vit(v) => Spec::Vit(VitConfig {
                drop_path: self.drop_path,
                // DINO's local crops see the position embedding as DINO's own ViT resamples it.
                pos_resample: if self.self_supervised == SelfSupervised::Dino {
                    PosResample::Dino
                } else {
                    v.pos_resample
                },
                ..v
            }),
            other => other,
        })
    }

    /// The run folder.
    pub fn run_dir(&self) -> PathBuf {
        Path::new(&self.root_dir).join(&self.name)
    }

    /// The TOML text of the resolved configuration.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a config always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inception's input transform follows the run's starting weights: off from scratch, as a
    /// patchtcga run's file records, on for a file that records nothing (torchvision's ImageNet).
    #[test]
    fn inception_transform_follows_the_starting_weights() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, transform_input: Option<bool>| {
            let path = dir.path().join(name);
            let attributes =
                transform_input.map(|t| InceptionConfig { transform_input: t }.attributes()).unwrap_or_default();
            let tensors = [("fc.bias".to_string(), tch::Tensor::zeros([2], (tch::Kind::Float, tch::Device::Cpu)))];
            patchtcga_model::write_safetensors(&path, &tensors, &attributes).unwrap();
            Some(path)
        };
        let spec = |pretrained: Option<PathBuf>| {
            let c = Config { model_name: "incv3".into(), image_size: 299, pretrained, ..Config::default() };
            c.backbone_spec().unwrap()
        };
        let on = |t| Spec::Inception(InceptionConfig { transform_input: t });
        assert_eq!(spec(None), on(false));
        assert_eq!(spec(write("scratch_run.safetensors", Some(false))), on(false));
        assert_eq!(spec(write("imagenet_run.safetensors", Some(true))), on(true));
        assert_eq!(spec(write("torchvision.safetensors", None)), on(true));
    }
}
