"""Goldens for crates/slide_encoders (tests/slide_encoders.rs).

FEATHER: MIL-Lab's ABMIL (github.com/mahmoodlab/MIL-Lab, src/models/abmil.py and layers.py:
`create_mlp(in_dim, [], embed_dim, end_with_fc=False)` = Linear + ReLU + Dropout,
`GlobalGatedAttention(embed_dim, attn_dim)`, `classifier`; `forward_features` = softmax over the
patches of the attention logits, then the attention-weighted sum of the embedded patches), written
out here in plain PyTorch with the same module tree, inside the wrapper its Hugging Face model
(`ABMILModel.model`) puts around it, so the weight file has the published names
(`model.patch_embed.0.weight`, …). Small widths (32 → 16, attention 12), random weights.

TITAN: the slide encoder of MahmoodLab/TITAN (`vision_encoder`, `encode_slide_from_patch_features`)
as its published modelling code defines it (read, not copied): the features summed into a 2-D grid
of cells of the patch's level-0 footprint (`floor((coords - min) / patch_size_lv0)`, x-major),
empty cells dropped; `patch_embed` Linear + GELU; a class token; blocks `blocks.modules_list.N`
(pre-norm LayerNorm eps 1e-6, `attn.qkv`/`attn.proj` through scaled_dot_product_attention with the
2-D ALiBi bias of the occupied cells, `mlp.fc1`/`fc2` with GELU); `norm`; the slide embedding is
`attn_pool_contrastive` (torch's nn.MultiheadAttention, one learned query, `ln_q`/`ln_k`) over all
tokens. 12 heads (8 in the pooler) as published; small widths (32 → 48, MLP 96, 2 blocks). The file
also holds what the published one does beside the encoder (`attn_pool`, `proj`, a text encoder).

Slide probe: scikit-learn's LogisticRegression(C=0.5) (lbfgs, multinomial, fitted to tol 1e-10)
on three Gaussian classes: its class probabilities on held-out rows.

Regenerate (the committed files were made with torch 2.13.0, scikit-learn 1.9.1, safetensors 0.8.0):
    pip install scikit-learn safetensors numpy   (torch beside it)
    python3 tools/make_slide_encoder_goldens.py
Writes crates/slide_encoders/tests/fixtures/{feather,titan}.safetensors and goldens.json.
"""
import json
import os

import numpy as np
import torch
from safetensors.torch import save_file
from sklearn.linear_model import LogisticRegression
from torch import nn
from torch.nn import functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates", "slide_encoders", "tests", "fixtures")
IN_DIM, EMBED, ATTN, PATCHES = 32, 16, 12, 40


class GatedAttention(nn.Module):
    def __init__(self, embed, attn):
        super().__init__()
        self.attention_a = nn.Sequential(nn.Linear(embed, attn), nn.Tanh(), nn.Dropout(0.25))
        self.attention_b = nn.Sequential(nn.Linear(embed, attn), nn.Sigmoid(), nn.Dropout(0.25))
        self.attention_c = nn.Linear(attn, 1)

    def forward(self, h):
        return self.attention_c(self.attention_a(h) * self.attention_b(h))


class Abmil(nn.Module):
    """MIL-Lab's ABMIL; FEATHER's published sizes are Abmil(768 or 1536, 512, 384)."""

    def __init__(self, in_dim=IN_DIM, embed=EMBED, attn=ATTN):
        super().__init__()
        self.patch_embed = nn.Sequential(nn.Linear(in_dim, embed), nn.ReLU(), nn.Dropout(0.25))
        self.global_attn = GatedAttention(embed, attn)
        self.classifier = nn.Linear(embed, 2)

    def forward_features(self, x):
        """x: [B, M, D] → ([B, EMBED], attention logits [B, 1, M])."""
        h = self.patch_embed(x)
        a = self.global_attn(h).transpose(-2, -1)
        return torch.bmm(torch.softmax(a, dim=-1), h).squeeze(1), a


class Wrapper(nn.Module):
    """What the Hugging Face `ABMILModel` holds: the network as `model`."""

    def __init__(self, *sizes):
        super().__init__()
        self.model = Abmil(*sizes)


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


T_IN, T_D, T_HIDDEN, T_DEPTH, T_HEADS, T_POOL_HEADS, FOOTPRINT = 32, 48, 96, 2, 12, 8, 512


