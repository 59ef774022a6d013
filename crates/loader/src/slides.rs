//! Batches of slides' tissue-grid patches, read ahead on a thread of their own across slide
//! boundaries: while a network runs on one batch, the next ones are read, the next slide is
//! opened and its tissue found, so it never waits between slides. A batch may hold the end of
//! one slide and the start of the next; events say which rows belong to which slide.

use std::collections::VecDeque;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use patchtcga_augment::{normalize, StainNormalizer};
use patchtcga_slide::{PatchGeometry, Roi, Slide, SlideError, SlideOptions, TissueGrid};
use rayon::prelude::*;

/// One slide to read: its file, and the level-0 corners of its patches when they are given
/// (a coordinates file) rather than found on its tissue grid.
#[derive(Debug, Clone)]
pub struct SlideJob {
    /// The slide file.
    pub path: PathBuf,
    /// Given patch corners (level 0), or `None` for the tissue grid.
    pub corners: Option<Vec<(u32, u32)>>,
    /// A region of interest (QuPath GeoJSON) the tissue grid is kept within.
    pub roi: Option<PathBuf>,
    /// The slide list's µm/px for this slide (its `mpp` column), over `--mpp-override`.
    pub mpp: Option<f64>,
}

/// Least tissue fraction of a grid patch's footprint unless told otherwise (CLAM's patching keeps
/// a patch with any tissue; half keeps edges out).
pub const DEFAULT_MIN_TISSUE: f64 = 0.5;

/// How slides' patches are read, as the commands that read them straight from slides take it
/// (`embed --slides`, `bench slide-patches`).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct SlideReading {
    /// µm per pixel the slides' patches are read at.
    #[arg(long, default_value_t = 0.5)]
    pub mpp: f64,
    /// Patch (model input) side in pixels.
    #[arg(long, default_value_t = 224)]
    pub image_size: u32,
    /// Least tissue fraction of a patch's footprint.
    #[arg(long, default_value_t = DEFAULT_MIN_TISSUE)]
    pub min_tissue: f64,
    /// Patches per batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Decoding threads.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    #[command(flatten)]
    pub open: SlideOptions,
}

impl SlideReading {
    /// The patches' geometry.
    pub fn geometry(&self) -> PatchGeometry {
        PatchGeometry { mpp: self.mpp, size: self.image_size }
    }

    /// The reader's configuration, normalising by `mean` and `std`, four batches read ahead.
    pub fn config(&self, mean: [f32; 3], std: [f32; 3]) -> SlideBatchConfig {
        SlideBatchConfig {
            geometry: self.geometry(),
            min_tissue: self.min_tissue,
            open: self.open,
            mean,
            std,
            batch_size: self.batch_size,
            workers: self.workers,
            prefetch: 4,
            stain: None,
        }
    }
}

/// How the patches are made.
#[derive(Debug, Clone)]
pub struct SlideBatchConfig {
    /// Patch side and resolution.
    pub geometry: PatchGeometry,
    /// Least tissue fraction of a grid patch's footprint.
    pub min_tissue: f64,
    /// How slides are opened.
    pub open: SlideOptions,
    /// Channel means for normalisation ([0, 1] scale).
    pub mean: [f32; 3],
    /// Channel standard deviations.
    pub std: [f32; 3],
    /// Patches per batch (the last batch may hold fewer).
    pub batch_size: usize,
    /// Decoding threads.
    pub workers: usize,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
    /// Each patch's stain normalised to a target's before it is normalised for the network.
    pub stain: Option<StainNormalizer>,
}

/// What the reading thread reports, in order.
#[derive(Debug)]
pub enum SlideEvent {
    /// Slide `slide` (its position in the job list) is open; its patches, at these level-0
    /// corners, come in the following batches, in this order; `footprint` is a patch's side in
    /// level-0 pixels (TRIDENT's `patch_size_level0`).
    Begin { slide: usize, corners: Vec<(u32, u32)>, level: u32, footprint: u32 },
    /// Normalised patches (N × 3 × size × size, NCHW); `rows` says, in order, how many of
    /// them belong to which slide.
    Batch { values: BatchValues, rows: Vec<(usize, usize)> },
    /// Every patch of the slide was in the batches sent so far.
    End { slide: usize },
    /// The slide cannot be read: no more of its patches come, and rows of it sent before this
    /// are to be dropped.
    Failed { slide: usize, error: SlideError },
}

