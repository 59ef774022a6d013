//! ABMIL: attention-based multiple-instance learning with gated attention (Ilse et al., 2018), in
//! the sizes CLAM uses (`fc` D → 512, attention 512 → 256 → 1, dropout 0.25), with CLAM's
//! parameter names (`attention_net.0`, `attention_a.0`, `attention_b.0`, `attention_c`,
//! `classifiers`); and CLAM-SB (Lu et al., 2021): the same network plus one instance classifier
//! per class (`instance_classifiers.<c>`) trained on the most and least attended instances.

pub use patchtcga_metrics::mil::MilArch;
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// CLAM's instance-clustering loss: per class, the `k` most attended instances are that class's
/// positives (for the bag's class) or negatives (for the others, when `subtyping`), the `k` least
/// attended the bag class's negatives; a 2-way instance classifier's loss on them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InstanceLoss {
    /// Instances taken from each end of the attention (CLAM's `k_sample`, 8; at most the bag's).
    pub k: i64,
    /// The bag loss's share of the total (CLAM's `bag_weight`, 0.7).
    pub bag_weight: f64,
    /// Classes are mutually exclusive subtypes: out-of-class instance losses too, averaged over
    /// classes (CLAM's `subtyping`; taken for more than two classes).
    pub subtyping: bool,
    /// The instance classifiers' loss (CLAM's `--inst_loss`).
    pub criterion: InstanceCriterion,
}

/// The loss of CLAM's instance classifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InstanceCriterion {
    /// Cross-entropy (CLAM's default).
    #[default]
    CrossEntropy,
    /// The smooth top-1 SVM (Berrada et al. 2018; CLAM's `--inst_loss svm`): margin 1,
    /// temperature 1, mean over instances; an instance whose two best scores lie at least
    /// log 1000 apart takes the hard top-1 SVM, the smooth loss's numerically safe limit.
    SmoothSvm,
}

impl std::str::FromStr for InstanceCriterion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ce" => Ok(Self::CrossEntropy),
            "svm" => Ok(Self::SmoothSvm),
            _ => Err(format!("{s:?}: ce or svm")),
        }
    }
}

impl std::fmt::Display for InstanceCriterion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::CrossEntropy => "ce",
            Self::SmoothSvm => "svm",
        })
    }
}

impl InstanceCriterion {
    /// The mean loss of scores (N, C) for labels (N).
    pub fn loss(self, scores: &Tensor, labels: &Tensor) -> Tensor {
        match self {
            Self::CrossEntropy => cross_entropy(scores, labels),
            Self::SmoothSvm => smooth_top1_svm(scores, labels),
        }
    }
}

/// The smooth top-1 SVM of [`InstanceCriterion::SmoothSvm`], margin and temperature 1.
fn smooth_top1_svm(scores: &Tensor, labels: &Tensor) -> Tensor {
    let (alpha, tau) = (1.0, 1.0);
    let classes = scores.size()[1];
    let (top2, _) = scores.topk(2, 1, true, true);
    let hard = (top2.select(1, 0) - top2.select(1, 1)).ge(tau * 1000f64.ln());
    let own = scores.gather(1, &labels.unsqueeze(1), false).squeeze_dim(1);
    let margin = (labels.one_hot(classes).to_kind(scores.kind()) * -1.0 + 1.0) * alpha;
    let shifted = scores + margin;
    let smooth = (&shifted / tau).logsumexp([1], false) * tau - &own;
    let (max, _) = shifted.max_dim(1, false);
    (max - &own).where_self(&hard, &smooth).mean(scores.kind())
}

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
    /// CLAM-SB's instance branch, or none (ABMIL).
    pub instance: Option<InstanceLoss>,
}

impl AbmilConfig {
    /// CLAM's "small" sizes for `input`-wide features and `classes` classes, and for CLAM-SB
    /// its instance loss (k 8, bag weight 0.7, subtyping for more than two classes).
    pub fn small(arch: MilArch, input: i64, classes: i64) -> Self {
        let instance = (arch == MilArch::ClamSb).then_some(InstanceLoss {
            k: 8,
            bag_weight: 0.7,
            subtyping: classes > 2,
            criterion: InstanceCriterion::default(),
        });
        Self { input, hidden: 512, attention: 256, classes, dropout: 0.25, instance }
    }
}

/// A bag's prediction: logits (1, C), the softmax attention over its instances (N), and the
/// embedded instances (N, hidden) the attention weighs.
pub struct BagOutput {
    pub logits: Tensor,
    pub attention: Tensor,
    pub embeddings: Tensor,
}

