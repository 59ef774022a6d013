"""Goldens for crates/slide_encoders (tests/slide_encoders.rs).

FEATHER: MIL-Lab's ABMIL (github.com/mahmoodlab/MIL-Lab, src/models/abmil.py and layers.py:
`create_mlp(in_dim, [], embed_dim, end_with_fc=False)` = Linear + ReLU + Dropout,
`GlobalGatedAttention(embed_dim, attn_dim)`, `classifier`; `forward_features` = softmax over the
patches of the attention logits, then the attention-weighted sum of the embedded patches), written
out here in plain PyTorch with the same module tree, inside the wrapper its Hugging Face model
(`ABMILModel.model`) puts around it, so the weight file has the published names
(`model.patch_embed.0.weight`, …). Small widths (32 → 16, attention 12), random weights.

Slide probe: scikit-learn's LogisticRegression(C=0.5) (lbfgs, multinomial, fitted to tol 1e-10)
on three Gaussian classes: its class probabilities on held-out rows.

Regenerate (the committed files were made with torch 2.13.0, scikit-learn 1.9.1, safetensors 0.8.0):
    pip install scikit-learn safetensors numpy   (torch beside it)
    python3 tools/make_slide_encoder_goldens.py
Writes crates/slide_encoders/tests/fixtures/{feather.safetensors,goldens.json}.
"""
import json
import os

import numpy as np
import torch
from safetensors.torch import save_file
from sklearn.linear_model import LogisticRegression
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates", "slide_encoders", "tests", "fixtures")
IN_DIM, EMBED, ATTN, PATCHES = 32, 16, 12, 40


class GatedAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention_a = nn.Sequential(nn.Linear(EMBED, ATTN), nn.Tanh(), nn.Dropout(0.25))
        self.attention_b = nn.Sequential(nn.Linear(EMBED, ATTN), nn.Sigmoid(), nn.Dropout(0.25))
        self.attention_c = nn.Linear(ATTN, 1)

    def forward(self, h):
        return self.attention_c(self.attention_a(h) * self.attention_b(h))


class Abmil(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch_embed = nn.Sequential(nn.Linear(IN_DIM, EMBED), nn.ReLU(), nn.Dropout(0.25))
        self.global_attn = GatedAttention()
        self.classifier = nn.Linear(EMBED, 2)

    def forward_features(self, x):
        """x: [B, M, D] → ([B, EMBED], attention logits [B, 1, M])."""
        h = self.patch_embed(x)
        a = self.global_attn(h).transpose(-2, -1)
        return torch.bmm(torch.softmax(a, dim=-1), h).squeeze(1), a


class Wrapper(nn.Module):
    """What the Hugging Face `ABMILModel` holds: the network as `model`."""

    def __init__(self):
        super().__init__()
        self.model = Abmil()


def feather():
    torch.manual_seed(0)
    wrapper = Wrapper().eval()
    for p in wrapper.parameters():
        with torch.no_grad():
            p.normal_(0.0, 0.3)
    x = torch.randn(1, PATCHES, IN_DIM, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z, a = wrapper.model.forward_features(x)
    save_file({k: v.contiguous() for k, v in wrapper.state_dict().items()}, os.path.join(OUT, "feather.safetensors"))
    return {"features": x[0].flatten().tolist(), "embedding": z[0].tolist(), "attention": a[0, 0].tolist()}


def probe():
    rng = np.random.default_rng(2)
    centres = rng.normal(0.0, 1.5, size=(3, 6))

    def draw(n):
        y = np.arange(n) % 3
        return centres[y] + rng.normal(0.0, 1.0, size=(n, 6)), y

    (x, y), (test, _) = draw(45), draw(12)
    model = LogisticRegression(C=0.5, max_iter=10000, tol=1e-10).fit(x, y)
    return {"cost": 0.5, "x": x.flatten().tolist(), "y": y.tolist(), "test": test.flatten().tolist(),
            "probs": model.predict_proba(test).flatten().tolist()}


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    goldens = {"feather": feather(), "probe": probe()}
    with open(os.path.join(OUT, "goldens.json"), "w") as f:
        json.dump(goldens, f)
    print("wrote", OUT)