/// A batch's values. Dropped, the buffer goes back to the reader for a later batch: a batch of
/// 64 patches of 224 px is 38 MB, and a fresh one each time is 9,000 page faults taken by the
/// reading thread alone (and more than glibc recycles itself).
pub struct BatchValues {
    values: Vec<f32>,
    spare: Arc<Spare>,
}

impl std::fmt::Debug for BatchValues {
    /// The count, not the tens of millions of values.
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "BatchValues({} values)", self.values.len())
    }
}

impl Deref for BatchValues {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.values
    }
}

impl Drop for BatchValues {
    fn drop(&mut self) {
        self.spare.give(std::mem::take(&mut self.values));
    }
}

/// Buffers of batches the consumer is done with, at most as many as can be in flight.
struct Spare {
    buffers: Mutex<Vec<Vec<f32>>>,
    keep: usize,
}

impl Spare {
    fn give(&self, buffer: Vec<f32>) {
        let mut buffers = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        if buffers.len() < self.keep {
            buffers.push(buffer);
        }
    }

    /// An empty buffer, holding memory of an earlier batch when one came back.
    fn take(&self) -> Vec<f32> {
        let mut buffer = self.buffers.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default();
        buffer.clear();
        buffer
    }
}

/// The events of a job list, read ahead on a thread; dropping it stops the reading.
pub struct SlideBatches {
    rx: Option<Receiver<SlideEvent>>,
    thread: Option<JoinHandle<()>>,
}

impl SlideBatches {
    /// Starts reading `jobs` in order.
    pub fn start(jobs: Vec<SlideJob>, config: SlideBatchConfig) -> crate::Result<Self> {
        if config.batch_size == 0 {
            return Err(crate::LoaderError::Config("batch size must be at least 1".into()));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.workers.max(1))
            .thread_name(|i| format!("slide-read-{i}"))
            .build()
            .map_err(|e| crate::LoaderError::Config(format!("cannot start decoding threads: {e}")))?;
        let pool = Arc::new(pool);
        // Slides are opened and their grids found ahead, a few at a time, on the same threads.
        let (slides_tx, slides_rx) = sync_channel(OPEN_AHEAD);
        let (opening, open_pool) = (config.clone(), pool.clone());
        let opener = std::thread::Builder::new()
            .name("slide-open".into())
            .spawn(move || open_slides(jobs, &opening, &open_pool, &slides_tx))
            .map_err(|e| crate::LoaderError::Config(format!("cannot start the slide-opening thread: {e}")))?;
        let (tx, rx) = sync_channel(config.prefetch.max(1));
        let thread = std::thread::Builder::new()
            .name("slide-batches".into())
            .spawn(move || {
                let spare = Arc::new(Spare { buffers: Mutex::new(Vec::new()), keep: config.prefetch.max(1) + 2 });
                Reader { config, pool, tx, pending: Batch::default(), spare }.run(slides_rx);
                let _ = opener.join();
            })
            .map_err(|e| crate::LoaderError::Config(format!("cannot start the reading thread: {e}")))?;
        Ok(Self { rx: Some(rx), thread: Some(thread) })
    }
}

impl Iterator for SlideBatches {
    type Item = SlideEvent;

