//! `patchtcga`: build pathology patch datasets from whole-slide images in the PatchTCGA
//! release's layouts, split them by slide, check downloads, summarise datasets, train backbones
//! and embed patches.

mod infer;
mod networks;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use patchtcga_dataset::{archive, split, stats, BuildOptions, DatasetKind, ImageFormat, Index, Task, UnknownFolders};
use patchtcga_slide::{
    AnnotationGroups, PatchGeometry, QualityCheck, Sampler, Sampling, Slide, TissueMask, TissueParams,
};

#[derive(Parser)]
#[command(
    name = "patchtcga",
    version,
    about = "Pathology patch datasets at a fixed µm/px, from whole-slide images to the PatchTCGA layouts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tile slides into patches in one of the release's dataset layouts.
    Build {
        #[command(subcommand)]
        dataset: BuildDataset,
    },
    /// Slide-level train/val/test splits (JSON and the release's pickle), or check existing ones.
    Split(SplitArgs),
    /// Check files against an MD5 list (md5sum format).
    Verify {
        /// The MD5 list, e.g. MD5SUMS.
        list: PathBuf,
        /// Folder the listed paths are relative to (default: the list's folder).
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// Report what in a dataset folder the release's loaders would skip or misread: image names
    /// whose extension, read from the first '.', is not .jpg .JPG .JPEG .png; segPANDA200 names
    /// containing `mask` or images without their mask; unknown class folders. Exit status 1 if any.
    VerifyLayout {
        /// Dataset root.
        dataset: PathBuf,
        /// Layout (default: detected).
        #[arg(long, value_enum)]
        layout: Option<Layout>,
    },
    /// Join a split download (PTCGA200_p_*) and unpack the .tar.gz safely.
    Extract {
        /// Path prefix of the parts, e.g. downloads/PTCGA200_p_ (every file starting with it, in name order).
        prefix: PathBuf,
        /// Folder to unpack into.
        #[arg(long)]
        out: PathBuf,
        /// MD5 list of the parts and/or the joined archive; checked before unpacking.
        #[arg(long)]
        md5: Option<PathBuf>,
        /// Name of the joined archive in the MD5 list.
        #[arg(long, default_value = "PTCGA200.tar.gz")]
        joined_name: String,
    },
    /// Patch and slide counts per class, channel mean/std for `image_stats`, and a mosaic.
    Stats {
        /// Dataset root.
        dataset: PathBuf,
        /// Layout (default: detected).
        #[arg(long, value_enum)]
        layout: Option<Layout>,
        /// Measure pixels on this many random images instead of all.
        #[arg(long)]
        sample: Option<usize>,
        /// Write a mosaic PNG of sample patches, one row per class.
        #[arg(long)]
        mosaic: Option<PathBuf>,
        /// Patches per class in the mosaic.
        #[arg(long, default_value_t = 8)]
        per_class: usize,
        /// Seed for the samples.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Worker threads (default: all cores).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Measure throughput: `patchtcga bench loader …` (data nodes), `patchtcga bench step …`
    /// (training steps), `patchtcga bench pretrain …` (a method's whole update).
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// Train a backbone as a run config says (supervised organ classification, SimCLR, BYOL,
    /// MoCo v2, DINO, MAE).
    Pretrain(networks::PretrainArgs),
    /// Fine-tune on a benchmark (PCam200): full or linear probe, best validation epoch, test
    /// report with accuracy interval, balanced accuracy, ROC-AUC, F1 and confusion matrix.
    Finetune(networks::FinetuneArgs),
    /// Logistic-regression probe and k-NN classifier on embedded splits (from `embed`): a
    /// checkpoint compared in seconds.
    Probe(networks::ProbeArgs),
    /// Slide a fine-tuned classifier over a whole slide's tissue: a probability heat map over the
    /// thumbnail, and the raw map.
    Infer(infer::InferArgs),
    /// One page of runs: a table of pretraining and benchmark results with intervals, curves and
    /// confusion matrices (`--out report.html`, pictures embedded, or `report.md`).
    Report {
        /// Run folders, or folders of run folders (e.g. `runs`).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// `.html` (self-contained) or `.md`.
        #[arg(long, default_value = "report.html")]
        out: PathBuf,
    },
    /// Backbone features of a folder of patches, from any backbone and PyTorch weights, as .npy.
    Embed(networks::EmbedArgs),
    /// Write a backbone's weights for PyTorch (.pth or .safetensors, torchvision / timm names).
    Export(networks::ExportArgs),
    /// Show a slide's size, levels, resolution and tissue.
    Info {
        /// Slide file.
        slide: PathBuf,
        /// µm/px to use when the slide has none.
        #[arg(long)]
        mpp_override: Option<f64>,
    },
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Time training steps (forward, backward, update) on synthetic images; prints images/s.
    Step(networks::StepArgs),
    /// Time a pretraining method's update (views → loss → update) on synthetic views of its
    /// recipe, as a run config says; prints images/s.
    Pretrain(networks::MethodStepArgs),
    /// Decode + augment + batch images of a dataset with a view recipe; prints images/s.
    Loader {
        /// Dataset root (any of the release's layouts).
        #[arg(long)]
        dataset: PathBuf,
        /// View recipe: supervised, eval, simclr, byol, dino, mae, segmentation.
        #[arg(long, default_value = "simclr")]
        recipe: String,
        /// Worker threads.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// How long to run.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Images per batch.
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        /// Side of the (global) views.
        #[arg(long, default_value_t = 224)]
        size: u32,
        /// DINO local views.
        #[arg(long, default_value_t = 10)]
        local_crops: usize,
    },
}

#[derive(Subcommand)]
enum BuildDataset {
    /// Organ-labelled patches: <out>/<organ>/<slide>_<x>_<y>.jpg. CSV columns: slide, organ [, id].
    Ptcga200 {
        #[command(flatten)]
        common: BuildArgs,
    },
    /// Tumour/normal patches from Camelyon16: <out>/{train,val,test}/{normal,tumor}/<case>/….
    /// CSV columns: slide, annotation (ASAP XML; empty for normal slides) [, case, split, id].
    Pcam200 {
        #[command(flatten)]
        common: BuildArgs,
        /// A patch is tumour when this fraction of its centre region lies in tumour polygons.
        #[arg(long, default_value_t = 0.5)]
        tumor_threshold: f64,
        /// Side of the centre region, as a fraction of the patch side.
        #[arg(long, default_value_t = 0.5)]
        centre: f64,
        /// Annotation groups that mark tumour (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "Tumor,_0,_1,metastases")]
        tumor_groups: Vec<String>,
        /// Annotation groups cut out of tumour (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "_2,Exclusion")]
        exclusion_groups: Vec<String>,
    },
    /// Patches with 6-class label masks from PANDA: <out>/{train,val,test}/<grade>/<case>/…
    /// and <stem>_mask.png beside each. CSV columns: slide, mask, data_provider, isup_grade
    /// [, gleason_score, case, split, id].
    Segpanda200 {
        #[command(flatten)]
        common: BuildArgs,
    },
}

#[derive(Args)]
struct BuildArgs {
    /// CSV of slides (header; paths relative to the CSV or absolute).
    #[arg(long)]
    slides: PathBuf,
    /// Dataset folder to write (re-running resumes it).
    #[arg(long)]
    out: PathBuf,
    /// Target resolution, µm per pixel.
    #[arg(long)]
    mpp: Option<f64>,
    /// Patch side in pixels.
    #[arg(long)]
    size: Option<u32>,
    /// Field of view in µm (with --mpp or --size, fixes the other).
    #[arg(long)]
    field_um: Option<f64>,
    /// Most patches per slide (per class for pcam200); default: every accepted position.
    #[arg(long)]
    per_slide: Option<usize>,
    /// Candidate positions: non-overlapping grid cells, or random positions over tissue.
    #[arg(long, value_enum, default_value_t = SamplingArg::Grid)]
    sampling: SamplingArg,
    /// Seed for sampling and split assignment.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Minimum tissue fraction of a patch's footprint (by the tissue mask).
    #[arg(long, default_value_t = 0.5)]
    min_tissue: f64,
    /// Resolution of the tissue mask, µm per pixel.
    #[arg(long, default_value_t = 8.0)]
    tissue_mpp: f64,
    /// Fixed saturation threshold (0-255) instead of Otsu's.
    #[arg(long)]
    saturation_threshold: Option<u8>,
    /// Reject patches with more than this fraction of glass/black pixels.
    #[arg(long, default_value_t = 0.5)]
    max_background: f64,
    /// Reject patches whose variance of the Laplacian is below this (out of focus).
    #[arg(long, default_value_t = 15.0)]
    min_sharpness: f64,
    /// Level-0 µm/px for slides whose metadata has none (or is wrong).
    #[arg(long)]
    mpp_override: Option<f64>,
    /// Patch image format.
    #[arg(long, value_enum, default_value_t = FormatArg::Jpg)]
    format: FormatArg,
    /// JPEG quality (1-100).
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(1..=100))]
    jpeg_quality: u8,
    /// Fraction of cases sent to val when the CSV has no split column (pcam200, segpanda200).
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f64,
    /// Fraction of cases sent to test when the CSV has no split column.
    #[arg(long, default_value_t = 0.2)]
    test_fraction: f64,
}

