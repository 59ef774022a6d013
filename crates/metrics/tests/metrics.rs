//! Every metric on cases small enough to compute by hand (and scikit-learn's documented examples).

use patchtcga_metrics::{bootstrap_accuracy, roc_auc, roc_auc_of, ClassificationReport, Confusion, SegmentationCounts};

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

#[test]
fn confusion_accuracy_balanced_accuracy_and_f1() {
    let c = Confusion::from_pairs(2, &[0, 0, 0, 1, 1], &[0, 1, 0, 1, 0]);
    assert_eq!(c.counts, vec![vec![2, 1], vec![1, 1]]);
    close(c.accuracy(), 0.6);
    close(c.balanced_accuracy(), (2.0 / 3.0 + 0.5) / 2.0);
    close(c.f1_score(), 0.5); // class 1: 2·1 / (2·1 + 1 + 1)
                              // Three classes: macro F1; a class never present and never predicted scores 0.
    let c = Confusion::from_pairs(3, &[0, 0, 1, 1], &[0, 0, 1, 0]);
    close(c.f1(0), 0.8);
    close(c.f1(1), 2.0 / 3.0);
    close(c.f1_score(), (0.8 + 2.0 / 3.0) / 3.0);
    close(c.balanced_accuracy(), 0.75); // class 2 absent from the truth is left out
}

#[test]
fn roc_auc_counts_ties_as_half() {
    // scikit-learn's roc_auc_score example.
    close(roc_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap(), 0.75);
    close(roc_auc(&[0.5, 0.5], &[true, false]).unwrap(), 0.5);
    close(roc_auc(&[0.9, 0.1], &[true, false]).unwrap(), 1.0);
    assert!(roc_auc(&[0.2, 0.3], &[true, true]).is_none(), "one class only");
    // Two classes: the AUC of class 1's probability.
    let probs = [0.9f32, 0.1, 0.6, 0.4, 0.65, 0.35, 0.2, 0.8];
    close(roc_auc_of(&probs, &[0, 0, 1, 1], 2).unwrap(), 0.75);
    // Three classes: the mean one-vs-rest AUC; here each class is separated perfectly.
    let probs = [0.8f32, 0.1, 0.1, 0.1, 0.8, 0.1, 0.1, 0.1, 0.8];
    close(roc_auc_of(&probs, &[0, 1, 2], 3).unwrap(), 1.0);
}

#[test]
fn bootstrap_interval_brackets_the_accuracy() {
    assert_eq!(bootstrap_accuracy(&[true; 50], 200, 1), [1.0, 1.0]);
    let half: Vec<bool> = (0..400).map(|i| i % 2 == 0).collect();
    let [lo, hi] = bootstrap_accuracy(&half, 1000, 7);
    assert!(lo < 0.5 && hi > 0.5, "[{lo}, {hi}]");
    // Binomial standard error √(0.25/400) = 0.025: the 95 % interval is about ±0.049.
    assert!((hi - lo - 0.098).abs() < 0.02, "width {}", hi - lo);
    assert_eq!(bootstrap_accuracy(&half, 1000, 7), [lo, hi], "seeded");
}

#[test]
fn classification_report_puts_it_together() {
    let probs = [0.9f32, 0.1, 0.4, 0.6, 0.3, 0.7, 0.8, 0.2];
    let r = ClassificationReport::new(&probs, &[0, 0, 1, 1], 2);
    assert_eq!(r.confusion.counts, vec![vec![1, 1], vec![1, 1]]);
    close(r.accuracy, 0.5);
    close(r.roc_auc.unwrap(), 0.75); // class-1 scores: positives 0.7, 0.2 against negatives 0.1, 0.6
    assert!(r.accuracy_ci[0] <= 0.5 && r.accuracy_ci[1] >= 0.5);
}

#[test]
fn segmentation_micro_and_macro_as_the_original() {
    let mut s = SegmentationCounts::new(3);
    // Truth 0 0 1 1 2 2 (ignored), prediction 0 1 1 1 2 0 0.
    s.add(&[0, 1, 1, 1, 2, 0, 0], &[0, 0, 1, 1, 2, 2, 255], Some(255));
    assert_eq!((s.tp.clone(), s.fp.clone(), s.fn_.clone()), (vec![1, 2, 1], vec![1, 1, 0], vec![1, 0, 1]));
    let r = s.report();
    close(r.micro_iou, 0.5); // 4 / (4 + 2 + 2)
    close(r.micro_dice, 8.0 / 12.0);
    close(r.mean_iou, (1.0 / 3.0 + 2.0 / 3.0 + 0.5) / 3.0);
    close(r.mean_dice, (0.5 + 0.8 + 2.0 / 3.0) / 3.0);
    close(r.mean_pixel_accuracy, (0.5 + 1.0 + 0.5) / 3.0);
    // Summing two halves gives the counts of the whole (what ranks do).
    let (mut a, mut b) = (SegmentationCounts::new(3), SegmentationCounts::new(3));
    a.add(&[0, 1, 1], &[0, 0, 1], None);
    b.add(&[1, 2, 0, 0], &[1, 2, 2, 255], Some(255));
    a.merge(&b);
    assert_eq!(a, s);
}
