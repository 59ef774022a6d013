//! The builders: slides tiled in parallel into one of the release's layouts, resumably, with
//! a thumbnail map per slide, `manifest.csv` and `MD5SUMS`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::{ImageEncoder, Rgb, RgbImage};
use indicatif::ProgressBar;
use patchtcga_augment::{Normalized, StainNormalizer};
use patchtcga_slide::{
    feature_collection, tile_object, AnnotationGroups, Annotations, Candidate, LabelScheme, PatchGeometry,
    QualityCheck, QualityVerdict, Roi, Sampler, Slide, SlideOptions, TissueMask, TissueParams,
};
use rand::{seq::SliceRandom, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::kind::{DatasetKind, Split};
use crate::layout::{organ_class, ORGANS, POSITION_MAP_DIR};
use crate::manifest::{md5_hex, read_manifest_json, write_manifest, write_qc, ManifestRow, SlideQc};
use crate::names::name_id;
use crate::{atomic, DatasetError, Result, SlideRow};
use patchtcga_launch::Share;

/// What a build makes: the dataset layout and its labelling rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    /// Organ-labelled patches: `<out>/<organ>/<slide>_<x>_<y>.<ext>`.
    Ptcga200,
    /// Tumour/normal patches from Camelyon slides: `<out>/<split>/{normal,tumor}/<case>/…`.
    Pcam200 {
        /// Annotation groups that mark tumour and exclusions.
        groups: AnnotationGroups,
        /// A patch is tumour when at least this fraction of its centre region is tumour.
        tumor_threshold: f64,
        /// Side of the centre region as a fraction of the patch side.
        centre: f64,
    },
    /// Patches with label masks from PANDA slides: `<out>/<split>/<grade>/<case>/…` and
    /// `<stem>_mask.png` beside each image.
    SegPanda200,
}

impl Task {
    /// The layout this task writes.
    pub fn kind(&self) -> DatasetKind {
        match self {
            Self::Ptcga200 => DatasetKind::Ptcga200,
            Self::Pcam200 { .. } => DatasetKind::Pcam200,
            Self::SegPanda200 => DatasetKind::SegPanda200,
        }
    }
}

/// Encoding of patch images (label masks are always PNG).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ImageFormat {
    /// JPEG at a quality of 1–100.
    Jpeg {
        /// Quality, 1–100.
        quality: u8,
    },
    /// Lossless PNG.
    Png,
}

impl ImageFormat {
    fn extension(self) -> &'static str {
        match self {
            Self::Jpeg { .. } => "jpg",
            Self::Png => "png",
        }
    }
}

/// Everything a build needs besides the slide list.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Dataset root to write.
    pub out: PathBuf,
    /// Patch size and resolution.
    pub geometry: PatchGeometry,
    /// Tissue detection.
    pub tissue: TissueParams,
    /// Blank/blur rejection.
    pub quality: QualityCheck,
    /// Candidate positions.
    pub sampler: Sampler,
    /// Most patches per slide (per class for PCam200); `None` takes every accepted position.
    pub per_slide: Option<usize>,
    /// Patch image encoding.
    pub format: ImageFormat,
    /// How slides are opened: µm/px override, reader, tile cache.
    pub slide: SlideOptions,
    /// Fraction of cases sent to `val` when the CSV gives no split (PCam200, segPANDA200).
    pub val_fraction: f64,
    /// Fraction of cases sent to `test` when the CSV gives no split.
    pub test_fraction: f64,
    /// Stain normalisation applied to every patch before it is written.
    pub stain: Option<StainNormalizer>,
    /// This process's share of the slide list when several build into one folder: rank `rank`
    /// of `world` tiles slides `rank`, `rank + world`, … of the list. They coordinate through
    /// the folder alone: each slide's record is written when its patches are, and whichever rank
    /// finds every slide settled (recorded, or failed) when it finishes writes `manifest.csv`
    /// and `MD5SUMS`.
    pub share: Share,
}

/// The outcome of a build.
#[derive(Debug, Clone, Default)]
pub struct BuildReport {
    /// Slides in the list.
    pub slides: usize,
    /// Slides tiled by this run.
    pub built: usize,
    /// Slides already complete from an earlier run.
    pub skipped: usize,
    /// One message per failed slide, naming the file and the cause.
    pub failures: Vec<String>,
    /// Patches written by this run.
    pub new_patches: usize,
    /// Patches in the dataset's manifest after this run.
    pub total_patches: usize,
    /// Patches of an earlier build renamed to the names the release's loaders read (and masks).
    pub renamed: usize,
    /// Slides of the list that other ranks have yet to settle; while any are, `manifest.csv`
    /// and `MD5SUMS` are left to the rank that settles the last.
    pub pending: usize,
}

/// The folder of build bookkeeping inside the dataset root (hidden from loaders).
const STATE_DIR: &str = ".patchtcga";