#[derive(Args)]
struct SplitArgs {
    /// Dataset root (PTCGA200 layout).
    dataset: PathBuf,
    /// Folder for splits.json and 3fold_dict_idx_filenames.pickle (default: the dataset root).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Check and convert an existing split pickle (e.g. the release's) instead of drawing one.
    #[arg(long, conflicts_with = "from_json")]
    from_pickle: Option<PathBuf>,
    /// Check and convert an existing splits.json instead of drawing one.
    #[arg(long)]
    from_json: Option<PathBuf>,
    /// Number of trials.
    #[arg(long, default_value_t = 3)]
    trials: usize,
    /// Fraction of each organ's slides for validation (rounded up).
    #[arg(long, default_value_t = 0.02)]
    val_fraction: f64,
    /// Fraction of each organ's slides for test (rounded up).
    #[arg(long, default_value_t = 0.01)]
    test_fraction: f64,
    /// Seed of the draw.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Treat every N consecutive files of an organ as one slide (for names that do not carry the slide).
    #[arg(long)]
    patches_per_slide: Option<usize>,
}

#[derive(Clone, Copy, ValueEnum)]
enum SamplingArg {
    Grid,
    Random,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Jpg,
    Png,
}

#[derive(Clone, Copy, ValueEnum)]
enum Layout {
    Ptcga200,
    Pcam200,
    Segpanda200,
}

