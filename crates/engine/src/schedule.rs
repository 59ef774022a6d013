//! Learning rate over updates: cold (0), linear warm-up to the peak, cosine decay to 0; and the
//! cosine ramps of other hyper-parameters (target momentum, weight decay).

/// A value moving from `from` (progress 0) to `to` (progress 1) on a half cosine:
/// to + (from − to)·(1 + cos(π·progress))/2 (BYOL's and DINO's momentum, DINO's weight decay).
pub fn cosine(from: f64, to: f64, progress: f64) -> f64 {
    to + (from - to) * (1.0 + (std::f64::consts::PI * progress.clamp(0.0, 1.0)).cos()) / 2.0
}

/// The schedule of a run, in updates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub peak: f64,
    pub cold: usize,
    pub warmup: usize,
    pub total: usize,
}

impl Schedule {
    /// Peak = `lr` × total batch / `base_batch_size`, as a real ratio (the release's integer
    /// division gave 0 below 4 GPUs).
    pub fn peak_lr(lr: f64, total_batch: usize, base_batch_size: usize) -> f64 {
        lr * total_batch as f64 / base_batch_size as f64
    }

    /// Learning rate for update `u` (0-based).
    pub fn lr(&self, u: usize) -> f64 {
        if u < self.cold {
            return 0.0;
        }
        let u = u - self.cold;
        if u < self.warmup {
            return self.peak * (u + 1) as f64 / self.warmup as f64;
        }
        let rest = self.total.saturating_sub(self.cold + self.warmup).max(1);
        let progress = ((u - self.warmup) as f64 / rest as f64).min(1.0);
        self.peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cold_then_warmup_then_cosine() {
        let s = Schedule { peak: 0.4, cold: 2, warmup: 4, total: 16 };
        let lrs: Vec<f64> = (0..16).map(|u| s.lr(u)).collect();
        assert_eq!(&lrs[..2], &[0.0, 0.0]);
        assert_eq!(&lrs[2..6], &[0.1, 0.2, 0.30000000000000004, 0.4]);
        assert!((lrs[6] - 0.4).abs() < 1e-12, "cosine starts at the peak");
        assert!((lrs[11] - 0.2).abs() < 1e-12, "half way down at the middle: {}", lrs[11]);
        assert!(lrs.windows(2).skip(6).all(|w| w[1] < w[0]), "decreasing: {lrs:?}");
        assert!(lrs[15] < 0.02);
    }

    #[test]
    fn cosine_ramps_run_from_start_to_end() {
        assert!((cosine(0.99, 1.0, 0.0) - 0.99).abs() < 1e-12);
        assert!((cosine(0.99, 1.0, 0.5) - 0.995).abs() < 1e-12);
        assert!((cosine(0.99, 1.0, 1.0) - 1.0).abs() < 1e-12);
        assert!((cosine(0.04, 0.4, 0.5) - 0.22).abs() < 1e-12, "weight decay rises too");
    }

    #[test]
    fn peak_is_a_real_ratio() {
        assert_eq!(Schedule::peak_lr(1e-4, 128, 512), 2.5e-5);
        assert_eq!(Schedule::peak_lr(0.3, 1024, 256), 1.2);
    }
}
