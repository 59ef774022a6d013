"""Goldens for crates/learn's ABMIL and CLAM-SB (tests/mil.rs): gated-attention MIL written out
from the paper (Ilse et al. 2018, eq. 9) in plain PyTorch, in CLAM's sizes and parameter names,
and CLAM-SB's instance-clustering loss written from the CLAM paper (Lu et al. 2021: the k most
and least attended instances, a 2-way classifier per class, CE, bag weight 0.7), with the
deterministic weights of make_model_goldens.py (`det`, by name) on a deterministic bag.

Regenerate: PYTHONPATH=/tmp/gpy:.libtorch python3 tools/make_mil_goldens.py
Writes crates/learn/tests/fixtures/mil.json.
"""
import json
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


def instance_loss(w, h, attention, label, subtyping):
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
        total = total + torch.nn.functional.cross_entropy(lin(x), y)
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
    path = os.path.join(ROOT, "crates/learn/tests/fixtures/mil.json")
    with open(path, "w") as f:
        json.dump(out, f)
    print(path)


if __name__ == "__main__":
    main()