impl Layout {
    fn kind(self) -> DatasetKind {
        match self {
            Layout::Ptcga200 => DatasetKind::Ptcga200,
            Layout::Pcam200 => DatasetKind::Pcam200,
            Layout::Segpanda200 => DatasetKind::SegPanda200,
        }
    }
}

fn main() -> ExitCode {
    // LibTorch reports failures inside a network's passes (out of memory, a peer lost during a
    // synchronised batch norm) as panics: print them as one error line, not a crash report.
    std::panic::set_hook(Box::new(|info| {
        let p = info.payload();
        let msg = p.downcast_ref::<String>().map(String::as_str).or_else(|| p.downcast_ref::<&str>().copied());
        eprintln!("error: {}", msg.unwrap_or("internal failure"));
    }));
    // As destroy_process_group: the run's process group, if this process joined one, ends here.
    let done = run(Cli::parse()).and_then(|()| patchtcga_dist::group().map_or(Ok(()), |g| Ok(g.shutdown()?)));
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The context chain, without repeating a cause a message already quotes.
            let mut msg = e.to_string();
            for cause in e.chain().skip(1).map(ToString::to_string) {
                if !msg.contains(&cause) {
                    msg = format!("{msg}: {cause}");
                }
            }
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn workers(n: Option<usize>) -> Result<()> {
    if let Some(n) = n {
        rayon::ThreadPoolBuilder::new().num_threads(n.max(1)).build_global().context("starting worker threads")?;
    }
    Ok(())
}

pub(crate) fn bar(unit: &str) -> ProgressBar {
    let pb = ProgressBar::new(0);
    let template = format!("{{spinner}} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {unit} {{msg}} (eta {{eta}})");
    pb.set_style(ProgressStyle::with_template(&template).expect("valid template"));
    pb
}

/// Writes the report of `paths` (run folders, or folders holding them) to `out`.
fn report(paths: &[PathBuf], out: &Path) -> Result<()> {
    let mut dirs = Vec::new();
    for p in paths {
        if p.join("config.toml").exists() {
            dirs.push(p.clone());
            continue;
        }
        let mut inside: Vec<PathBuf> = std::fs::read_dir(p)
            .with_context(|| format!("{}: cannot read", p.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|d| d.join("config.toml").exists())
            .collect();
        if inside.is_empty() {
            bail!("{}: neither a run folder (config.toml) nor a folder of runs", p.display());
        }
        inside.sort();
        dirs.extend(inside);
    }
    let runs = dirs.iter().map(|d| patchtcga_report::Run::read(d)).collect::<Result<Vec<_>, _>>()?;
    let text = match out.extension().and_then(|e| e.to_str()) {
        Some("md") => patchtcga_report::markdown(
            &runs,
            out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")),
        ),
        Some("html" | "htm") => patchtcga_report::html(&runs)?,
        _ => bail!("--out {}: .html or .md", out.display()),
    };
    let tmp = out.with_file_name(format!(".{}.tmp", out.file_name().and_then(|n| n.to_str()).unwrap_or("report")));
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, out))
        .with_context(|| format!("{}: cannot write", out.display()))?;
    println!("{} runs → {}", runs.len(), out.display());
    Ok(())
}

