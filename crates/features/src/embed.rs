//! What `patchtcga embed` takes and does: backbone features of a folder of patches (one `.npy`),
//! or of each slide of a list (one `.h5` per slide).

use std::fmt;
use std::path::{Path, PathBuf};

use clap::Args;
use patchtcga_augment::{Preset, Recipe, StainFlags};
use patchtcga_dataset::{Share, SlideRow};
use patchtcga_launch::Node;
use patchtcga_loader::slides::{SlideBatchConfig, SlideReading};
use patchtcga_loader::LoaderConfig;
use patchtcga_model::{Backbone, BackboneWeights, ImportReport};
use tch::{nn, Device};

use patchtcga_engine::config::ImageStats;
use patchtcga_engine::device::parse_device;
use patchtcga_engine::LearnError;

use crate::patch_features::{embed_images, write_features};
use crate::slide_features::{embed_slide_list, provenance, SlideEmbedding, SlideList, SlideListReport};

/// Options of `patchtcga embed`.
#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub backbone: BackboneWeights,
    /// A folder of patches (searched recursively) or a dataset root.
    #[arg(long, required_unless_present = "slides", conflicts_with = "slides")]
    pub images: Option<PathBuf>,
    /// A slide list (CSV with a `slide` column, optional `id`): each slide's tissue grid is read
    /// at `--mpp` in `--image-size` patches and embedded, patches never written, into
    /// `<out>/<id>.h5` (CLAM / TRIDENT layout: `features`, `coords`, attributes).
    #[arg(long)]
    pub slides: Option<PathBuf>,
    /// With --images: the (N, D) float32 .npy (`<stem>.csv` beside it names each row's image).
    /// With --slides: the folder of `.h5` files (slides already there are skipped).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub reading: SlideReading,
    /// With --slides: a folder of `<id>.h5` files whose `coords` (N × 2, level-0 x, y; CLAM's
    /// patching output), or `<id>.csv` files with `x` and `y` columns, give each slide's patches
    /// instead of the tissue grid.
    #[arg(long, requires = "slides")]
    pub coords: Option<PathBuf>,
    /// Run the network under float16 autocast (CUDA; features are stored as float32 unless
    /// --float16).
    #[arg(long)]
    pub autocast: bool,
    /// With --slides: store features as float16 (half the disk; h5py reads numpy float16).
    #[arg(long)]
    pub float16: bool,
    /// With --slides: processes sharing the slide list (rank r embeds slides r, r + world, …).
    #[command(flatten)]
    pub launch: Node,
    /// `eval` (the release's CenterCrop 287 → Resize 224) or `none` (images already at model size).
    #[arg(long, value_enum, default_value_t = Preprocess::Eval)]
    pub preprocess: Preprocess,
    /// Normalisation: imagenet, ptcga, or m0,m1,m2,s0,s1,s2 (default: a preset's own, else imagenet).
    #[arg(long)]
    pub stats: Option<ImageStats>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: Device,
    /// With --slides: each patch's stain normalised to a target's before it is embedded (recorded
    /// in the files' `preprocessing`).
    #[command(flatten)]
    pub stain: StainFlags,
}

/// How `embed --images` brings an image to the model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preprocess {
    /// The release's evaluation view: a centre crop 287/224 times the input side (287 px for
    /// 224), resized to the input.
    Eval,
    /// Nothing: the images are already at the model's input size.
    #[value(name = "none")]
    AsIs,
}

impl Preprocess {
    /// The view recipe that does it.
    fn recipe(self) -> Preset {
        match self {
            Self::Eval => Preset::Eval,
            Self::AsIs => Preset::None,
        }
    }
}

/// Features of a folder of images, written by [`EmbedArgs::images`].
pub struct ImagesEmbedded {
    rows: i64,
    width: i64,
    npy: PathBuf,
    csv: PathBuf,
    seconds: f64,
}

