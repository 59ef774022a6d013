"""Goldens for the foundation-model presets (crates/model/tests/foundation.rs).

Each preset is built with its authors' exact configuration at reduced depth (2 blocks, full width)
in the reference library, filled with the deterministic weights of make_model_goldens.py (`det`,
by parameter name), and run on a deterministic image at the native 224 px and at 112 px:

  uni, uni2-h, virchow, virchow2, h-optimus-0, gigapath   timm VisionTransformer (dynamic_img_size)
  phikon                          transformers ViTModel, weights named as Hugging Face names them
  dinov2-s14, dinov2-g14          weights named as DINOv2's repository names them, converted by
                                  timm's checkpoint filter; position embedding interpolated by
                                  DINOv2's rule (bicubic by (grid + 0.1) / 37, no antialiasing)

and timm's vit_small_patch14_dinov2 made at img_size=224 (its own 16x16 grid), run at 224 px; and
CONCH v1.5's vision tower (conch-v15, also at 448 px).

For phikon and DINOv2 the golden also lists the checkpoint's names and shapes: the Rust test fills
a file with `det` under those names and imports it without options.

Regenerate (the committed file was made with torch 2.13.0, timm 1.0.31, transformers 5.24.0):
    pip install --target /tmp/gpy timm transformers safetensors numpy   (torch beside it)
    PYTHONPATH=/tmp/gpy:.libtorch python3 tools/make_foundation_goldens.py [part …]
(parts: timm phikon dinov2 dinov2_timm_224 conch_v15; named parts are merged into the file)
"""
import json
import math
import os
import sys

import numpy as np
import torch
from torch import nn
from timm.layers import SwiGLUPacked
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from make_model_goldens import det, det_input, flat, MODEL

DEPTH = 2
SIZES = (224, 112)


def fill(model):
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.from_numpy(det(name, tuple(t.shape))))


def timm_vit(**kw):
    return VisionTransformer(num_classes=0, dynamic_img_size=True, depth=DEPTH, img_size=224, **kw)


def swiglu(**kw):
    return dict(mlp_layer=SwiGLUPacked, act_layer=nn.SiLU, init_values=1e-5, **kw)


def cls(out):
    return out[:, 0]


def cls_and_mean(prefix):
    return lambda out: torch.cat([out[:, 0], out[:, prefix:].mean(1)], dim=1)


TIMM = {
    "uni": (lambda: timm_vit(patch_size=16, embed_dim=1024, num_heads=16, init_values=1e-5), cls),
    "uni2-h": (lambda: timm_vit(patch_size=14, embed_dim=1536, num_heads=24, mlp_ratio=2.66667 * 2, no_embed_class=True, reg_tokens=8, **swiglu()), cls),
    "virchow": (lambda: timm_vit(patch_size=14, embed_dim=1280, num_heads=16, mlp_ratio=5.3375, global_pool="", **swiglu()), cls_and_mean(1)),
    "virchow2": (lambda: timm_vit(patch_size=14, embed_dim=1280, num_heads=16, mlp_ratio=5.3375, global_pool="", reg_tokens=4, **swiglu()), cls_and_mean(5)),
    # timm's vit_giant_patch14_reg4_dinov2 as H-optimus-0's config.json builds it (img_size 224).
    "h-optimus-0": (lambda: timm_vit(patch_size=14, embed_dim=1536, num_heads=24, mlp_ratio=2.66667 * 2, no_embed_class=True, reg_tokens=4, **swiglu()), cls),
    # Virchow2 with the class token only (TRIDENT's option).
    "virchow2-cls": (lambda: timm_vit(patch_size=14, embed_dim=1280, num_heads=16, mlp_ratio=5.3375, global_pool="", reg_tokens=4, **swiglu()), cls),
    # H-optimus-1's model card builds H-optimus-0's architecture (its config.json).
    "h-optimus-1": (lambda: timm_vit(patch_size=14, embed_dim=1536, num_heads=24, mlp_ratio=2.66667 * 2, no_embed_class=True, reg_tokens=4, **swiglu()), cls),
    # timm's vit_giant_patch14_dinov2 with GigaPath's config.json overrides (patch 16, 224 px).
    "gigapath": (lambda: timm_vit(patch_size=16, embed_dim=1536, num_heads=24, mlp_ratio=5.33334, **swiglu()), cls),
}