fn bytes_bar() -> ProgressBar {
    let pb = ProgressBar::new(0);
    let t = "{spinner} [{elapsed_precise}] {bar:40} {bytes}/{total_bytes} {bytes_per_sec} (eta {eta})";
    pb.set_style(ProgressStyle::with_template(t).expect("valid template"));
    pb
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Build { dataset } => build(dataset),
        Command::Split(args) => split_cmd(args),
        Command::Pretrain(args) => networks::pretrain(args),
        Command::Embed(args) => networks::embed(args),
        Command::Export(args) => networks::export(args),
        Command::Verify { list, root } => {
            let report = archive::verify(&list, root.as_deref(), &bytes_bar())?;
            for p in &report.mismatched {
                eprintln!("MISMATCH {}", p.display());
            }
            for p in &report.missing {
                eprintln!("MISSING  {}", p.display());
            }
            println!("{} ok, {} mismatched, {} missing", report.ok, report.mismatched.len(), report.missing.len());
            if !report.passed() {
                bail!(
                    "{}: {} file(s) failed the check",
                    list.display(),
                    report.mismatched.len() + report.missing.len()
                );
            }
            Ok(())
        }
        Command::Extract { prefix, out, md5, joined_name } => {
            let parts = archive::find_parts(&prefix)?;
            println!(
                "joining {} part(s): {}",
                parts.len(),
                parts.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            );
            let report =
                archive::extract(&parts, &out, md5.as_deref().map(|m| (m, joined_name.as_str())), &bytes_bar())?;
            println!("unpacked {} files ({} bytes) into {}", report.files, report.bytes, out.display());
            Ok(())
        }
        Command::VerifyLayout { dataset, layout } => verify_layout(&dataset, layout.map(Layout::kind)),
        Command::Stats { dataset, layout, sample, mosaic, per_class, seed, workers: w } => {
            workers(w)?;
            let index = Index::scan(&dataset, layout.map(Layout::kind))?;
            if !index.problems.is_empty() {
                eprintln!(
                    "note: {} image file(s) have names the release's loaders skip or misread; `patchtcga verify-layout {}` \
                     lists them",
                    index.problems.len(),
                    dataset.display()
                );
            }
            let s = stats::compute(&index, sample, seed, &bar("images"))?;
            println!(
                "{} dataset at {}: {} patches from {} slides",
                index.kind.name(),
                dataset.display(),
                s.patches,
                s.slides
            );
            println!("{:<20} {:>5} {:>10} {:>8}", "class", "id", "patches", "slides");
            for c in &s.classes {
                println!("{:<20} {:>5} {:>10} {:>8}", c.name, c.label, c.patches, c.slides);
            }
            println!("pixels of {} image(s), RGB in [0, 1]:", s.measured);
            println!("image_stats mean = ({:.4}, {:.4}, {:.4})", s.mean[0], s.mean[1], s.mean[2]);
            println!("image_stats std  = ({:.4}, {:.4}, {:.4})", s.std[0], s.std[1], s.std[2]);
            if let Some(m) = s.mask_pixels {
                let total = m.iter().sum::<u64>().max(1) as f64;
                for (k, n) in m.iter().enumerate() {
                    println!(
                        "mask class {k} ({}): {:.2}%",
                        patchtcga_slide::SEGPANDA_CLASSES[k],
                        100.0 * *n as f64 / total
                    );
                }
            }
            if let Some(path) = mosaic {
                let (img, rows) = stats::mosaic(&index, per_class, 128, seed)?;
                img.save(&path).with_context(|| format!("writing {}", path.display()))?;
                println!("mosaic {} (rows: {})", path.display(), rows.join(", "));
            }
            Ok(())
        }
        Command::Bench { what: BenchWhat::Step(args) } => networks::bench_step(args),
        Command::Bench { what: BenchWhat::Pretrain(args) } => networks::bench_method(args),
        Command::Finetune(args) => networks::finetune(args),
        Command::Probe(args) => networks::probe(args),
        Command::Infer(args) => infer::infer(args),
        Command::Report { runs, out } => report(&runs, &out),
        Command::Bench {
            what: BenchWhat::Loader { dataset, recipe, workers, seconds, batch_size, size, local_crops },
        } => bench_loader(&dataset, &recipe, workers, seconds, batch_size, size, local_crops),
        Command::Info { slide, mpp_override } => {
            let s = Slide::open(&slide, mpp_override)?;
            let (w, h) = s.dimensions();
            let mpp = s.mpp();
            println!("{}: {w} × {h} px, {:.4} × {:.4} µm/px ({:?})", slide.display(), mpp.x, mpp.y, mpp.source);
            for l in 0..s.level_count() {
                let (lw, lh) = s.level_dimensions(l);
                println!("  level {l}: {lw} × {lh} px, downsample {:.3}", s.level_downsample(l));
            }
            let t = TissueMask::detect(&s, &TissueParams::default())?;
            println!(
                "tissue: {:.1}% of the slide (saturation threshold {})",
                100.0 * t.tissue_fraction(),
                t.threshold()
            );
            let g = PatchGeometry::default();
            let (fw, _) = s.footprint(&g);
            println!(
                "a {} px patch at {} µm/px covers {:.1} level-0 px and reads level {}",
                g.size,
                g.mpp,
                fw,
                s.level_for_downsample(fw / g.size as f64)
            );
            Ok(())
        }
    }
}

