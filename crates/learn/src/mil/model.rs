//! ABMIL: attention-based multiple-instance learning with gated attention (Ilse et al., 2018), in
//! the sizes CLAM uses (`fc` D → 512, attention 512 → 256 → 1, dropout 0.25), with CLAM's
//! parameter names (`attention_net.0`, `attention_a.0`, `attention_b.0`, `attention_c`,
//! `classifiers`).

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// Widths of an ABMIL network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AbmilConfig {
    /// Instance feature width (the backbone's).
    pub input: i64,
    /// Embedded instance width (CLAM's "small" size: 512).
    pub hidden: i64,
    /// Attention width (256).
    pub attention: i64,
    pub classes: i64,
    /// Dropout after the embedding and inside the attention branches while training (0.25).
    pub dropout: f64,
}

impl AbmilConfig {
    /// CLAM's "small" sizes for `input`-wide features and `classes` classes.
    pub fn small(input: i64, classes: i64) -> Self {
        Self { input, hidden: 512, attention: 256, classes, dropout: 0.25 }
    }
}

/// A bag's prediction: logits (1, C) and the softmax attention over its instances (N).
pub struct BagOutput {
    pub logits: Tensor,
    pub attention: Tensor,
}

/// Gated-attention MIL: instances (N, D) → embedded H (N, 512); attention a = softmax_N(w ·
/// (tanh(V h) ⊙ sigmoid(U h))); bag embedding Σ a·h; a linear classifier on it.
pub struct Abmil {
    fc: nn::Linear,
    attention_a: nn::Linear,
    attention_b: nn::Linear,
    attention_c: nn::Linear,
    classifier: nn::Linear,
    config: AbmilConfig,
}

impl Abmil {
    /// Creates the parameters under `p` (PyTorch's default initialisation).
    pub fn new(p: &nn::Path, config: AbmilConfig) -> Self {
        let c = config;
        let net = p / "attention_net";
        Self {
            fc: nn::linear(&net / 0, c.input, c.hidden, Default::default()),
            attention_a: nn::linear(&net / 3 / "attention_a" / 0, c.hidden, c.attention, Default::default()),
            attention_b: nn::linear(&net / 3 / "attention_b" / 0, c.hidden, c.attention, Default::default()),
            attention_c: nn::linear(&net / 3 / "attention_c", c.attention, 1, Default::default()),
            classifier: nn::linear(p / "classifiers", c.hidden, c.classes, Default::default()),
            config,
        }
    }

    /// The bag's logits and attention; dropout only while `train`.
    pub fn forward(&self, bag: &Tensor, train: bool) -> BagOutput {
        let p = self.config.dropout;
        let h = self.fc.forward(bag).relu().dropout(p, train);
        let a = self.attention_a.forward(&h).tanh().dropout(p, train);
        let b = self.attention_b.forward(&h).sigmoid().dropout(p, train);
        let scores = self.attention_c.forward(&(a * b)).squeeze_dim(1);
        let attention = scores.softmax(0, Kind::Float);
        let pooled = attention.unsqueeze(0).matmul(&h);
        BagOutput { logits: self.classifier.forward(&pooled), attention }
    }

    pub fn config(&self) -> &AbmilConfig {
        &self.config
    }
}