def timm_cases(out):
    for name, (make, pool) in TIMM.items():
        m = make().eval()
        fill(m)
        for side in SIZES:
            x = det_input((1, 3, side, side))
            with torch.no_grad():
                y = pool(m.forward_features(x))
            out[f"{name}@{side}"] = {"input": [1, 3, side, side], "features_shape": list(y.shape), "features": flat(y)}
        print(name, "done")


# transformers 5's ViTModel conversion mapping, inverted: the names of transformers 4 files (Phikon's
# model.safetensors on the Hub).
V5_TO_V4 = [("attention.q_proj", "attention.attention.query"), ("attention.k_proj", "attention.attention.key"),
            ("attention.v_proj", "attention.attention.value"), ("attention.o_proj", "attention.output.dense"),
            ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense")]


def v4_name(name):
    if name.startswith("layers."):
        name = "encoder.layer." + name[len("layers."):]
    for new, old in V5_TO_V4:
        name = name.replace(new, old)
    return name


def phikon(out):
    import tempfile
    from safetensors.torch import save_file
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(hidden_size=768, num_hidden_layers=DEPTH, num_attention_heads=12, intermediate_size=3072, image_size=224, patch_size=16, layer_norm_eps=1e-12, qkv_bias=True)
    m = ViTModel(cfg, add_pooling_layer=True).eval()
    fill(m)
    sd = m.state_dict()
    # The transformers 4 names are checked by letting transformers itself load a file written with them.
    with tempfile.TemporaryDirectory() as d:
        cfg.save_pretrained(d)
        save_file({v4_name(k): v.contiguous() for k, v in sd.items()}, os.path.join(d, "model.safetensors"))
        old = ViTModel.from_pretrained(d, add_pooling_layer=True).eval()
    names = [[k, list(v.shape)] for k, v in sd.items()]
    for side in SIZES:
        x = det_input((1, 3, side, side))
        with torch.no_grad():
            y = m(pixel_values=x, interpolate_pos_encoding=side != 224).last_hidden_state[:, 0]
            y_old = old(pixel_values=x, interpolate_pos_encoding=side != 224).last_hidden_state[:, 0]
        assert torch.equal(y, y_old), "transformers 4 names load to the same model"
        out[f"phikon@{side}"] = {"input": [1, 3, side, side], "features_shape": list(y.shape), "features": flat(y), "checkpoint": names,
                                 "checkpoint_transformers4": [[v4_name(k), s] for k, s in names]}
    print("phikon done")


def dinov2_interpolate(pos, h, w):
    """DINOv2's interpolate_pos_encoding (written out again): class entry kept, the 37x37 grid
    bicubic by the scale factor (n + 0.1) / 37, no antialiasing."""
    n = pos.shape[1] - 1
    g = int(math.sqrt(n))
    grid = pos[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
    grid = nn.functional.interpolate(grid, scale_factor=((h + 0.1) / g, (w + 0.1) / g), mode="bicubic", antialias=False)
    assert tuple(grid.shape[-2:]) == (h, w)
    return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)], dim=1)


def dinov2_names(sd, swiglu):
    """timm names → DINOv2's repository names (SwiGLU fc1/fc2 → w12/w3) and a mask token."""
    rename = (lambda k: k.replace(".mlp.fc1.", ".mlp.w12.").replace(".mlp.fc2.", ".mlp.w3.")) if swiglu else (lambda k: k)
    out = {rename(k): tuple(v.shape) for k, v in sd.items()}
    out["mask_token"] = (1, sd["cls_token"].shape[-1])
    return out


def dinov2(out):
    configs = {
        "dinov2-s14": dict(embed_dim=384, num_heads=6),
        "dinov2-g14": dict(embed_dim=1536, num_heads=24, mlp_ratio=2.66667 * 2, mlp_layer=SwiGLUPacked, act_layer=nn.SiLU),
    }
    for name, kw in configs.items():
        m = VisionTransformer(num_classes=0, depth=DEPTH, img_size=518, patch_size=14, init_values=1e-5, **kw).eval()
        shapes = dinov2_names(m.state_dict(), "mlp_layer" in kw)
        ckpt = {k: torch.from_numpy(det(k, s)) for k, s in shapes.items()}
        m.load_state_dict(checkpoint_filter_fn(dict(ckpt), m), strict=True)
        for side in SIZES:
            x = det_input((1, 3, side, side))
            with torch.no_grad():
                p = m.patch_embed.proj(x).flatten(2).transpose(1, 2)
                g = side // 14
                pos = dinov2_interpolate(m.pos_embed, g, g)
                t = torch.cat([m.cls_token + pos[:, :1], p.reshape(1, g * g, -1) + pos[:, 1:]], dim=1)
                y = m.norm(m.blocks(t))[:, 0]
            out[f"{name}@{side}"] = {"input": [1, 3, side, side], "features_shape": list(y.shape), "features": flat(y), "checkpoint": [[k, list(s)] for k, s in shapes.items()]}
        print(name, "done")