fn build(dataset: BuildDataset) -> Result<()> {
    let (task, a) = match dataset {
        BuildDataset::Ptcga200 { common } => (Task::Ptcga200, common),
        BuildDataset::Pcam200 { common, tumor_threshold, centre, tumor_groups, exclusion_groups } => {
            if !(0.0..=1.0).contains(&tumor_threshold) || centre <= 0.0 || centre > 1.0 {
                bail!("--tumor-threshold must be in [0, 1] and --centre in (0, 1]");
            }
            let groups = AnnotationGroups { tumor: tumor_groups, exclusion: exclusion_groups };
            (Task::Pcam200 { groups, tumor_threshold, centre }, common)
        }
        BuildDataset::Segpanda200 { common } => (Task::SegPanda200, common),
    };
    workers(a.workers)?;
    for (flag, v) in [
        ("--min-tissue", a.min_tissue),
        ("--max-background", a.max_background),
        ("--val-fraction", a.val_fraction),
        ("--test-fraction", a.test_fraction),
    ] {
        if !(0.0..=1.0).contains(&v) {
            bail!("{flag} must be in [0, 1], got {v}");
        }
    }
    let opts = BuildOptions {
        out: a.out.clone(),
        geometry: PatchGeometry::resolve(a.mpp, a.size, a.field_um)?,
        tissue: TissueParams {
            mask_mpp: a.tissue_mpp,
            saturation_threshold: a.saturation_threshold,
            ..TissueParams::default()
        },
        quality: QualityCheck { max_background: a.max_background, min_sharpness: a.min_sharpness },
        sampler: Sampler {
            sampling: match a.sampling {
                SamplingArg::Grid => Sampling::Grid,
                SamplingArg::Random => Sampling::Random,
            },
            min_tissue: a.min_tissue,
            seed: a.seed,
        },
        per_slide: a.per_slide,
        format: match a.format {
            FormatArg::Jpg => ImageFormat::Jpeg { quality: a.jpeg_quality },
            FormatArg::Png => ImageFormat::Png,
        },
        mpp_override: a.mpp_override,
        val_fraction: a.val_fraction,
        test_fraction: a.test_fraction,
    };
    let rows = patchtcga_dataset::read_slides_csv(&a.slides)?;
    println!(
        "{}: {} slide(s) → {} ({} px at {} µm/px, {:.1} µm field)",
        task.kind().name(),
        rows.len(),
        a.out.display(),
        opts.geometry.size,
        opts.geometry.mpp,
        opts.geometry.field_um()
    );
    let report = patchtcga_dataset::build(&task, &rows, &opts, &bar("slides"))?;
    if report.renamed > 0 {
        println!(
            "renamed {} patch(es) of an earlier build to names the release's loaders list (slide ids without '.'); \
             split files drawn before name the old files: draw them again with `patchtcga split`",
            report.renamed
        );
    }
    println!(
        "{} slide(s): {} tiled, {} already complete, {} failed; {} new patches, {} in {}",
        report.slides,
        report.built,
        report.skipped,
        report.failures.len(),
        report.new_patches,
        report.total_patches,
        a.out.join("manifest.csv").display()
    );
    if !report.failures.is_empty() {
        for f in &report.failures {
            eprintln!("  {f}");
        }
        bail!(
            "{} of {} slide(s) failed (the others are complete; re-run to retry only the failed ones)",
            report.failures.len(),
            report.slides
        );
    }
    Ok(())
}

