//! What a pretrained backbone is judged by on the small benchmarks: fine-tuning (classification,
//! linear probing, segmentation) with the best epoch selected on validation, and frozen-feature
//! probes (logistic regression and k-NN on embeddings).

pub mod finetune;
pub mod probe;