/// Tiles every slide of `rows` (this process's [`Share`] of them) into `opts.out` in `task`'s
/// layout, in parallel, writing each patch atomically, a thumbnail map and a QuPath patch grid
/// per slide, and at the end `manifest.csv`, `MD5SUMS` and `qc.csv`. Resumable: slides completed by an earlier run with the
/// same settings are skipped. A slide that fails is reported (and marked, so other ranks know
/// it settled) and the others still complete.
pub fn build(task: &Task, rows: &[SlideRow], opts: &BuildOptions, progress: &ProgressBar) -> Result<BuildReport> {
    check_options(task, opts)?;
    let state = opts.out.join(STATE_DIR);
    let records = state.join("slides");
    std::fs::create_dir_all(&records).map_err(DatasetError::io(&records))?;
    let failed = state.join("failed");
    std::fs::create_dir_all(&failed).map_err(DatasetError::io(&failed))?;
    let qc = state.join("qc");
    std::fs::create_dir_all(&qc).map_err(DatasetError::io(&qc))?;
    check_settings(&state.join("settings.txt"), task, opts)?;
    let name_ids = name_ids(task.kind(), rows, &records)?;
    // An earlier build's files are renamed by one rank only.
    let renamed = if opts.share.rank == 0 { upgrade_records(&opts.out, &records, rows, &name_ids)? } else { 0 };
    let splits = assign_splits(task, rows, opts)?;
    let mine: Vec<&SlideRow> = rows.iter().enumerate().filter(|(i, _)| opts.share.takes(*i)).map(|(_, r)| r).collect();

    progress.set_length(mine.len() as u64);
    let written = std::sync::atomic::AtomicUsize::new(0);
    let on_patches = |n: usize| {
        let total = written.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
        progress.set_message(format!("{total} patches"));
    };
    let job =
        SlideTiling { task, opts, name_ids: &name_ids, splits: &splits, records: &records, failed: &failed, qc: &qc };
    let outcomes: Vec<Outcome> = mine
        .par_iter()
        .map(|row| {
            let outcome = job.settle(row, &on_patches);
            if let Outcome::Failed(msg) = &outcome {
                progress.println(format!("failed: {msg}"));
            }
            progress.inc(1);
            outcome
        })
        .collect();

    let mut report = BuildReport { slides: mine.len(), renamed, ..Default::default() };
    for o in outcomes {
        match o {
            Outcome::Built(n) => {
                report.built += 1;
                report.new_patches += n;
            }
            Outcome::Skipped => report.skipped += 1,
            Outcome::Failed(msg) => report.failures.push(msg),
        }
    }
    report.pending = rows
        .iter()
        .filter(|r| {
            !records.join(format!("{}.json", r.id)).is_file() && !failed.join(format!("{}.txt", r.id)).is_file()
        })
        .count();
    if report.pending == 0 {
        report.total_patches = write_dataset_manifest(&opts.out, &records)?;
        write_dataset_qc(&opts.out, &qc)?;
    }
    Ok(report)
}

/// Refuses a fraction outside [0, 1] (or a PCam200 centre region outside (0, 1]), naming its flag.
fn check_options(task: &Task, opts: &BuildOptions) -> Result<()> {
    let mut fractions = vec![
        ("--min-tissue", opts.sampler.min_tissue),
        ("--max-ink", opts.tissue.max_ink),
        ("--max-background", opts.quality.max_background),
        ("--val-fraction", opts.val_fraction),
        ("--test-fraction", opts.test_fraction),
    ];
    if let Task::Pcam200 { tumor_threshold, centre, .. } = task {
        fractions.push(("--tumor-threshold", *tumor_threshold));
        if *centre <= 0.0 {
            return Err(DatasetError::Usage(format!("--centre must be in (0, 1], got {centre}")));
        }
        fractions.push(("--centre", *centre));
    }
    match fractions.into_iter().find(|(_, v)| !(0.0..=1.0).contains(v)) {
        Some((flag, v)) => Err(DatasetError::Usage(format!("{flag} must be in [0, 1], got {v}"))),
        None => Ok(()),
    }
}

impl BuildOptions {
    /// `ptcga200: 3 slide(s) → out (512 px at 0.39 µm/px, 199.7 µm field)`, after `rank 1 of 2: `
    /// when the list is shared.
    pub fn plan(&self, task: &Task, slides: usize) -> String {
        let g = self.geometry;
        format!(
            "{}{}: {slides} slide(s) → {} ({} px at {} µm/px, {:.1} µm field)",
            self.share.prefix(),
            task.kind().name(),
            self.out.display(),
            g.size,
            g.mpp,
            g.field_um()
        )
    }
}