/// Prints what the release's loaders would skip or misread in a dataset; an error if anything.
fn verify_layout(dataset: &Path, kind: Option<DatasetKind>) -> Result<()> {
    let index = Index::scan_with(dataset, kind, UnknownFolders::Skip)?;
    for f in &index.skipped_folders {
        println!(
            "FOLDER  {}: not a class folder of the {} layout; its images are not read",
            f.display(),
            index.kind.name()
        );
    }
    for p in &index.problems {
        println!("FILE    {}: {}", p.path.display(), p.cause);
    }
    println!(
        "{} layout at {}: {} image(s) listed as the release's loaders list them, {} file(s) and {} folder(s) not",
        index.kind.name(),
        dataset.display(),
        index.entries.len(),
        index.problems.len(),
        index.skipped_folders.len()
    );
    if !index.problems.is_empty() || !index.skipped_folders.is_empty() {
        bail!(
            "{}: the release's loaders would skip or misread what is listed above (patches an earlier patchtcga \
             named so are renamed in place by re-running the dataset's `patchtcga build` command)",
            dataset.display()
        );
    }
    Ok(())
}

fn split_cmd(a: SplitArgs) -> Result<()> {
    let index = Index::scan(&a.dataset, Some(DatasetKind::Ptcga200))?;
    let params = split::SplitParams {
        trials: a.trials,
        val_fraction: a.val_fraction,
        test_fraction: a.test_fraction,
        seed: a.seed,
        patches_per_slide: a.patches_per_slide,
    };
    let out_dir = a.out_dir.unwrap_or_else(|| a.dataset.clone());
    let json = out_dir.join("splits.json");
    let pickle = out_dir.join("3fold_dict_idx_filenames.pickle");
    let (splits, source): (split::Splits, &Path) = match (&a.from_pickle, &a.from_json) {
        (Some(p), _) => (split::read_pickle(p)?, p),
        (_, Some(j)) => (split::read_json(j)?, j),
        _ => (split::make(&index, &params)?, &a.dataset),
    };
    let counts = split::check(&index, &splits, &params, source)?;
    for (trial, [train, val, test]) in &counts {
        println!("trial {trial}: train {train}, val {val}, test {test} patches");
    }
    if a.from_json.is_none() {
        split::write_json(&json, &splits)?;
        println!("wrote {}", json.display());
    }
    if a.from_pickle.is_none() {
        split::write_pickle(&pickle, &splits)?;
        println!("wrote {}", pickle.display());
    }
    Ok(())
}