def dinov2_timm_224(out):
    """timm's vit_small_patch14_dinov2 made at img_size=224 (a 16x16 position grid, as users
    fine-tune it) and run at 224 px: no resampling anywhere. Names and shapes are timm's."""
    m = VisionTransformer(num_classes=0, depth=DEPTH, img_size=224, patch_size=14, embed_dim=384, num_heads=6, init_values=1e-5).eval()
    fill(m)
    x = det_input((1, 3, 224, 224))
    with torch.no_grad():
        y = m.forward_head(m.forward_features(x), pre_logits=True)
    shapes = [[k, list(v.shape)] for k, v in m.state_dict().items()]
    out["dinov2-s14-timm224@224"] = {"input": [1, 3, 224, 224], "features_shape": list(y.shape), "features": flat(y), "checkpoint": shapes}
    print("dinov2-s14 at 224 (timm) done")


def conch_v15(out):
    """CONCH v1.5 as MahmoodLab's vision tower builds it (TRIDENT's conchv1_5.py, TITAN's
    `return_conch`; read, not copied): `trunk` a timm-style ViT-L/16 with LayerScale made at 224 px
    whose 14x14 position grid DINO's rule resamples to other inputs, its final norm, then
    `attn_pool_contrast` (one query of 768: LayerNorm `ln_q` and `ln_k`, `to_q`, `to_kv`, `to_out`
    without biases, 8 heads, softmax over all tokens) and LayerNorm `ln_contrast`. Also at its
    native 448 px."""
    trunk = VisionTransformer(num_classes=0, depth=DEPTH, img_size=224, patch_size=16, embed_dim=1024, num_heads=16, init_values=1.0).eval()
    pool = nn.Module()
    pool.query = nn.Parameter(torch.zeros(1, 768))
    pool.ln_q, pool.ln_k = nn.LayerNorm(768), nn.LayerNorm(1024)
    pool.to_q, pool.to_kv, pool.to_out = nn.Linear(768, 768, bias=False), nn.Linear(1024, 1536, bias=False), nn.Linear(768, 768, bias=False)
    tower = nn.Module()
    tower.trunk, tower.attn_pool_contrast, tower.ln_contrast = trunk, pool, nn.LayerNorm(768)
    fill(tower)
    heads = 8
    for side in SIZES + (448,):
        x = det_input((1, 3, side, side))
        with torch.no_grad():
            p = trunk.patch_embed.proj(x).flatten(2).transpose(1, 2)
            g = side // 16
            pos = trunk.pos_embed if g == 14 else dinov2_interpolate(trunk.pos_embed, g, g)
            t = torch.cat([trunk.cls_token + pos[:, :1], p + pos[:, 1:]], dim=1)
            t = trunk.norm(trunk.blocks(t))
            k, v = pool.to_kv(pool.ln_k(t)).chunk(2, dim=-1)
            q = pool.to_q(pool.ln_q(pool.query))[None]
            split = lambda a: a.reshape(1, a.shape[1], heads, 96).transpose(1, 2)
            attn = (split(q) @ split(k).transpose(-1, -2) * 96 ** -0.5).softmax(-1) @ split(v)
            y = tower.ln_contrast(pool.to_out(attn.transpose(1, 2).reshape(1, 1, 768)))[:, 0]
        out[f"conch-v15@{side}"] = {"input": [1, 3, side, side], "features_shape": list(y.shape), "features": flat(y)}
    print("conch-v15 done")


PARTS = {"timm": timm_cases, "phikon": phikon, "dinov2": dinov2, "dinov2_timm_224": dinov2_timm_224, "conch_v15": conch_v15}


def main():
    """All parts, or the parts named on the command line merged into the committed file."""
    torch.set_num_threads(2)
    path = os.path.join(MODEL, "foundation.json")
    names = sys.argv[1:] or list(PARTS)
    out = {"depth": DEPTH}
    if sys.argv[1:]:
        with open(path) as f:
            out = json.load(f)
    for name in names:
        PARTS[name](out)
    with open(path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