impl BuildReport {
    /// What a run did: a note on patches renamed, if any, then a line of slides tiled, skipped and
    /// failed, patches written, and where the manifest is (or how many slides other ranks still
    /// hold).
    pub fn summary(&self, out: &Path) -> String {
        let renamed = match self.renamed {
            0 => String::new(),
            n => format!(
                "renamed {n} patch(es) of an earlier build to names the release's loaders list (slide ids without \
                 '.'); split files drawn before name the old files: draw them again with `patchtcga split`\n"
            ),
        };
        let counts = format!(
            "{} slide(s): {} tiled, {} already complete, {} failed; {} new patches",
            self.slides,
            self.built,
            self.skipped,
            self.failures.len(),
            self.new_patches
        );
        if self.pending == 0 {
            format!("{renamed}{counts}, {} in {}", self.total_patches, out.join("manifest.csv").display())
        } else {
            format!(
                "{renamed}{counts}; {} slide(s) of other ranks still pending: the rank that settles the last writes \
                 manifest.csv and MD5SUMS",
                self.pending
            )
        }
    }
}

/// What every slide of a build shares: the task, options, names, splits and bookkeeping folders.
struct SlideTiling<'a> {
    task: &'a Task,
    opts: &'a BuildOptions,
    name_ids: &'a HashMap<String, String>,
    splits: &'a HashMap<String, Split>,
    records: &'a Path,
    failed: &'a Path,
    qc: &'a Path,
}

impl SlideTiling<'_> {
    /// Tiles `row` unless an earlier run recorded it, then records it (or marks it failed, for
    /// other ranks to see it settled).
    fn settle(&self, row: &SlideRow, on_patches: &(dyn Fn(usize) + Sync)) -> Outcome {
        let record = self.records.join(format!("{}.json", row.id));
        let failure = self.failed.join(format!("{}.txt", row.id));
        if record.is_file() {
            let _ = std::fs::remove_file(&failure);
            return Outcome::Skipped;
        }
        let split = self.splits.get(&row.case).copied();
        let job = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tile_slide(self.task, row, &self.name_ids[&row.id], split, self.opts, on_patches)
        }));
        let qc = self.qc.join(format!("{}.json", row.id));
        let outcome = match job {
            Ok(Ok((rows, slide_qc))) => match write_json(&qc, &slide_qc).and_then(|()| write_record(&record, &rows)) {
                Ok(()) => Outcome::Built(rows.len()),
                Err(e) => Outcome::Failed(e.to_string()),
            },
            Ok(Err(e)) => Outcome::Failed(e.to_string()),
            Err(_) => Outcome::Failed(format!("{}: internal error while tiling (please report)", row.slide.display())),
        };
        match &outcome {
            Outcome::Failed(msg) => {
                if let Err(e) = atomic::write(&failure, msg.as_bytes()) {
                    return Outcome::Failed(format!("{msg}; and {e}"));
                }
            }
            _ => {
                let _ = std::fs::remove_file(&failure);
            }
        }
        outcome
    }
}

/// Writes `manifest.csv` and `MD5SUMS` from every slide's record; returns the patch count.
fn write_dataset_manifest(out: &Path, records: &Path) -> Result<usize> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(records).map_err(DatasetError::io(records))? {
        let p = e.map_err(DatasetError::io(records))?.path();
        if p.extension().is_some_and(|x| x == "json") {
            all.extend(read_manifest_json(&p)?);
        }
    }
    all.sort_by(|a, b| a.file.cmp(&b.file));
    write_manifest(out, &all)?;
    Ok(all.len())
}

/// The id each slide's patch names carry ([`name_id`]), for the slides of the list and those an
/// earlier build left in `records`; two slides whose names would meet are refused, naming both.
fn name_ids(kind: DatasetKind, rows: &[SlideRow], records: &Path) -> Result<HashMap<String, String>> {
    let mut ids: BTreeMap<String, String> =
        rows.iter().map(|r| (r.id.clone(), format!("{} (slide list line {})", r.slide.display(), r.line))).collect();
    for id in recorded_slides(records)? {
        ids.entry(id.clone()).or_insert_with(|| format!("slide {id:?} of an earlier build of this dataset"));
    }
    let mut owner: HashMap<String, (&str, &str)> = HashMap::new();
    for (id, from) in &ids {
        let name = name_id(id, kind);
        if let Some((other, other_from)) = owner.insert(name.clone(), (id, from)) {
            return Err(DatasetError::Usage(format!(
                "slides {other:?} ({other_from}) and {id:?} ({from}) would both be named {name:?} in patch names \
                 (every '.' becomes '_'{}); give one of them another `id` in the slide list",
                if kind == DatasetKind::SegPanda200 { ", every `mask` `msk`" } else { "" }
            )));
        }
    }
    Ok(ids.keys().map(|id| (id.clone(), name_id(id, kind))).collect())
}

