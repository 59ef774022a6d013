//! TensorBoard event files (what PyTorch's `SummaryWriter` writes): records framed as TFRecord
//! (length, masked CRC-32C of the length, an `Event` protobuf, masked CRC-32C of the data), one
//! scalar per metric and update.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use crate::LearnError;
use patchtcga_dataset::Split;

/// `tensorflow.Event`, the fields scalars need.
#[derive(Clone, PartialEq, prost::Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(string, optional, tag = "3")]
    file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    summary: Option<Summary>,
    #[prost(message, optional, tag = "6")]
    session_log: Option<SessionLog>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` with a `simple_value`.
#[derive(Clone, PartialEq, prost::Message)]
struct SummaryValue {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(float, tag = "2")]
    simple_value: f32,
}

/// `tensorflow.SessionLog`; `START` at a step makes TensorBoard drop the events of earlier files
/// past that step (a resumed run's rewritten updates), as `SummaryWriter(purge_step=…)`.
#[derive(Clone, PartialEq, prost::Message)]
struct SessionLog {
    #[prost(int32, tag = "1")]
    status: i32,
}

const SESSION_START: i32 = 1;

/// CRC-32C as TFRecord masks it.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// One TFRecord: length, its masked CRC, the data, its masked CRC.
fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// An event file in a run folder, appended to as scalars arrive.
pub struct EventWriter {
    path: PathBuf,
    file: fs::File,
}

impl EventWriter {
    /// Starts a new event file in `dir` (`events.out.tfevents.<time>.<host>.<pid>`); with
    /// `resumed_at`, a run resumed at that update: earlier files' events past it are superseded.
    pub fn create(dir: &Path, resumed_at: Option<usize>) -> Result<Self, LearnError> {
        let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let name = format!("events.out.tfevents.{}.{}.{}", now() as u64, host.trim(), std::process::id());
        // A run resumed by the same process within the same second must not truncate the
        // earlier file: a suffix (`.1`, `.2`, …) keeps each file its own.
        let (mut path, mut n) = (dir.join(&name), 0);
        let file = loop {
            match fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    n += 1;
                    path = dir.join(format!("{name}.{n}"));
                }
                opened => break opened.map_err(|e| LearnError::io(&path, e))?,
            }
        };
        let mut w = Self { path, file };
        w.write(&Event { wall_time: now(), file_version: Some("brain.Event:2".into()), ..Default::default() })?;
        if let Some(step) = resumed_at {
            let log = SessionLog { status: SESSION_START };
            w.write(&Event { wall_time: now(), step: step as i64, session_log: Some(log), ..Default::default() })?;
        }
        Ok(w)
    }

    /// Writes `(tag, value)` scalars at `step`, as one event.
    pub fn scalars(&mut self, step: usize, values: &[(String, f64)]) -> Result<(), LearnError> {
        let value = values.iter().map(|(tag, v)| SummaryValue { tag: tag.clone(), simple_value: *v as f32 }).collect();
        let summary = Some(Summary { value });
        self.write(&Event { wall_time: now(), step: step as i64, summary, ..Default::default() })
    }

    fn write(&mut self, event: &Event) -> Result<(), LearnError> {
        self.file
            .write_all(&record(&event.encode_to_vec()))
            .and_then(|()| self.file.flush())
            .map_err(|e| LearnError::io(&self.path, e))
    }
}

/// The TensorBoard tag of a metrics-log key: `val_accuracy` → `val/accuracy`, `test_…` →
/// `test/…`, throughput → `perf/…`, anything else of training → `train/…`; positions (update,
/// epoch, batch, world) are not scalars to plot.
pub fn tag(key: &str) -> Option<String> {
    if matches!(key, "update" | "epoch" | "batch" | "world") {
        return None;
    }
    for set in [Split::Val, Split::Test] {
        if let Some(rest) = key.strip_prefix(set.name()).and_then(|r| r.strip_prefix('_')) {
            return Some(format!("{set}/{rest}"));
        }
    }
    let group = if matches!(key, "images_per_s" | "data_wait" | "allreduce_mib" | "allreduce_buckets") {
        "perf"
    } else {
        "train"
    };
    Some(format!("{group}/{key}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two writers started in one folder within the same second by one process (a run and its
    /// resume in a test, or a MIL fold resumed at once) each keep a file of their own.
    #[test]
    fn a_second_writer_never_truncates_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = EventWriter::create(dir.path(), None).unwrap();
        first.scalars(1, &[("train/loss".into(), 1.0)]).unwrap();
        let mut second = EventWriter::create(dir.path(), Some(1)).unwrap();
        second.scalars(2, &[("train/loss".into(), 0.5)]).unwrap();
        let files: Vec<Vec<u8>> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| fs::read(e.unwrap().path()).unwrap()).collect();
        assert_eq!(files.len(), 2);
        assert!(files.iter().all(|f| f.windows(10).any(|w| w == b"train/loss")), "both files keep their scalars");
    }

    #[test]
    fn records_are_framed_as_tfrecord() {
        // CRC-32C's check value, and TFRecord's mask of it.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        let r = record(b"abc");
        assert_eq!(&r[..8], &3u64.to_le_bytes());
        assert_eq!(&r[12..15], b"abc");
        assert_eq!(r.len(), 19);
        assert_eq!(u32::from_le_bytes(r[15..19].try_into().unwrap()), masked_crc(b"abc"));
    }

    #[test]
    fn log_keys_become_grouped_tags() {
        assert_eq!(tag("loss").as_deref(), Some("train/loss"));
        assert_eq!(tag("val_accuracy").as_deref(), Some("val/accuracy"));
        assert_eq!(tag("test_knn_top1").as_deref(), Some("test/knn_top1"));
        assert_eq!(tag("images_per_s").as_deref(), Some("perf/images_per_s"));
        assert_eq!(tag("update"), None);
    }
}