impl EmbedArgs {
    /// The backbone, its weights loaded for the patch size on the device, and what the import did.
    pub fn load_backbone(&self) -> Result<(nn::VarStore, Backbone, ImportReport), LearnError> {
        Ok(self.backbone.load(self.reading.image_size as i64, self.device)?)
    }

    /// The normalisation: `--stats`, or the backbone's own.
    fn stats(&self) -> ImageStats {
        self.stats.clone().unwrap_or_else(|| ImageStats::of(self.backbone.arch))
    }

    /// Embeds every image under `folder` (`--images`) into `--out` and the CSV beside it.
    pub fn images(
        &self,
        folder: &Path,
        backbone: &Backbone,
        progress: &indicatif::ProgressBar,
    ) -> Result<ImagesEmbedded, LearnError> {
        if self.stain.stain_normalize.is_some() {
            return Err(LearnError::Config(
                "--stain-normalize applies to --slides (normalise a patch folder with `build --stain-normalize`)"
                    .into(),
            ));
        }
        let files = patchtcga_dataset::images_under(folder)?;
        if files.is_empty() {
            return Err(LearnError::Config(format!("{}: no images (.jpg, .JPG, .JPEG, .png)", folder.display())));
        }
        let stats = self.stats();
        let (batch_size, workers) = (self.reading.batch_size, self.reading.workers);
        let config = LoaderConfig {
            batch_size,
            workers,
            mean: stats.mean,
            std: stats.std,
            prefetch: 4,
            ..LoaderConfig::default()
        };
        let recipe = Recipe::preset(self.preprocess.recipe(), self.reading.image_size, 0);
        let start = std::time::Instant::now();
        let feats = embed_images(&files, backbone, recipe, config, self.device, progress)?;
        progress.finish();
        let seconds = start.elapsed().as_secs_f64();
        let csv = write_features(&self.out, &feats, &files, folder)?;
        let (rows, width) = (feats.size()[0], feats.size()[1]);
        Ok(ImagesEmbedded { rows, width, npy: self.out.clone(), csv, seconds })
    }

    /// This process's share of the `--slides` list.
    pub fn slide_rows(&self, list: &Path, share: Share) -> Result<Vec<SlideRow>, LearnError> {
        Ok(patchtcga_dataset::read_slides_csv(list)?
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| share.takes(i).then_some(r))
            .collect())
    }

    /// Embeds each slide of `rows` without a file into `<out>/<id>.h5`; `on_slide` hears of each
    /// written or failed.
    pub fn slides(
        &self,
        rows: &[SlideRow],
        backbone: &Backbone,
        progress: &indicatif::ProgressBar,
        on_slide: impl FnMut(&SlideRow, &Result<(PathBuf, usize), String>) + Send,
    ) -> Result<SlideListReport, LearnError> {
        let stats = self.stats();
        let geometry = self.reading.geometry();
        let autocast = self.autocast && self.device.is_cuda();
        let stain = self
            .stain
            .fitted()
            .map_err(|(target, cause)| LearnError::Config(format!("{}: {cause}", target.display())))?;
        let mut provenance = provenance(&self.backbone.arch.to_string(), &self.backbone.weights, &stats, &geometry)?;
        provenance.preprocessing += &self.stain.describe();
        let list = SlideList {
            rows,
            out: &self.out,
            coords: self.coords.as_deref(),
            reading: SlideBatchConfig { stain, ..self.reading.config(stats.mean, stats.std) },
            embedding: SlideEmbedding { geometry, device: self.device, float16: self.float16, autocast },
            provenance,
        };
        let report = embed_slide_list(list, backbone, progress, on_slide)?;
        progress.finish();
        Ok(report)
    }
}

/// `100 × 384 features → f.npy (rows named in f.csv)` and the rate.
impl fmt::Display for ImagesEmbedded {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let (n, d) = (self.rows, self.width);
        writeln!(f, "{n} × {d} features → {} (rows named in {})", self.npy.display(), self.csv.display())?;
        write!(f, "embedded in {:.1} s: {:.2} images/s", self.seconds, n as f64 / self.seconds)
    }
}