/// Gated-attention MIL: instances (N, D) → embedded H (N, 512); attention a = softmax_N(w ·
/// (tanh(V h) ⊙ sigmoid(U h))); bag embedding Σ a·h; a linear classifier on it.
pub struct Abmil {
    fc: nn::Linear,
    attention_a: nn::Linear,
    attention_b: nn::Linear,
    attention_c: nn::Linear,
    classifier: nn::Linear,
    /// CLAM-SB's 2-way instance classifiers, one per class (none for ABMIL).
    instance_classifiers: Vec<nn::Linear>,
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
            instance_classifiers: match c.instance {
                Some(_) => (0..c.classes)
                    .map(|i| nn::linear(p / "instance_classifiers" / i, c.hidden, 2, Default::default()))
                    .collect(),
                None => Vec::new(),
            },
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
        let attention = scores.softmax(0, reduction_kind(&scores));
        let pooled = attention.unsqueeze(0).matmul(&h);
        BagOutput { logits: self.classifier.forward(&pooled), attention, embeddings: h }
    }

    /// The training loss of a bag of class `label`: its cross-entropy times `weight`, and for
    /// CLAM-SB `bag_weight` of that plus the rest of the instance loss.
    pub fn loss(&self, out: &BagOutput, label: i64, weight: &Tensor) -> Tensor {
        let bag = bag_loss(&out.logits, label, weight);
        match self.config.instance {
            Some(i) => bag * i.bag_weight + self.instance_loss(out, label, i) * (1.0 - i.bag_weight),
            None => bag,
        }
    }

    /// CLAM's instance-clustering loss of a bag of class `label`.
    pub fn instance_loss(&self, out: &BagOutput, label: i64, i: InstanceLoss) -> Tensor {
        let n = out.attention.size()[0];
        let k = i.k.min(n);
        let device = out.attention.device();
        let (_, top) = out.attention.topk(k, 0, true, true);
        let (_, bottom) = out.attention.topk(k, 0, false, true);
        let targets = |v: i64| Tensor::full([k], v, (Kind::Int64, device));
        let losses: Vec<Tensor> = self
            .instance_classifiers
            .iter()
            .enumerate()
            .filter_map(|(c, classifier)| {
                let (instances, y) = if c as i64 == label {
                    let both = Tensor::cat(&[&top, &bottom], 0);
                    (out.embeddings.index_select(0, &both), Tensor::cat(&[targets(1), targets(0)], 0))
                } else if i.subtyping {
                    (out.embeddings.index_select(0, &top), targets(0))
                } else {
                    return None;
                };
                Some(i.criterion.loss(&classifier.forward(&instances), &y))
            })
            .collect();
        let total = Tensor::stack(&losses, 0);
        let total = total.sum(reduction_kind(&total));
        if i.subtyping {
            total / self.instance_classifiers.len() as f64
        } else {
            total
        }
    }

    pub fn config(&self) -> &AbmilConfig {
        &self.config
    }
}

/// A bag's cross-entropy times its class's `weight` (one bag per step: PyTorch's weighted mean
/// would divide the weight out again); the validation loss of every network.
pub fn bag_loss(logits: &Tensor, label: i64, weight: &Tensor) -> Tensor {
    let y = Tensor::from_slice(&[label]).to_device(logits.device());
    cross_entropy(logits, &y) * weight
}

/// The kind softmaxes and sums are taken in: float32 at least (half-precision values are upcast,
/// as under autocast), float64 for float64 values (the parity tests).
fn reduction_kind(t: &Tensor) -> Kind {
    if t.kind() == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    }
}

/// Mean cross-entropy of `logits` (N, C) against class indices, in [`reduction_kind`].
fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Tensor {
    logits.log_softmax(-1, reduction_kind(logits)).nll_loss(labels)
}

/// A MIL network of any [`MilArch`].
pub enum MilNet {
    /// ABMIL or CLAM-SB.
    Attention(Abmil),
    TransMil(Box<crate::transmil::TransMil>),
}

impl MilNet {
    /// Creates `arch`'s parameters under `p` (CLAM's and TransMIL's sizes).
    pub fn new(p: &nn::Path, arch: MilArch, input: i64, classes: i64) -> Self {
        match arch {
            MilArch::TransMil => Self::TransMil(Box::new(crate::transmil::TransMil::new(p, input, classes))),
            _ => Self::Attention(Abmil::new(p, AbmilConfig::small(arch, input, classes))),
        }
    }

    /// The network with `criterion` as its instance classifiers' loss (CLAM-SB; the others have
    /// none).
    pub fn instance_criterion(mut self, criterion: InstanceCriterion) -> Self {
        if let Self::Attention(m) = &mut self {
            if let Some(i) = &mut m.config.instance {
                i.criterion = criterion;
            }
        }
        self
    }

    /// A bag's (1, C) logits, and the attention over its instances where the network pools by
    /// attention (not TransMIL).
    pub fn predict(&self, bag: &Tensor, train: bool) -> (Tensor, Option<Tensor>) {
        match self {
            Self::Attention(m) => {
                let out = m.forward(bag, train);
                (out.logits, Some(out.attention))
            }
            Self::TransMil(m) => (m.forward(bag, train).0, None),
        }
    }

    /// The training loss of a bag of class `label` (the forward included).
    pub fn training_loss(&self, bag: &Tensor, label: i64, weight: &Tensor) -> Tensor {
        match self {
            Self::Attention(m) => m.loss(&m.forward(bag, true), label, weight),
            Self::TransMil(m) => bag_loss(&m.forward(bag, true).0, label, weight),
        }
    }
}