/// Writes `qc.csv` from every slide's QC record (slides tiled before QC was recorded have none).
fn write_dataset_qc(out: &Path, qc: &Path) -> Result<()> {
    let mut all: Vec<SlideQc> = Vec::new();
    for e in std::fs::read_dir(qc).map_err(DatasetError::io(qc))? {
        let p = e.map_err(DatasetError::io(qc))?.path();
        if p.extension().is_some_and(|x| x == "json") {
            let bytes = std::fs::read(&p).map_err(DatasetError::io(&p))?;
            all.push(serde_json::from_slice(&bytes).map_err(|e| DatasetError::invalid(&p, e.to_string()))?);
        }
    }
    all.sort_by(|a, b| a.slide.cmp(&b.slide));
    write_qc(out, &all)
}

/// The slide ids an earlier build completed (`<id>.json` records).
fn recorded_slides(records: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(records).map_err(DatasetError::io(records))? {
        let name = e.map_err(DatasetError::io(records))?.file_name().to_string_lossy().into_owned();
        if let Some(id) = name.strip_suffix(".json").filter(|_| !name.starts_with('.')) {
            out.push(id.to_string());
        }
    }
    Ok(out)
}

/// Brings the patches of an earlier build to today's names and manifest columns: a patch (and
/// its mask) whose name carries a slide id the release's loaders misread is renamed, and the
/// slide's record rewritten after its files (atomically; an interrupted run redoes it). Returns
/// the number of patches renamed.
fn upgrade_records(out: &Path, records: &Path, rows: &[SlideRow], name_ids: &HashMap<String, String>) -> Result<usize> {
    let files: HashMap<&str, String> = rows
        .iter()
        .map(|r| (r.id.as_str(), r.slide.file_name().unwrap_or_default().to_string_lossy().into_owned()))
        .collect();
    let mut renamed = 0;
    for id in recorded_slides(records)? {
        let record = records.join(format!("{id}.json"));
        let mut patches = read_manifest_json(&record)?;
        let before = patches.clone();
        for p in &mut patches {
            if p.slide_file.is_empty() {
                p.slide_file = files.get(id.as_str()).cloned().unwrap_or_default();
            }
            let stem = format!("{}_{}_{}", name_ids[&id], p.x, p.y);
            let ext = Path::new(&p.file).extension().unwrap_or_default().to_string_lossy().into_owned();
            renamed += usize::from(rename_patch(out, &mut p.file, &format!("{stem}.{ext}"))?);
            if !p.mask.is_empty() {
                rename_patch(out, &mut p.mask, &format!("{stem}_mask.png"))?;
            }
        }
        if patches != before {
            write_record(&record, &patches)?;
        }
    }
    Ok(renamed)
}

/// Renames the file at `rel` (relative to `out`) to `name` in its folder, updating `rel`;
/// false when it already has that name.
fn rename_patch(out: &Path, rel: &mut String, name: &str) -> Result<bool> {
    let old = PathBuf::from(rel.as_str());
    let new = old.with_file_name(name);
    if new == old {
        return Ok(false);
    }
    let (from, to) = (out.join(&old), out.join(&new));
    if from.is_file() {
        std::fs::rename(&from, &to).map_err(DatasetError::io(&from))?;
    } else if !to.is_file() {
        return Err(DatasetError::invalid(
            from,
            "listed by the build record but missing (nor renamed); delete the slide's record in .patchtcga/slides to \
             tile it again",
        ));
    }
    *rel = new.to_string_lossy().into_owned();
    Ok(true)
}

enum Outcome {
    Built(usize),
    Skipped,
    Failed(String),
}

