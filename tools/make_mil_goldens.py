"""Goldens for crates/learn's ABMIL (tests/mil.rs): gated-attention MIL written out from the paper
(Ilse et al. 2018, eq. 9) in plain PyTorch, in CLAM's sizes and parameter names, with the
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


def main():
    w = {k: torch.from_numpy(det(k, s)).double() for k, s in SHAPES.items()}
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
    }
    path = os.path.join(ROOT, "crates/learn/tests/fixtures/mil.json")
    with open(path, "w") as f:
        json.dump(out, f)
    print(path)


if __name__ == "__main__":
    main()