fn bench_loader(
    dataset: &Path,
    recipe: &str,
    workers: usize,
    seconds: f64,
    batch_size: usize,
    size: u32,
    local_crops: usize,
) -> Result<()> {
    use patchtcga_loader::{samples, Loader, LoaderConfig, OnBadInput};
    let index = Index::scan(dataset, None)?;
    let recipe = patchtcga_augment::Recipe::preset(recipe, size, local_crops)?;
    let config = LoaderConfig {
        batch_size,
        shuffle: true,
        drop_last: false,
        seed: 0,
        rank: 0,
        world_size: 1,
        workers,
        prefetch: 2,
        mean: patchtcga_augment::IMAGENET_MEAN,
        std: patchtcga_augment::IMAGENET_STD,
        on_bad_input: OnBadInput::Fail,
    };
    let loader = Loader::new(samples(&index, None)?, recipe.clone(), config)?;
    // The clock starts once the first batch has arrived, as in bench/loader_torchvision.py.
    let mut start = None;
    let (mut images, mut epoch) = (0usize, 0u64);
    'run: loop {
        for batch in loader.epoch(epoch) {
            let n = batch?.labels.len();
            let Some(start) = start else {
                start = Some(std::time::Instant::now());
                continue;
            };
            images += n;
            if start.elapsed().as_secs_f64() >= seconds {
                break 'run;
            }
        }
        epoch += 1;
    }
    let secs = start.map_or(0.0, |s| s.elapsed().as_secs_f64());
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        })
        .unwrap_or_else(|| "?".into());
    println!(
        "{}: {images} images ({} views each) in {secs:.2} s with {workers} worker(s): {:.1} images/s, peak memory {peak} kB",
        recipe.name,
        recipe.views.len(),
        images as f64 / secs
    );
    Ok(())
}