/// Refuses to mix patches made with different settings in one dataset.
fn check_settings(path: &Path, task: &Task, opts: &BuildOptions) -> Result<()> {
    let settings = format!(
        "task: {task:?}\ngeometry: {:?}\ntissue: {:?}\nquality: {:?}\nsampler: {:?}\nper_slide: {:?}\nformat: {:?}\n\
         mpp_override: {:?}\nval_fraction: {}\ntest_fraction: {}\n{}",
        opts.geometry,
        opts.tissue,
        opts.quality,
        opts.sampler,
        opts.per_slide,
        opts.format,
        opts.slide.mpp_override,
        opts.val_fraction,
        opts.test_fraction,
        // Recorded only when asked for, so datasets built without it keep their settings.
        opts.stain.map(|s| format!("stain: {}\n", serde_json::json!(s))).unwrap_or_default()
    );
    match std::fs::read_to_string(path) {
        Ok(old) if old == settings => Ok(()),
        Ok(old) => Err(DatasetError::Usage(format!(
            "{} was built with other settings; resume with the same flags or write to a new --out.\nthen:\n{old}now:\n{settings}",
            path.parent().and_then(Path::parent).unwrap_or(path).display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => atomic::write(path, settings.as_bytes()),
        Err(e) => Err(DatasetError::Io { path: path.to_path_buf(), source: e }),
    }
}

/// Split of each case: given in the CSV, else drawn by case with the seed.
fn assign_splits(task: &Task, rows: &[SlideRow], opts: &BuildOptions) -> Result<HashMap<String, Split>> {
    let mut out = HashMap::new();
    if *task == Task::Ptcga200 {
        return Ok(out);
    }
    for r in rows {
        if let Some(s) = r.split {
            if let Some(prev) = out.insert(r.case.clone(), s) {
                if prev != s {
                    return Err(DatasetError::Usage(format!(
                        "case {:?} is given both {prev} and {s} (line {}): a case's slides must share a split",
                        r.case, r.line
                    )));
                }
            }
        }
    }
    let mut free: Vec<&str> = rows.iter().map(|r| r.case.as_str()).filter(|c| !out.contains_key(*c)).collect();
    free.sort();
    free.dedup();
    free.shuffle(&mut ChaCha8Rng::seed_from_u64(opts.sampler.seed));
    let n = free.len() as f64;
    let n_test = (n * opts.test_fraction).round() as usize;
    let n_val = (n * opts.val_fraction).round() as usize;
    for (i, c) in free.into_iter().enumerate() {
        let s = if i < n_test {
            Split::Test
        } else if i < n_test + n_val {
            Split::Val
        } else {
            Split::Train
        };
        out.insert(c.to_string(), s);
    }
    Ok(out)
}

/// How a slide labels its patches.
enum Labeller {
    Organ(String),
    Tumour { annotations: Annotations, threshold: f64, centre: f64 },
    Mask { mask: Box<Slide>, scheme: LabelScheme, grade: String },
}

/// A patch ready to write.
struct Encoded {
    candidate: Candidate,
    label: String,
    image: Vec<u8>,
    mask: Option<Vec<u8>>,
    /// Stain normalisation asked for, but the patch held too little stain: written as read.
    stain_unchanged: bool,
}

/// Tiles one slide: its labelling rule, tissue, candidates, the patches accepted in candidate
/// order and written, its thumbnail map and patch grid; its manifest rows and QC record.
fn tile_slide(
    task: &Task,
    row: &SlideRow,
    name_id: &str,
    split: Option<Split>,
    opts: &BuildOptions,
    on_patches: &(dyn Fn(usize) + Sync),
) -> Result<(Vec<ManifestRow>, SlideQc)> {
    let slide = Slide::open(&row.slide, &opts.slide.for_slide(row.mpp))?;
    let labeller = labeller(task, row, &slide, &opts.slide)?;
    // One low-resolution read serves the tissue mask and the thumbnail map.
    let (w, h) = slide.dimensions();
    let map_downsample = (w.max(h) as f64 / MAP_SIDE as f64).max(1.0);
    let mask_downsample = (opts.tissue.mask_mpp / slide.mpp().x).max(1.0);
    let (overview, overview_ds) = slide.overview(map_downsample.min(mask_downsample))?;
    let mut tissue = TissueMask::from_overview(&overview, overview_ds, slide.mpp(), &opts.tissue);
    if let Some(roi) = &row.roi {
        tissue = tissue.within(&Roi::load(roi, &slide.annotation_frame())?);
    }
    if tissue.tissue_fraction() == 0.0 {
        let within = if row.roi.is_some() { " inside the region of interest" } else { "" };
        let cause = format!("no tissue found{within} (saturation threshold {})", tissue.threshold());
        return Err(DatasetError::invalid(&row.slide, cause));
    }
    let footprint = slide.footprint(&opts.geometry);
    let candidates = opts.sampler.candidates(&row.id, slide.dimensions(), footprint, &tissue, opts.per_slide)?;
    let found = candidates.kept.len();
    let labelled: Vec<(Candidate, String)> =
        candidates.kept.into_iter().filter_map(|c| labeller.label(&c, footprint).map(|l| (c, l))).collect();
    let level = slide.level_for_downsample(footprint.0.min(footprint.1) / opts.geometry.size as f64);
    let writer = PatchWriter { task, row, name_id, split, opts, level };
    let accepted = accept_in_order(&slide, &labeller, &labelled, &writer, on_patches)?;
    let map = position_map(overview, overview_ds, &tissue, footprint, &accepted.kept)
        .map_err(|e| image_error(&row.slide, e))?;
    let maps = opts.out.join(POSITION_MAP_DIR);
    atomic::write(&maps.join(format!("{}.png", row.id)), &map)?;
    let grid = patch_grid(&accepted.kept, footprint, slide.annotation_frame().qupath_offset);
    atomic::write(&maps.join(format!("{}.geojson", row.id)), grid.as_bytes())?;
    let mm2 = tissue.pixel_area_um2(slide.mpp()) / 1e6;
    let (mw, mh) = tissue.mask().dimensions();
    let qc = SlideQc {
        slide: row.id.clone(),
        tissue_mm2: round4(tissue.tissue_fraction() * (mw as f64 * mh as f64) * mm2),
        ink_mm2: round4(tissue.ink_area_fraction() * (mw as f64 * mh as f64) * mm2),
        candidates: found + candidates.inked,
        dropped_ink: candidates.inked,
        dropped_border: found - labelled.len(),
        dropped_quality: accepted.rejected,
        kept: accepted.manifest.len(),
        stain_unchanged: accepted.stain_unchanged,
    };
    Ok((accepted.manifest, qc))
}

fn round4(v: f64) -> f64 {
    (v * 1e4).round() / 1e4
}

/// The written patches as QuPath detections classed by label, with their tissue fraction.
fn patch_grid(kept: &[Labelled], footprint: (f64, f64), offset: (f64, f64)) -> String {
    let objects: Vec<_> = kept
        .iter()
        .map(|(c, label)| {
            let colour = label_colour(label).0;
            let measurements = vec![("tissue".to_string(), c.tissue)];
            tile_object((c.x as f64, c.y as f64), footprint, Some((label.clone(), colour)), measurements)
        })
        .collect();
    feature_collection(&objects, offset)
}

fn image_error(path: &Path, e: image::ImageError) -> DatasetError {
    DatasetError::invalid(path, e.to_string())
}

/// How `task` labels the patches of `row`'s slide, checked against the slide list's columns.
fn labeller(task: &Task, row: &SlideRow, slide: &Slide, open: &SlideOptions) -> Result<Labeller> {
    let bad = |cause: String| DatasetError::invalid(&row.slide, format!("{cause} (slide list line {})", row.line));
    Ok(match task {
        Task::Ptcga200 => {
            let organ = row.organ.clone().ok_or_else(|| bad("no organ given".into()))?;
            if organ_class(&organ).is_none() {
                let known: Vec<&str> = ORGANS.iter().map(|o| o.0).collect();
                return Err(bad(format!("unknown organ {organ:?} (PTCGA200 organs: {})", known.join(", "))));
            }
            Labeller::Organ(organ)
        }
        Task::Pcam200 { groups, tumor_threshold, centre } => {
            let annotations = match &row.annotation {
                Some(p) => Annotations::load(p, groups, &slide.annotation_frame())?,
                None => Annotations::none(),
            };
            Labeller::Tumour { annotations, threshold: *tumor_threshold, centre: *centre }
        }
        Task::SegPanda200 => {
            let mask_path = row.mask.as_ref().ok_or_else(|| bad("no label mask given".into()))?;
            let gleason = row.gleason_score.as_deref();
            let scheme = LabelScheme::parse(row.provider.as_deref().unwrap_or(""), gleason).map_err(&bad)?;
            let grade = row.grade.clone().ok_or_else(|| bad("no isup_grade given".into()))?;
            // The mask shares the slide's pixel grid, so it shares its resolution.
            let mask = Slide::open(mask_path, &SlideOptions { mpp_override: Some(slide.mpp().x), ..*open })?;
            if mask.dimensions() != slide.dimensions() {
                let cause = format!(
                    "label mask is {:?} px but its slide {} is {:?} px",
                    mask.dimensions(),
                    row.slide.display(),
                    slide.dimensions()
                );
                return Err(DatasetError::invalid(mask_path, cause));
            }
            Labeller::Mask { mask: Box::new(mask), scheme, grade }
        }
    })
}

impl Labeller {
    /// The label of a candidate of footprint `(fw, fh)`, or `None` for a PCam200 candidate near
    /// a tumour border (neither clearly tumour nor normal).
    fn label(&self, c: &Candidate, (fw, fh): (f64, f64)) -> Option<String> {
        match self {
            Labeller::Organ(o) => Some(o.clone()),
            Labeller::Mask { grade, .. } => Some(grade.clone()),
            Labeller::Tumour { annotations, threshold, centre } => {
                let (cw, ch) = (fw * centre, fh * centre);
                let (cx, cy) = (c.x as f64 + (fw - cw) / 2.0, c.y as f64 + (fh - ch) / 2.0);
                if annotations.tumor_fraction(cx, cy, cw, ch, 16) >= *threshold {
                    Some("tumor".to_string())
                } else if !annotations.touches_tumor(c.x as f64, c.y as f64, fw, fh) {
                    Some("normal".to_string())
                } else {
                    None
                }
            }
        }
    }
}

/// Where and under which names a slide's patches are written.
struct PatchWriter<'a> {
    task: &'a Task,
    row: &'a SlideRow,
    name_id: &'a str,
    split: Option<Split>,
    opts: &'a BuildOptions,
    /// Pyramid level read.
    level: u32,
}

impl PatchWriter<'_> {
    /// Writes a patch (and its mask) atomically under the release-readable name; its manifest row.
    fn write(&self, e: &Encoded) -> Result<ManifestRow> {
        let (row, opts) = (self.row, self.opts);
        let mut rel = if *self.task == Task::Ptcga200 {
            PathBuf::new()
        } else {
            PathBuf::from(self.split.map_or("", Split::name))
        };
        rel.push(&e.label);
        if *self.task != Task::Ptcga200 {
            rel.push(&row.case);
        }
        let stem = format!("{}_{}_{}", self.name_id, e.candidate.x, e.candidate.y);
        let file = rel.join(format!("{stem}.{}", opts.format.extension()));
        atomic::write(&opts.out.join(&file), &e.image)?;
        let (mask, mask_md5) = match &e.mask {
            Some(bytes) => {
                let m = rel.join(format!("{stem}_mask.png"));
                atomic::write(&opts.out.join(&m), bytes)?;
                (m.to_string_lossy().into_owned(), md5_hex(bytes))
            }
            None => (String::new(), String::new()),
        };
        Ok(ManifestRow {
            file: file.to_string_lossy().into_owned(),
            slide: row.id.clone(),
            slide_file: row.slide.file_name().unwrap_or_default().to_string_lossy().into_owned(),
            case: row.case.clone(),
            split: self.split.map_or_else(String::new, |s| s.name().to_owned()),
            label: e.label.clone(),
            x: e.candidate.x,
            y: e.candidate.y,
            level: self.level,
            mpp: opts.geometry.mpp,
            tissue: (e.candidate.tissue * 1e4).round() / 1e4,
            mask,
            md5: md5_hex(&e.image),
            mask_md5,
        })
    }
}

/// A candidate position and its label.
type Labelled = (Candidate, String);

/// What a slide's candidates came to.
struct Accepted {
    /// Rows of the patches written.
    manifest: Vec<ManifestRow>,
    /// The written (candidate, label)s.
    kept: Vec<Labelled>,
    /// Candidates read and rejected as blank or blurred.
    rejected: usize,
    /// Patches written as read because they held too little stain to normalise.
    stain_unchanged: usize,
}

/// Reads candidates in chunks in parallel and accepts them in candidate order up to
/// `per_slide` per label, so the patches kept never depend on the number of workers; each
/// chunk's patches are written at once.
fn accept_in_order(
    slide: &Slide,
    labeller: &Labeller,
    labelled: &[Labelled],
    writer: &PatchWriter,
    on_patches: &(dyn Fn(usize) + Sync),
) -> Result<Accepted> {
    let mut remaining: BTreeMap<String, usize> = BTreeMap::new();
    for (_, l) in labelled {
        remaining.entry(l.clone()).or_insert(writer.opts.per_slide.unwrap_or(usize::MAX));
    }
    let (mut manifest, mut kept, mut rejected, mut stain_unchanged) = (Vec::new(), Vec::new(), 0, 0);
    let mut next = 0;
    while next < labelled.len() && remaining.values().any(|&n| n > 0) {
        let want: usize = remaining.values().map(|&n| n.min(256)).sum();
        let mut chunk = Vec::new();
        while next < labelled.len() && chunk.len() < want.clamp(8, 256) {
            if remaining[&labelled[next].1] > 0 {
                chunk.push(&labelled[next]);
            }
            next += 1;
        }
        // Read in raster order, so the patches one thread reads in turn share the slide's tiles
        // (decoded once, from the reader's cache); accepted in candidate order.
        let mut raster: Vec<usize> = (0..chunk.len()).collect();
        raster.sort_by_key(|&i| (chunk[i].0.y, chunk[i].0.x));
        let mut results: Vec<(usize, Result<Option<Encoded>>)> = raster
            .par_iter()
            .map(|&i| (i, read_and_encode(slide, labeller, &chunk[i].0, &chunk[i].1, writer.opts)))
            .collect();
        results.sort_by_key(|(i, _)| *i);
        let mut accepted = Vec::new();
        for (_, r) in results {
            match r? {
                Some(e) => {
                    let left = remaining.get_mut(&e.label).expect("label registered above");
                    if *left > 0 {
                        *left -= 1;
                        accepted.push(e);
                    }
                }
                None => rejected += 1,
            }
        }
        let rows: Vec<ManifestRow> = accepted.par_iter().map(|e| writer.write(e)).collect::<Result<_>>()?;
        on_patches(rows.len());
        manifest.extend(rows);
        stain_unchanged += accepted.iter().filter(|e| e.stain_unchanged).count();
        kept.extend(accepted.into_iter().map(|e| (e.candidate, e.label)));
    }
    Ok(Accepted { manifest, kept, rejected, stain_unchanged })
}

fn read_and_encode(
    slide: &Slide,
    labeller: &Labeller,
    c: &Candidate,
    label: &str,
    opts: &BuildOptions,
) -> Result<Option<Encoded>> {
    let mut patch = slide.read_patch(&opts.geometry, c.x, c.y)?;
    if opts.quality.judge(&patch) != QualityVerdict::Keep {
        return Ok(None);
    }
    let mut stain_unchanged = false;
    if let Some(stain) = &opts.stain {
        match stain.normalize(&patch) {
            Normalized::Image(normalized) => patch = normalized,
            Normalized::Unchanged => stain_unchanged = true,
        }
    }
    let mask = match labeller {
        Labeller::Mask { mask, scheme, .. } => {
            let mut labels = mask.read_label_patch(&opts.geometry, c.x, c.y)?;
            scheme
                .apply(&mut labels)
                .map_err(|e| DatasetError::invalid(mask.path(), format!("at ({}, {}): {e}", c.x, c.y)))?;
            let rgb =
                RgbImage::from_fn(labels.width(), labels.height(), |x, y| Rgb([labels.get_pixel(x, y).0[0], 0, 0]));
            Some(encode_png(&rgb).map_err(|e| image_error(mask.path(), e))?)
        }
        _ => None,
    };
    let image = match opts.format {
        ImageFormat::Jpeg { quality } => {
            encode_jpeg(&patch, quality).map_err(|e| DatasetError::invalid(slide.path(), e))?
        }
        ImageFormat::Png => encode_png(&patch).map_err(|e| image_error(slide.path(), e))?,
    };
    Ok(Some(Encoded { candidate: *c, label: label.to_string(), image, mask, stain_unchanged }))
}

/// JPEG through libjpeg-turbo, 4:2:0 chroma as Pillow's default.
fn encode_jpeg(img: &RgbImage, quality: u8) -> std::result::Result<Vec<u8>, String> {
    let view = turbojpeg::Image {
        pixels: img.as_raw().as_slice(),
        width: img.width() as usize,
        pitch: img.width() as usize * 3,
        height: img.height() as usize,
        format: turbojpeg::PixelFormat::RGB,
    };
    turbojpeg::compress(view, quality as i32, turbojpeg::Subsamp::Sub2x2)
        .map(|buf| buf.to_vec())
        .map_err(|e| format!("JPEG encoding failed: {e}"))
}

fn encode_png(img: &RgbImage) -> image::ImageResult<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new_with_quality(
        &mut out,
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::Adaptive,
    )
    .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)?;
    Ok(out)
}

