"""Goldens for crates/mil's ABMIL and CLAM-SB (tests/mil.rs): gated-attention MIL written out
from the paper (Ilse et al. 2018, eq. 9) in plain PyTorch, in CLAM's sizes and parameter names,
and CLAM-SB's instance-clustering loss written from the CLAM paper (Lu et al. 2021: the k most
and least attended instances, a 2-way classifier per class, CE or CLAM's `--inst_loss svm`, bag
weight 0.7), with the deterministic weights of make_model_goldens.py (`det`, by name) on a
deterministic bag. The SVM is the smooth top-1 multi-class SVM of Berrada, Zisserman & Kumar
(ICLR 2018, "Smooth loss functions for deep top-k classification"): with margin alpha = 1 and
temperature tau = 1, tau * log sum_j exp((s_j + alpha [j != y]) / tau) - s_y, averaged over
instances, and for an instance whose two best scores lie at least tau * log(1000) apart the hard
top-1 SVM max_j (s_j + alpha [j != y]) - s_y (the smooth loss's numerically safe limit, which the
authors' own implementation takes there).

Regenerate: PYTHONPATH=/tmp/gpy:.libtorch python3 tools/make_mil_goldens.py
Writes crates/mil/tests/fixtures/mil.json.
"""
import json
import math
import os

import torch

from make_model_goldens import det, flat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
D, HIDDEN, ATT, CLASSES, N, LABEL = 24, 512, 256, 3, 9, 2
ATT_SCALE = 50.0
SHAPES = {
    "attention_net.0.weight": (HIDDEN, D), "attention_net.0.bias": (HIDDEN,),
    "attention_net.3.attention_a.0.weight": (ATT, HIDDEN), "attention_net.3.attention_a.0.bias": (ATT,),
    "attention_net.3.attention_b.0.weight": (ATT, HIDDEN), "attention_net.3.attention_b.0.bias": (ATT,),
    "attention_net.3.attention_c.weight": (1, ATT), "attention_net.3.attention_c.bias": (1,),
    "classifiers.weight": (CLASSES, HIDDEN), "classifiers.bias": (CLASSES,),
}
INSTANCE = {f"instance_classifiers.{c}.{p}": s for c in range(CLASSES) for p, s in [("weight", (2, HIDDEN)), ("bias", (2,))]}
K, BAG_WEIGHT = 8, 0.7


def smooth_top1_svm(x, y, alpha=1.0, tau=1.0, thresh=1e3):
    """Mean smooth top-1 SVM loss of scores x (N, C) for labels y (N)."""
    top2 = x.topk(2, dim=1).values
    hard = (top2[:, 0] - top2[:, 1]) >= tau * math.log(thresh)
    shifted = x + alpha * (1.0 - torch.nn.functional.one_hot(y, x.shape[1]).to(x.dtype))
    own = x.gather(1, y[:, None])[:, 0]
    smooth = tau * torch.logsumexp(shifted / tau, dim=1) - own
    return torch.where(hard, shifted.max(dim=1).values - own, smooth).mean()


def instance_loss(w, h, attention, label, subtyping, criterion=torch.nn.functional.cross_entropy):
    """Sum over classes (averaged when subtyping) of the instance classifiers' cross-entropy: for the
    bag's class its top-k attended instances as positives and bottom-k as negatives; for the
    others (when subtyping) their top-k as negatives."""
    a = attention[0]
    k = min(K, a.numel())
    top, bottom = torch.topk(a, k).indices, torch.topk(-a, k).indices
    total = torch.zeros((), dtype=torch.float64)
    for c in range(CLASSES):
        lin = lambda x: x @ w[f"instance_classifiers.{c}.weight"].T + w[f"instance_classifiers.{c}.bias"]
        if c == label:
            x, y = h[torch.cat([top, bottom])], torch.cat([torch.ones(k), torch.zeros(k)]).long()
        elif subtyping:
            x, y = h[top], torch.zeros(k).long()
        else:
            continue
        total = total + criterion(lin(x), y)
    return total / CLASSES if subtyping else total


def main():
    w = {k: torch.from_numpy(det(k, s)).double() for k, s in {**SHAPES, **INSTANCE}.items()}
    # det's fan-in scaling leaves the attention nearly uniform; a steeper scorer tests it.
    w["attention_net.3.attention_c.weight"] *= ATT_SCALE
    lin = lambda x, n: x @ w[f"{n}.weight"].T + w[f"{n}.bias"]
    bag = torch.from_numpy(det("bag", (N, D))).double() * 30.0
    h = torch.relu(lin(bag, "attention_net.0"))                      # instance embeddings
    gate = torch.tanh(lin(h, "attention_net.3.attention_a.0")) * torch.sigmoid(lin(h, "attention_net.3.attention_b.0"))
    attention = torch.softmax(lin(gate, "attention_net.3.attention_c").T, dim=1)   # (1, N)
    logits = lin(attention @ h, "classifiers")                       # (1, C)
    y = torch.tensor([LABEL])
    class_weights = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    out = {
        "input": D, "instances": N, "classes": CLASSES, "label": LABEL, "bag": "det(\"bag\") * 30", "attention_c_scale": ATT_SCALE,
        "logits": flat(logits), "attention": flat(attention),
        "loss": float(torch.nn.functional.cross_entropy(logits, y)),
        "class_weights": flat(class_weights),
        "weighted_loss": float(torch.nn.functional.cross_entropy(logits, y, weight=class_weights)),
        "k": K, "bag_weight": BAG_WEIGHT,
    }
    for subtyping in (True, False):
        inst = instance_loss(w, h, attention, LABEL, subtyping)
        bag = torch.nn.functional.cross_entropy(logits, y) * class_weights[LABEL]
        key = "subtyping" if subtyping else "binary"
        out[f"instance_loss_{key}"] = float(inst)
        out[f"clam_sb_loss_{key}"] = float(BAG_WEIGHT * bag + (1 - BAG_WEIGHT) * inst)
        svm = instance_loss(w, h, attention, LABEL, subtyping, smooth_top1_svm)
        out[f"instance_svm_loss_{key}"] = float(svm)
        out[f"clam_sb_svm_loss_{key}"] = float(BAG_WEIGHT * bag + (1 - BAG_WEIGHT) * svm)
    # The SVM alone on scores that take both branches (gaps below and above log 1000 ≈ 6.91).
    scores = torch.tensor([[0.3, -0.2], [2.0, 1.5], [9.0, 0.5], [-4.0, 4.0], [0.0, 0.0], [1.0, 8.5]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 0, 1, 1])
    out["svm_scores"] = flat(scores)
    out["svm_labels"] = labels.tolist()
    out["svm_loss"] = float(smooth_top1_svm(scores, labels))
    path = os.path.join(ROOT, "crates/mil/tests/fixtures/mil.json")
    with open(path, "w") as f:
        json.dump(out, f)
    print(path)


if __name__ == "__main__":
    main()
