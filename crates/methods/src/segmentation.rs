//! Semantic segmentation (segPANDA200): a backbone with an FCN or DeepLabv3 head, per-pixel
//! cross-entropy with an ignore index, the original's metrics (per-class TP/FP/FN summed over a
//! set), and overlays of predicted against true masks.

use std::path::Path;

use image::{Rgb, RgbImage};
use patchtcga_loader::{Batch, Loader};
use patchtcga_metrics::{SegmentationCounts, SegmentationReport};
use patchtcga_model::{load, load_head, ImportOptions, SegHead, SegNet};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use patchtcga_collective::ProcessGroup;
use patchtcga_engine::data::images;
use patchtcga_engine::plot::COLOURS;
use patchtcga_engine::shards;
use patchtcga_engine::{Config, LearnError, Method, RunContext, StepOutput};

/// A segmentation network trained with per-pixel cross-entropy.
pub struct Segmenter {
    vs: nn::VarStore,
    net: SegNet,
    device: Device,
    classes: i64,
    ignore: i64,
    /// The distributed run's process group, if any.
    group: Option<&'static ProcessGroup>,
    /// `fine_tune`: the backbone is frozen and runs in evaluation mode; the head alone trains.
    frozen: bool,
    /// What the set-up loaded ([`Method::notes`]).
    notes: Vec<String>,
}

impl Segmenter {
    /// The network of `config` (`seg_head`), with `pretrained` weights if given: the backbone's,
    /// and the head's where the checkpoint has one.
    pub fn new(config: &Config, context: &RunContext) -> Result<Self, LearnError> {
        let device = context.device;
        let head: SegHead = config
            .seg_head
            .ok_or_else(|| LearnError::Config("a segmentation network needs seg_head (fcn or deeplabv3)".into()))?;
        let vs = nn::VarStore::new(device);
        let net = SegNet::new(&vs.root(), config.backbone_spec()?, head, config.num_classes)?;
        let mut notes = Vec::new();
        if let Some(path) = &config.pretrained {
            let r = load(&vs, path, "classifier", &ImportOptions::default())?;
            notes.push(format!("loaded {} backbone tensors from {} (prefix {:?})", r.loaded, path.display(), r.prefix));
            // A segmentation checkpoint (torchvision's COCO DeepLabv3 / FCN, or a segmentation run)
            // also gives its head, but for a class layer of another class count.
            let h = load_head(&vs, path)?;
            if !h.loaded.is_empty() {
                let left = if h.left.is_empty() { String::new() } else { format!("; new: {}", h.left.join(", ")) };
                notes.push(format!("loaded {} head tensors from {}{left}", h.loaded.len(), path.display()));
            }
        }
        if config.fine_tune {
            // The head's parameters are `classifier.*` (torchvision's names); the rest is backbone.
            for (name, t) in vs.variables() {
                if !name.starts_with("classifier.") {
                    let _ = t.set_requires_grad(false);
                }
            }
        }
        Ok(Self {
            vs,
            net,
            device,
            classes: config.num_classes,
            ignore: config.ignore_index,
            group: context.group,
            frozen: config.fine_tune,
            notes,
        })
    }

    /// The batch's masks as class ids (N, H, W), refused when a pixel's class is outside the
    /// task's (the ignore index aside).
    fn targets(&self, batch: &Batch) -> Result<Tensor, LearnError> {
        let masks = batch.masks.as_ref().ok_or_else(|| {
            LearnError::Config("segmentation needs label masks (a segPANDA200 layout: <stem>_mask.png)".into())
        })?;
        if let Some(&bad) = masks.iter().find(|&&c| c as i64 >= self.classes && c as i64 != self.ignore) {
            return Err(LearnError::Config(format!(
                "a mask in this batch (dataset positions {:?}) has class id {bad}, outside the task's {} classes \
                 (num_classes) and not the ignore index {}",
                batch.indices, self.classes, self.ignore
            )));
        }
        let v = &batch.views[0];
        let t = Tensor::from_slice(masks).reshape([v.shape[0] as i64, v.shape[2] as i64, v.shape[3] as i64]);
        Ok(t.to_kind(Kind::Int64).to_device(self.device))
    }

    fn loss(&self, logits: &Tensor, y: &Tensor) -> Tensor {
        logits.to_kind(Kind::Float).cross_entropy_loss::<Tensor>(y, None, tch::Reduction::Mean, self.ignore, 0.0)
    }

