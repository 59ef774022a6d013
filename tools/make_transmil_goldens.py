"""Goldens for crates/mil's TransMIL (tests/mil.rs): TransMIL (Shao et al., NeurIPS 2021) written
out in plain PyTorch from the paper and its published design — instance projection to 512, a class
token, the bag padded to a square by repeating its first instances, two Transformer layers of
Nyström attention (Xiong et al., AAAI 2021: 8 heads of 64, 256 landmarks as means of consecutive
tokens after zero-padding at the front, a 6-iteration Moore–Penrose pseudo-inverse, a 33 × 1
depthwise convolution of the values as residual) with the PPEG position encoding (depthwise 7, 5
and 3 convolutions over the square) between them, LayerNorm and a linear classifier on the class
token — in TransMIL's parameter names, float64, with the deterministic weights of
make_model_goldens.py (`det`, by name) on deterministic bags of 9 and 300 instances.

Regenerate: PYTHONPATH=bench/.pydeps:.libtorch python3 tools/make_transmil_goldens.py
Writes crates/mil/tests/fixtures/transmil.json.
"""
import json
import math
import os

import torch
import torch.nn.functional as F

from make_model_goldens import det, flat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
D, DIM, HEADS, LANDMARKS, CLASSES = 24, 512, 8, 256, 3


def shapes():
    s = {"_fc1.0.weight": (DIM, D), "_fc1.0.bias": (DIM,), "cls_token": (1, 1, DIM),
         "norm.weight": (DIM,), "norm.bias": (DIM,), "_fc2.weight": (CLASSES, DIM), "_fc2.bias": (CLASSES,)}
    for k, size in (("proj", 7), ("proj1", 5), ("proj2", 3)):
        s[f"pos_layer.{k}.weight"], s[f"pos_layer.{k}.bias"] = (DIM, 1, size, size), (DIM,)
    for layer in ("layer1", "layer2"):
        s[f"{layer}.norm.weight"], s[f"{layer}.norm.bias"] = (DIM,), (DIM,)
        s[f"{layer}.attn.to_qkv.weight"] = (3 * DIM, DIM)
        s[f"{layer}.attn.to_out.0.weight"], s[f"{layer}.attn.to_out.0.bias"] = (DIM, DIM), (DIM,)
        s[f"{layer}.attn.res_conv.weight"] = (HEADS, 1, 33, 1)
    return s


def pinv(x, iters=6):
    a = x.abs()
    z = x.transpose(-1, -2) / (a.sum(-1).max() * a.sum(-2).max())
    eye = torch.eye(x.shape[-1], dtype=x.dtype)
    for _ in range(iters):
        xz = x @ z
        z = 0.25 * z @ (13 * eye - xz @ (15 * eye - xz @ (7 * eye - xz)))
    return z


def nystrom(w, p, x):
    n, m, dh = x.shape[1], LANDMARKS, DIM // HEADS
    if n % m:
        x = F.pad(x, (0, 0, m - n % m, 0))
    q, k, v = (x @ w[f"{p}.to_qkv.weight"].T).chunk(3, dim=-1)
    q, k, v = (t.reshape(1, -1, HEADS, dh).permute(0, 2, 1, 3) for t in (q, k, v))
    q = q * dh ** -0.5
    l = math.ceil(n / m)
    ql, kl = (t.reshape(1, HEADS, m, l, dh).sum(3) / l for t in (q, k))
    a1, a2, a3 = ((s @ t.transpose(-1, -2)).softmax(-1) for s, t in ((q, kl), (ql, kl), (ql, k)))
    out = (a1 @ pinv(a2)) @ (a3 @ v)
    out = out + F.conv2d(v, w[f"{p}.res_conv.weight"], padding=(16, 0), groups=HEADS)
    out = out.permute(0, 2, 1, 3).reshape(1, -1, DIM)
    out = out @ w[f"{p}.to_out.0.weight"].T + w[f"{p}.to_out.0.bias"]
    return out[:, -n:]


def ppeg(w, x, side):
    cls, feat = x[:, :1], x[:, 1:].transpose(1, 2).reshape(1, DIM, side, side)
    y = feat
    for k, size in (("proj", 7), ("proj1", 5), ("proj2", 3)):
        y = y + F.conv2d(feat, w[f"pos_layer.{k}.weight"], w[f"pos_layer.{k}.bias"], padding=size // 2, groups=DIM)
    return torch.cat([cls, y.flatten(2).transpose(1, 2)], 1)


def transmil(w, bag):
    ln = lambda x, p: F.layer_norm(x, (DIM,), w[f"{p}.weight"], w[f"{p}.bias"])
    h = torch.relu(bag @ w["_fc1.0.weight"].T + w["_fc1.0.bias"])
    side = math.ceil(math.sqrt(h.shape[0]))
    h = torch.cat([h, h[: side * side - h.shape[0]]])
    h = torch.cat([w["cls_token"][0], h]).unsqueeze(0)
    h = h + nystrom(w, "layer1.attn", ln(h, "layer1.norm"))
    h = ppeg(w, h, side)
    h = h + nystrom(w, "layer2.attn", ln(h, "layer2.norm"))
    return ln(h, "norm")[:, 0] @ w["_fc2.weight"].T + w["_fc2.bias"]


def main():
    w = {k: torch.from_numpy(det(k, s)).double() for k, s in shapes().items()}
    out = {"input": D, "classes": CLASSES, "bags": []}
    for n in (9, 300):
        bag = torch.from_numpy(det(f"bag{n}", (n, D))).double() * 30.0
        out["bags"].append({"instances": n, "bag": f"det(\"bag{n}\") * 30", "logits": flat(transmil(w, bag))})
    path = os.path.join(ROOT, "crates/mil/tests/fixtures/transmil.json")
    with open(path, "w") as f:
        json.dump(out, f)
    print(path, [b["logits"] for b in out["bags"]])


if __name__ == "__main__":
    main()