class TitanBlock(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(d, 3 * d)
        self.attn.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(d, hidden)
        self.mlp.fc2 = nn.Linear(hidden, d)

    def forward(self, x, bias):
        n, d = x.shape[1], x.shape[2]
        h = self.norm1(x)
        q, k, v = self.attn.qkv(h).reshape(1, n, 3, T_HEADS, d // T_HEADS).permute(2, 0, 3, 1, 4).unbind(0)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = x + self.attn.proj(a.transpose(1, 2).reshape(1, n, d))
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class Pooler(nn.Module):
    def __init__(self, d, queries):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(queries, d))
        self.attn = nn.MultiheadAttention(d, T_POOL_HEADS, kdim=d, vdim=d)
        self.ln_q = nn.LayerNorm(d)
        self.ln_k = nn.LayerNorm(d)

    def forward(self, x):
        kv = self.ln_k(x).permute(1, 0, 2)
        q = self.ln_q(self.query).unsqueeze(1)
        return self.attn(q, kv, kv, need_weights=False)[0].permute(1, 0, 2)


class TitanVision(nn.Module):
    """TITAN's `vision_encoder`; the published sizes are TitanVision(768, 768, 3072, 6, 128)."""

    def __init__(self, width=T_IN, d=T_D, hidden=T_HIDDEN, depth=T_DEPTH, caption_queries=4):
        super().__init__()
        self.patch_embed = nn.Sequential(nn.Linear(width, d), nn.GELU())
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.blocks = nn.Module()
        self.blocks.modules_list = nn.ModuleList([TitanBlock(d, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.attn_pool = Pooler(d, caption_queries)
        self.attn_pool_contrastive = Pooler(d, 1)
        self.proj = nn.Parameter(torch.zeros(d, d))

    def encode(self, features, coords, footprint):
        grid = torch.div(coords - coords.min(dim=0).values, footprint, rounding_mode="floor")
        cols, rows = (grid.max(dim=0).values + 1).tolist()
        cells = torch.zeros(cols * rows, features.shape[1]).index_add_(0, grid[:, 0] * rows + grid[:, 1], features)
        occupied = (cells != 0).any(dim=1)
        x = self.patch_embed(cells[occupied]).unsqueeze(0)
        x = torch.cat([self.cls_token, x], dim=1)
        gx, gy = np.meshgrid(np.arange(cols), np.arange(rows), indexing="ij")
        keep = occupied.numpy().reshape(cols, rows)
        points = np.stack([gx[keep], gy[keep]], axis=1).astype(np.float64)
        dist = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(-1))
        slopes = [0.5 ** (i + 1) for i in range(8)] + [2 ** -(0.5 + i) for i in range(4)]
        bias = torch.zeros(1, T_HEADS, len(points) + 1, len(points) + 1)
        bias[0, :, 1:, 1:] = -torch.tensor(slopes).view(-1, 1, 1) * torch.tensor(dist, dtype=torch.float32)
        for block in self.blocks.modules_list:
            x = block(x, bias)
        return self.attn_pool_contrastive(self.norm(x)).squeeze(1)[0]


def titan():
    torch.manual_seed(5)
    model = TitanVision().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.25)
    rng = np.random.default_rng(6)
    cells = [(c, r) for c in range(6) for r in range(5) if rng.random() < 0.6]
    # Slide-space corners: an offset, a cell's patch anywhere inside it, one cell holding two.
    corners = [(1000 + c * FOOTPRINT + int(rng.integers(0, 40)), 700 + r * FOOTPRINT + int(rng.integers(0, 40))) for c, r in cells]
    corners.append((corners[3][0] + 100, corners[3][1] + 200))
    coords = torch.tensor(corners, dtype=torch.int64)
    x = torch.randn(len(corners), T_IN, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        z = model.encode(x, coords, FOOTPRINT)
    tensors = {f"vision_encoder.{k}": v.contiguous() for k, v in model.state_dict().items()}
    tensors["text_encoder.token_embedding.weight"] = torch.zeros(10, T_D)
    save_file(tensors, os.path.join(OUT, "titan.safetensors"))
    return {"features": x.flatten().tolist(), "coords": coords.flatten().tolist(), "footprint": FOOTPRINT,
            "embedding": z.tolist()}


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
    goldens = {"feather": feather(), "titan": titan(), "probe": probe()}
    with open(os.path.join(OUT, "goldens.json"), "w") as f:
        json.dump(goldens, f)
    print("wrote", OUT)