    /// Predicted class ids (N·H·W) and summed metrics over a loader; the first `keep` samples'
    /// images, masks and predictions for overlays.
    pub fn predict(&self, loader: &Loader, keep: usize) -> Result<(SegmentationCounts, f64, Vec<Sample>), LearnError> {
        let mut counts = SegmentationCounts::new(self.classes as usize);
        let (mut loss, mut n, mut samples) = (0.0, 0usize, Vec::new());
        let ignore = u8::try_from(self.ignore).ok();
        for batch in loader.epoch(0) {
            let batch = batch?;
            let x = images(&batch, 0, self.device);
            let y = self.targets(&batch)?;
            let logits = tch::no_grad(|| self.net.forward_t(&x, false));
            loss += self.loss(&logits, &y).double_value(&[]) * batch.labels.len() as f64;
            n += batch.labels.len();
            let pred = logits.argmax(1, false).to_kind(Kind::Uint8).to_device(Device::Cpu);
            let pred = Vec::<u8>::try_from(pred.reshape([-1]))?;
            let truth = batch.masks.as_ref().expect("checked by targets");
            counts.add(&pred, truth, ignore);
            let v = &batch.views[0];
            let (h, w) = (v.shape[2], v.shape[3]);
            for i in 0..batch.labels.len() {
                if samples.len() >= keep {
                    break;
                }
                samples.push(Sample {
                    image: v.data[i * 3 * h * w..(i + 1) * 3 * h * w].to_vec(),
                    truth: truth[i * h * w..(i + 1) * h * w].to_vec(),
                    predicted: pred[i * h * w..(i + 1) * h * w].to_vec(),
                    size: (w as u32, h as u32),
                });
            }
        }
        // Every rank's share summed, as the original sums TP/FP/FN over the set.
        let c = counts.tp.len();
        let local: Vec<f64> =
            [&counts.tp, &counts.fp, &counts.fn_].iter().flat_map(|v| v.iter().map(|&x| x as f64)).collect();
        let totals = shards::sum(self.group, &[local, vec![loss, n as f64]].concat())?;
        let whole = |k: usize| totals[k * c..(k + 1) * c].iter().map(|&x| x as u64).collect::<Vec<u64>>();
        let counts = SegmentationCounts { tp: whole(0), fp: whole(1), fn_: whole(2) };
        let (loss, n) = (totals[3 * c], totals[3 * c + 1]);
        if n == 0.0 {
            return Err(LearnError::Config("an evaluation set has no images".into()));
        }
        Ok((counts, loss / n, samples))
    }
}

/// One evaluated patch, for overlays.
pub struct Sample {
    /// Normalised CHW values, as the network saw them.
    pub image: Vec<f32>,
    pub truth: Vec<u8>,
    pub predicted: Vec<u8>,
    pub size: (u32, u32),
}

fn metrics(r: &SegmentationReport, loss: f64) -> Vec<(String, f64)> {
    vec![
        ("loss".into(), loss),
        ("mean_iou".into(), r.mean_iou),
        ("micro_iou".into(), r.micro_iou),
        ("mean_dice".into(), r.mean_dice),
        ("micro_dice".into(), r.micro_dice),
        ("mean_pixel_accuracy".into(), r.mean_pixel_accuracy),
    ]
}

impl Method for Segmenter {
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn step(&mut self, batch: &Batch) -> Result<StepOutput, LearnError> {
        let x = images(batch, 0, self.device);
        let y = self.targets(batch)?;
        let logits = self.net.scores(&x, !self.frozen, true);
        let loss = self.loss(&logits, &y);
        let acc = tch::no_grad(|| {
            let valid = y.ne(self.ignore);
            let right = logits.argmax(1, false).eq_tensor(&y).logical_and(&valid);
            right.sum(Kind::Float).double_value(&[]) / valid.sum(Kind::Float).double_value(&[]).max(1.0)
        });
        Ok(StepOutput { loss, metrics: vec![("pixel_accuracy".into(), acc)] })
    }
    fn evaluate(&mut self, loader: &Loader) -> Result<Vec<(String, f64)>, LearnError> {
        let (counts, loss, _) = self.predict(loader, 0)?;
        Ok(metrics(&counts.report(), loss))
    }
    fn selection_key(&self) -> Option<&'static str> {
        Some("val_mean_iou")
    }
    fn notes(&self) -> &[String] {
        &self.notes
    }
}

/// Overlays of evaluated patches, one row each: the image, the true mask over it, the
/// predicted mask over it (classes coloured, background clear), undoing the normalisation.
pub fn overlays(path: &Path, samples: &[Sample], mean: [f32; 3], std: [f32; 3]) -> Result<(), LearnError> {
    let Some(first) = samples.first() else { return Ok(()) };
    let (w, h) = first.size;
    let mut out = RgbImage::from_pixel(3 * w + 8, samples.len() as u32 * (h + 4), Rgb([255, 255, 255]));
    for (row, s) in samples.iter().enumerate() {
        let y0 = row as u32 * (h + 4);
        let plane = (w * h) as usize;
        for y in 0..h {
            for x in 0..w {
                let i = (y * w + x) as usize;
                let px: [u8; 3] =
                    [0, 1, 2].map(|c| ((s.image[c * plane + i] * std[c] + mean[c]).clamp(0.0, 1.0) * 255.0) as u8);
                let tint = |class: u8| -> Rgb<u8> {
                    if class == 0 || class as usize >= COLOURS.len() {
                        return Rgb(px);
                    }
                    let k = COLOURS[class as usize];
                    Rgb([0, 1, 2].map(|c| (0.45 * px[c] as f32 + 0.55 * k[c] as f32) as u8))
                };
                out.put_pixel(x, y0 + y, Rgb(px));
                out.put_pixel(w + 4 + x, y0 + y, tint(s.truth[i]));
                out.put_pixel(2 * w + 8 + x, y0 + y, tint(s.predicted[i]));
            }
        }
    }
    let save =
        |tmp: &Path| out.save(tmp).map_err(|e| LearnError::Config(format!("{}: cannot write: {e}", path.display())));
    patchtcga_atomic::write_with(path, save, |e| LearnError::io(path, e))
}