/// Longest side of the thumbnail maps, in pixels.
const MAP_SIDE: u32 = 1024;

/// The colour a label's patches are outlined in (tumour red, normal blue, others yellow).
fn label_colour(label: &str) -> Rgb<u8> {
    match label {
        "tumor" => Rgb([220, 20, 20]),
        "normal" => Rgb([20, 60, 220]),
        _ => Rgb([240, 200, 0]),
    }
}

/// The slide's thumbnail (the overview, shrunk to at most [`MAP_SIDE`]) with the tissue mask
/// tinted green, pen ink taken out hatched in magenta, and each kept patch outlined in its label's
/// colour.
fn position_map(
    overview: RgbImage,
    overview_ds: f64,
    tissue: &TissueMask,
    footprint: (f64, f64),
    patches: &[(Candidate, String)],
) -> image::ImageResult<Vec<u8>> {
    let (ow, oh) = overview.dimensions();
    let shrink = (ow.max(oh) as f64 / MAP_SIDE as f64).max(1.0);
    let mut thumb = if shrink > 1.0 {
        let (w, h) = (((ow as f64 / shrink) as u32).max(1), ((oh as f64 / shrink) as u32).max(1));
        let mut small = RgbImage::new(w, h);
        let area = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Box));
        Resizer::new().resize(&overview, &mut small, &area).expect("RGB to RGB resize of a non-empty image");
        small
    } else {
        overview
    };
    let ds = overview_ds * ow as f64 / thumb.width() as f64;
    let m = tissue.mask();
    let md = tissue.downsample();
    for (x, y, p) in thumb.enumerate_pixels_mut() {
        let (mx, my) = ((x as f64 * ds / md) as u32, (y as f64 * ds / md) as u32);
        if mx >= m.width() || my >= m.height() {
            continue;
        }
        if m.get_pixel(mx, my).0[0] != 0 {
            p.0 = [(p.0[0] as u16 * 7 / 8) as u8, ((p.0[1] as u16 * 7 + 255) / 8) as u8, (p.0[2] as u16 * 7 / 8) as u8];
        } else if tissue.ink().contains(mx, my) && (x + y) % 6 < 2 {
            p.0 = [255, 0, 255];
        }
    }
    for (candidate, label) in patches {
        let colour = label_colour(label);
        let (x, y) = ((candidate.x as f64 / ds) as i32, (candidate.y as f64 / ds) as i32);
        let (rw, rh) = (((footprint.0 / ds) as u32).max(3), ((footprint.1 / ds) as u32).max(3));
        for inset in 0..2u32 {
            let r =
                imageproc::rect::Rect::at(x + inset as i32, y + inset as i32).of_size(rw - 2 * inset, rh - 2 * inset);
            imageproc::drawing::draw_hollow_rect_mut(&mut thumb, r, colour);
        }
    }
    encode_png(&thumb)
}

fn write_record(path: &Path, rows: &[ManifestRow]) -> Result<()> {
    write_json(path, &rows)
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let bytes = serde_json::to_vec(value).map_err(|e| DatasetError::invalid(path, e.to_string()))?;
    atomic::write(path, &bytes)
}