    fn next(&mut self) -> Option<SlideEvent> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for SlideBatches {
    fn drop(&mut self) {
        self.rx.take(); // the reader's next send fails and it stops
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Slides opened (and their grids found) ahead of the one being read, in parallel.
const OPEN_AHEAD: usize = 4;

/// A slide ready to read, or why it cannot be.
type Opened = Result<(Slide, TissueGrid), SlideError>;

/// Opens the slides and finds their grids, `OPEN_AHEAD` at a time in parallel, and sends them in
/// order; stops when the reader hangs up.
fn open_slides(jobs: Vec<SlideJob>, c: &SlideBatchConfig, pool: &rayon::ThreadPool, tx: &SyncSender<Opened>) {
    let open = |job: SlideJob| -> Opened {
        let slide = Slide::open(&job.path, &c.open.for_slide(job.mpp))?;
        let grid = match job.corners {
            Some(corners) => TissueGrid { level: TissueGrid::level(&slide, &c.geometry), corners },
            None => {
                let roi = job.roi.as_ref().map(|r| Roi::load(r, &slide.annotation_frame())).transpose()?;
                TissueGrid::of(&slide, &c.geometry, c.min_tissue, roi.as_ref())?
            }
        };
        Ok((slide, grid))
    };
    let mut jobs = jobs.into_iter().peekable();
    while jobs.peek().is_some() {
        let chunk: Vec<SlideJob> = jobs.by_ref().take(OPEN_AHEAD).collect();
        let opened: Vec<Opened> = pool.install(|| chunk.into_par_iter().map(open).collect());
        for o in opened {
            if tx.send(o).is_err() {
                return;
            }
        }
    }
}

/// The batch being filled: values, and per-slide row counts in order.
#[derive(Default)]
struct Batch {
    values: Vec<f32>,
    rows: Vec<(usize, usize)>,
    /// Slides whose last patch is in this batch.
    ending: Vec<usize>,
}

impl Batch {
    fn len(&self) -> usize {
        self.rows.iter().map(|r| r.1).sum()
    }
}

/// An open slide whose patches are being read.
struct Queued {
    /// Its position in the job list.
    index: usize,
    slide: Slide,
    corners: Vec<(u32, u32)>,
    /// The first corner not yet read.
    next: usize,
}

impl Queued {
    fn left(&self) -> usize {
        self.corners.len() - self.next
    }
}

/// The reading thread's state.
struct Reader {
    config: SlideBatchConfig,
    /// The decoding threads (shared with the slide opener; only parallel sections run there).
    pool: Arc<rayon::ThreadPool>,
    tx: SyncSender<SlideEvent>,
    pending: Batch,
    spare: Arc<Spare>,
}

/// The consumer hung up.
struct Stopped;

impl Reader {
    /// Reads each batch's patches, across slides, in one parallel section (no barrier at a
    /// slide's end) into batches.
    fn run(mut self, slides: Receiver<Opened>) {
        let _ = self.read_all(slides);
        let _ = self.flush();
    }

    fn read_all(&mut self, slides: Receiver<Opened>) -> Result<(), Stopped> {
        let mut incoming = slides.into_iter().enumerate();
        let mut queue: VecDeque<Queued> = VecDeque::new();
        loop {
            let room = self.config.batch_size - self.pending.len();
            while queue.iter().map(Queued::left).sum::<usize>() < room {
                let Some((i, opened)) = incoming.next() else { break };
                self.admit(i, opened, &mut queue)?;
            }
            if queue.is_empty() {
                return Ok(());
            }
            self.read_window(&mut queue)?;
        }
    }

    fn send(&self, e: SlideEvent) -> Result<(), Stopped> {
        self.tx.send(e).map_err(|_| Stopped)
    }

    /// Announces slide `i` (or its failure) and queues its patches.
    fn admit(&mut self, i: usize, opened: Opened, queue: &mut VecDeque<Queued>) -> Result<(), Stopped> {
        let (slide, grid) = match opened {
            Ok(o) => o,
            Err(error) => return self.send(SlideEvent::Failed { slide: i, error }),
        };
        let footprint = slide.footprint(&self.config.geometry).0.round() as u32;
        self.send(SlideEvent::Begin { slide: i, corners: grid.corners.clone(), level: grid.level, footprint })?;
        if grid.corners.is_empty() {
            self.pending.ending.push(i);
            if self.pending.rows.is_empty() {
                self.flush()?;
            }
        } else {
            queue.push_back(Queued { index: i, slide, corners: grid.corners, next: 0 });
        }
        Ok(())
    }

    /// Reads the queued patches that fill the batch, across slides, in one parallel section
    /// straight into it; a slide with a patch that cannot be read fails whole.
    fn read_window(&mut self, queue: &mut VecDeque<Queued>) -> Result<(), Stopped> {
        let room = self.config.batch_size - self.pending.len();
        let mut tasks: Vec<(usize, (u32, u32))> = Vec::with_capacity(room);
        for (q, s) in queue.iter_mut().enumerate() {
            let take = (room - tasks.len()).min(s.left());
            tasks.extend(s.corners[s.next..s.next + take].iter().map(|&c| (q, c)));
            s.next += take;
            if tasks.len() == room {
                break;
            }
        }
        let Reader { config: c, pool, pending, spare, .. } = self;
        let plane = 3 * (c.geometry.size as usize).pow(2);
        if pending.values.capacity() == 0 {
            pending.values = spare.take();
            pending.values.reserve_exact(c.batch_size * plane);
        }
        let start = pending.values.len();
        let read: Vec<Result<(), SlideError>> = pool.install(|| {
            // Zeroed in parallel (the patches overwrite every value), not by this thread alone.
            pending.values.par_extend(rayon::iter::repeat_n(0.0, tasks.len() * plane));
            pending.values[start..]
                .par_chunks_mut(plane)
                .zip(&tasks)
                .map(|(out, &(q, (x, y)))| {
                    let p = queue[q].slide.read_patch(&c.geometry, x, y)?;
                    let p = match &c.stain {
                        Some(stain) => stain.apply(p),
                        None => p,
                    };
                    normalize(&p, c.mean, c.std, out).map_err(|e| SlideError::Parameter(e.to_string()))
                })
                .collect()
        });
        for &(q, _) in &tasks {
            let i = queue[q].index;
            match pending.rows.last_mut() {
                Some((s, n)) if *s == i => *n += 1,
                _ => pending.rows.push((i, 1)),
            }
        }
        let mut failed: Vec<Option<SlideError>> = (0..queue.len()).map(|_| None).collect();
        for (r, &(q, _)) in read.into_iter().zip(&tasks) {
            if let (Err(e), None) = (r, &failed[q]) {
                failed[q] = Some(e);
            }
        }
        let mut kept = VecDeque::with_capacity(queue.len());
        for (s, error) in queue.drain(..).zip(failed) {
            match error {
                Some(error) => {
                    self.drop_rows(s.index);
                    self.send(SlideEvent::Failed { slide: s.index, error })?;
                }
                None if s.left() == 0 => self.pending.ending.push(s.index),
                None => kept.push_back(s),
            }
        }
        *queue = kept;
        if self.pending.len() == self.config.batch_size {
            self.flush()?;
        }
        Ok(())
    }

    /// Takes slide `i`'s rows out of the batch being filled.
    fn drop_rows(&mut self, i: usize) {
        let plane = 3 * (self.config.geometry.size as usize).pow(2);
        if let Some(pos) = self.pending.rows.iter().position(|r| r.0 == i) {
            let before: usize = self.pending.rows[..pos].iter().map(|r| r.1).sum();
            let (_, n) = self.pending.rows.remove(pos);
            self.pending.values.drain(before * plane..(before + n) * plane);
        }
    }

    /// Sends the batch (if it holds rows), then the ends of the slides it completes.
    fn flush(&mut self) -> Result<(), Stopped> {
        let b = std::mem::take(&mut self.pending);
        if !b.rows.is_empty() {
            let values = BatchValues { values: b.values, spare: self.spare.clone() };
            self.send(SlideEvent::Batch { values, rows: b.rows })?;
        }
        for slide in b.ending {
            self.send(SlideEvent::End { slide })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_batch_gives_its_buffer_back_for_the_next_and_spares_stay_bounded() {
        let spare = Arc::new(Spare { buffers: Mutex::new(Vec::new()), keep: 2 });
        let batch = |len: usize| BatchValues { values: vec![1.0; len], spare: spare.clone() };
        let first = batch(1000);
        let memory = first.as_ptr();
        drop(first);
        let reused = spare.take();
        assert_eq!((reused.as_ptr(), reused.len(), reused.capacity()), (memory, 0, 1000), "the same memory, emptied");
        drop((batch(10), batch(10), batch(10)));
        assert_eq!(spare.buffers.lock().unwrap().len(), 2, "no more spares than batches in flight");
    }
}
