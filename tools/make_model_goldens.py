"""Goldens for crates/model, crates/engine and crates/methods, from torchvision, timm and lightly.

Regenerate (any recent torch; the committed files were made with torch 2.13.0, torchvision 0.28.0,
timm 1.0.31, lightly 1.6.0):
    python3 -m venv /tmp/g && /tmp/g/bin/pip install torch torchvision timm lightly safetensors numpy
    /tmp/g/bin/python tools/make_model_goldens.py

Writes
  crates/model/tests/fixtures/reference.json   full-size backbones with deterministic weights
                                               (the rule `det` below, mirrored in the Rust tests)
  crates/model/tests/fixtures/dino_pos_embed.json  DINO's position-embedding interpolation
  crates/model/tests/fixtures/cnn.json         Inception v3 and EfficientNet-B3 (torchvision), eval and train
  crates/model/tests/fixtures/*.pth|.safetensors + tiny.json   small real checkpoints, in the
                                               wrappers of the upstream repos, and their outputs
  crates/model/tests/fixtures/assorted.pth + assorted.json     dtypes, views, shared storages
  crates/engine/tests/fixtures/optim.json      SGD / Adam / AdamW (torch) and LARS (lightly) steps
  crates/methods/tests/fixtures/losses.json     NT-Xent and DINO (lightly), InfoNCE with a queue (MoCo),
                                               2 − 2·cos (BYOL), masked normalised-pixel MSE (MAE)

Name parts to make only those: python3 tools/make_model_goldens.py losses
"""
import argparse
import json
import math
import os

import numpy as np
import torch
import torchvision
import timm
from timm.models.resnet import ResNet, BasicBlock, Bottleneck
from timm.models.vision_transformer import VisionTransformer
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "crates/model/tests/fixtures")
ENGINE = os.path.join(ROOT, "crates/engine/tests/fixtures")
METHODS = os.path.join(ROOT, "crates/methods/tests/fixtures")


def fnv1a(s):
    h = 0x811C9DC5
    for b in s.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def det(name, shape):
    """Deterministic, well-scaled values for a parameter or buffer (mirrored in Rust)."""
    n = int(np.prod(shape)) if len(shape) else 1
    i = np.arange(n, dtype=np.float64)
    v = np.sin(i * 0.7071 + fnv1a(name) / 2.0**32 * 2.0 * math.pi)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_var":
        v = 1.0 + 0.5 * np.abs(v)
    elif leaf == "running_mean":
        v = 0.1 * v
    elif leaf == "weight" and len(shape) == 1:
        v = 1.0 + 0.1 * v
    elif leaf == "bias":
        v = 0.05 * v
    elif leaf in ("cls_token", "pos_embed"):
        v = 0.02 * v
    else:
        v = v * math.sqrt(1.0 / (n // shape[0]))
    return v.reshape(shape).astype(np.float32)


def det_input(shape):
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.float64)
    return torch.from_numpy((0.5 * np.sin(i * 0.013) + 0.3 * np.cos(i * 0.0071)).reshape(shape).astype(np.float32))


def fill(model):
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.from_numpy(det(name, tuple(t.shape))))


def outputs(model, x):
    model.eval()
    with torch.no_grad():
        logits = model(x)
        if hasattr(model, "forward_head"):
            feats = model.forward_head(model.forward_features(x), pre_logits=True)
        else:
            fc, model.fc = model.fc, torch.nn.Identity()
            feats = model(x)
            model.fc = fc
    return feats, logits


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def reference():
    out = {}
    cases = [
        ("resnet18", lambda: torchvision.models.resnet18(num_classes=5), [(2, 3, 64, 64)]),
        ("resnet50", lambda: torchvision.models.resnet50(num_classes=5), [(2, 3, 64, 64)]),
        ("vit-s16", lambda: timm.create_model("vit_small_patch16_224", num_classes=5, dynamic_img_size=True), [(1, 3, 224, 224), (2, 3, 64, 64)]),
        ("vit-b16", lambda: timm.create_model("vit_base_patch16_224", num_classes=5, dynamic_img_size=True), [(2, 3, 64, 64)]),
        ("vit-b32", lambda: timm.create_model("vit_base_patch32_224", num_classes=5, dynamic_img_size=True), [(2, 3, 96, 96)]),
        # ViT-L/16 at reduced depth (4 of 24 blocks) keeps the test's memory small.
        ("vit-l16-depth4", lambda: timm.create_model("vit_large_patch16_224", num_classes=5, depth=4, dynamic_img_size=True), [(2, 3, 64, 64)]),
    ]
    for name, make, shapes in cases:
        m = make()
        fill(m)
        for shape in shapes:
            feats, logits = outputs(m, det_input(shape))
            out[f"{name}@{shape[2]}"] = {"input": list(shape), "features_shape": list(feats.shape), "features": flat(feats), "logits": flat(logits)}
        print(name, "done")
    json.dump(out, open(os.path.join(MODEL, "reference.json"), "w"))


def segmentation():
    """torchvision DeepLabv3-ResNet50 (6 classes, no auxiliary head) with deterministic weights:
    class scores at the input size. patchtcga keeps the backbone at the root, so its names are
    torchvision's without `backbone.`."""
    from torchvision.models.segmentation import deeplabv3_resnet50

    m = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=6, aux_loss=False)
    fill(m)
    m.eval()
    shape = (1, 3, 48, 48)
    with torch.no_grad():
        y = m(det_input(shape))["out"]
    out = {"deeplabv3_resnet50@48": {"input": list(shape), "output_shape": list(y.shape), "output": flat(y)}}
    json.dump(out, open(os.path.join(MODEL, "segmentation.json"), "w"))


def cnn():
    """torchvision Inception v3 (transform_input, aux logits) and EfficientNet-B3 with deterministic
    weights, 5 classes: evaluation-mode features and logits at the native side and another, and
    training-mode logits (batch statistics; dropout and stochastic depth off) with Inception's
    auxiliary logits."""
    from torchvision.models import efficientnet_b3, inception_v3

    out = {}
    cases = [
        ("incv3", lambda drop: inception_v3(num_classes=5, aux_logits=True, transform_input=True, init_weights=False, dropout=0.0), [(2, 3, 299, 299), (2, 3, 160, 160)], "fc"),
        # As torchvision builds it without ImageNet weights (inception_v3(weights=None)): no input transform.
        ("incv3-scratch", lambda drop: inception_v3(num_classes=5, aux_logits=True, init_weights=False, dropout=0.0), [(2, 3, 299, 299)], "fc"),
        ("eff-b3", lambda drop: efficientnet_b3(num_classes=5, stochastic_depth_prob=drop, dropout=0.0), [(2, 3, 300, 300), (2, 3, 224, 224)], "classifier"),
    ]
    for name, make, shapes, head in cases:
        m = make(0.2)
        fill(m)
        m.eval()
        for shape in shapes:
            x = det_input(shape)
            with torch.no_grad():
                logits = m(x)
                kept = getattr(m, head)
                setattr(m, head, torch.nn.Identity())
                feats = m(x)
                setattr(m, head, kept)
            out[f"{name}@{shape[2]}"] = {"input": list(shape), "features": flat(feats), "logits": flat(logits)}
        t = make(0.0)
        fill(t)
        t.train()
        shape = shapes[0]
        # Training mode normalises by batch statistics, which amplifies float32 rounding layer
        # after layer (Inception's logits move by ~1e-2 between two float32 implementations of the
        # same network): the training-mode golden is computed in float64.
        t.double()
        with torch.no_grad():
            y = t(det_input(shape).double())
        logits, aux = (y.logits, y.aux_logits) if name.startswith("incv3") else (y, None)
        out[f"{name}@{shape[2]}/train"] = {"input": list(shape), "logits": flat(logits), **({"aux_logits": flat(aux)} if aux is not None else {})}
        print(name, "done")
    json.dump(out, open(os.path.join(MODEL, "cnn.json"), "w"))


def dino_pos():
    """DINO's interpolate_pos_encoding (facebookresearch/dino, vision_transformer.py; written out
    again here): the 14x14 grid of a deterministic position embedding, bicubic by the scale
    factor (grid + 0.1) / 14 without antialiasing, to a 96 px local crop's 6x6 grid and to 5x7."""
    pos = torch.from_numpy(det("pos_embed", (1, 1 + 14 * 14, 8)))
    n = pos.shape[1] - 1
    out = {}
    for h, w in [(6, 6), (5, 7)]:
        grid = pos[:, 1:].reshape(1, int(math.sqrt(n)), int(math.sqrt(n)), -1).permute(0, 3, 1, 2)
        scale = ((h + 0.1) / math.sqrt(n), (w + 0.1) / math.sqrt(n))
        grid = torch.nn.functional.interpolate(grid, scale_factor=scale, mode="bicubic")
        assert tuple(grid.shape[-2:]) == (h, w)
        out[f"{h}x{w}"] = flat(torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)], dim=1))
    json.dump(out, open(os.path.join(MODEL, "dino_pos_embed.json"), "w"))


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.dim() == 1 and name.endswith("weight"):
                t.copy_(1 + 0.2 * torch.randn(t.shape, generator=g))
            else:
                t.copy_(0.2 * torch.randn(t.shape, generator=g))


def tiny():
    torch.manual_seed(0)
    models = {
        "resnet_basic": ResNet(BasicBlock, [1, 1, 1, 1], num_classes=3, stem_width=8, channels=(8, 16, 32, 64)),
        "resnet_bottleneck": ResNet(Bottleneck, [1, 1, 1, 1], num_classes=3, stem_width=8, channels=(8, 16, 32, 64)),
        "vit": VisionTransformer(img_size=32, patch_size=8, embed_dim=24, depth=2, num_heads=3, num_classes=3, dynamic_img_size=True),
    }
    out = {}
    for seed, (name, m) in enumerate(models.items()):
        randomize(m, seed + 1)
        sd = m.state_dict()
        torch.save(sd, os.path.join(MODEL, f"tiny_{name}.pth"))
        for side in (32, 48):
            x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(100 + side))
            feats, logits = outputs(m, x)
            out[f"{name}@{side}"] = {"input": flat(x), "input_shape": list(x.shape), "features": flat(feats), "logits": flat(logits)}
    # The same ResNet weights inside the wrappers upstream training code writes.
    sd = models["resnet_basic"].state_dict()
    other = {k: (v + 1.0 if v.is_floating_point() else v) for k, v in sd.items()}
    torch.save({"epoch": 3, "arch": "resnet", "state_dict": {f"module.{k}": v for k, v in sd.items()}}, os.path.join(MODEL, "wrap_dataparallel.pth"))
    moco = {f"module.encoder_q.{k}": v for k, v in sd.items() if not k.startswith("fc.")}
    moco |= {f"module.encoder_k.{k}": v for k, v in other.items() if not k.startswith("fc.")}
    moco |= {"module.encoder_q.fc.0.weight": torch.randn(64, 64), "module.encoder_q.fc.0.bias": torch.randn(64),
             "module.encoder_q.fc.2.weight": torch.randn(16, 64), "module.queue": torch.randn(16, 32), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    torch.save({"epoch": 40, "arch": "resnet50", "state_dict": moco, "optimizer": {"state": {}, "param_groups": [{"lr": 0.03, "momentum": 0.9}]}},
               os.path.join(MODEL, "wrap_moco.pth"))
    vsd = models["vit"].state_dict()
    vother = {k: v + 1.0 for k, v in vsd.items()}
    head = {"head.mlp.0.weight": torch.randn(32, 24), "head.last_layer.weight_g": torch.ones(64, 1), "head.last_layer.weight_v": torch.randn(64, 32)}
    dino = {
        "student": {f"module.backbone.{k}": v for k, v in vother.items() if not k.startswith("head.")} | {f"module.{k}": v for k, v in head.items()},
        "teacher": {f"backbone.{k}": v for k, v in vsd.items() if not k.startswith("head.")} | head,
        "optimizer": {"state": {}, "param_groups": []},
        "epoch": 40,
        "args": argparse.Namespace(arch="vit_small", patch_size=16, out_dim=65536, lr=0.0005),
        "dino_loss": {"center": torch.zeros(1, 64)},
    }
    torch.save(dino, os.path.join(MODEL, "wrap_dino.pth"))
    mae = {k: v for k, v in vsd.items() if not k.startswith("head.")}
    mae |= {"mask_token": torch.zeros(1, 1, 16), "decoder_embed.weight": torch.randn(16, 24), "decoder_blocks.0.norm1.weight": torch.ones(16), "decoder_pred.weight": torch.randn(192, 16)}
    torch.save({"model": mae, "optimizer": {}, "epoch": 799, "scaler": {"scale": 65536.0}, "args": argparse.Namespace(model="mae_vit_large_patch16")},
               os.path.join(MODEL, "wrap_mae.pth"))
    save_file({k: v.contiguous() for k, v in vsd.items()}, os.path.join(MODEL, "tiny_vit.safetensors"))
    # A checkpoint trained at 16 px (2×2 grid): its pos_embed is resampled on import.
    small = VisionTransformer(img_size=16, patch_size=8, embed_dim=24, depth=2, num_heads=3, num_classes=3)
    small.load_state_dict({k: v for k, v in vsd.items() if k != "pos_embed"} | {"pos_embed": vsd["pos_embed"][:, :5]})
    torch.save(small.state_dict(), os.path.join(MODEL, "tiny_vit_grid2.pth"))
    big = VisionTransformer(img_size=32, patch_size=8, embed_dim=24, depth=2, num_heads=3, num_classes=3, dynamic_img_size=True)
    big.load_state_dict(small.state_dict() | {"pos_embed": timm.layers.resample_abs_pos_embed(small.pos_embed.detach(), (4, 4), num_prefix_tokens=1)})
    feats, _ = outputs(big, x := torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(7)))
    out["vit_grid2@32"] = {"input": flat(x), "input_shape": list(x.shape), "features": flat(feats)}
    json.dump(out, open(os.path.join(MODEL, "tiny.json"), "w"))


def assorted():
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    shared = torch.arange(10, dtype=torch.float64)
    obj = {
        "f32": base,
        "transposed": base.t(),
        "sliced": base[1:3, 2:5],
        "f16": torch.tensor([0.5, -1.25, 3.0], dtype=torch.float16),
        "bf16": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
        "i64": torch.tensor([[1, -2], [3, 2**40]], dtype=torch.int64),
        "u8": torch.tensor([0, 7, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "shared_a": shared[2:5],
        "shared_b": shared[5:],
        "param": torch.nn.Parameter(torch.ones(2, 2)),
        "nested": {"deep": {"x": torch.full((2,), 7.0)}},
        "listed": [torch.zeros(1), torch.ones(1)],
        "meta": {"epoch": 3, "lr": 0.1, "name": "run", "big": 2**70, "flags": (True, None)},
        "args": argparse.Namespace(lr=0.5),
    }
    torch.save(obj, os.path.join(MODEL, "assorted.pth"))
    expected = {}

    def walk(v, prefix):
        if isinstance(v, torch.Tensor):
            expected[prefix] = {"shape": list(v.shape), "values": [float(x) for x in v.detach().double().reshape(-1).tolist()]}
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(x, f"{prefix}.{k}" if prefix else k)
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                walk(x, f"{prefix}.{i}")

    walk(obj, "")
    json.dump(expected, open(os.path.join(MODEL, "assorted.json"), "w"))


def optim():
    from lightly.utils.lars import LARS

    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 4, generator=g)
    y = torch.randn(8, 3, generator=g)
    w0 = torch.randn(3, 4, generator=g)
    b0 = torch.randn(3, generator=g)
    makers = {
        "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
        "sgd_nesterov": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
        "adam": lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.9, 0.999), eps=1e-8),
        "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.01, betas=(0.9, 0.95), eps=1e-8),
        "lars": lambda ps: LARS(ps, lr=0.1, momentum=0.9, trust_coefficient=0.001),
    }
    out = {"x": flat(x), "y": flat(y), "w0": flat(w0), "b0": flat(b0), "weight_decay": 0.05, "steps": 4, "cases": {}}
    for name, make in makers.items():
        w = w0.clone().requires_grad_(True)
        b = b0.clone().requires_grad_(True)
        # Decay on the weight only, as for conv/linear weights vs biases and norms.
        opt = make([{"params": [w], "weight_decay": 0.05}, {"params": [b], "weight_decay": 0.0}])
        traj = []
        for _ in range(4):
            opt.zero_grad()
            loss = ((x @ w.t() + b - y) ** 2).mean()
            loss.backward()
            opt.step()
            traj.append({"w": flat(w), "b": flat(b)})
        out["cases"][name] = traj
    json.dump(out, open(os.path.join(ENGINE, "optim.json"), "w"))


def losses():
    import torch.nn.functional as F
    from lightly.loss import DINOLoss, NTXentLoss

    g = torch.Generator().manual_seed(5)
    r = lambda *shape: torch.randn(*shape, generator=g)
    out = {}
    z0, z1 = r(6, 8), r(6, 8)
    out["nt_xent"] = {"z0": flat(z0), "z1": flat(z1), "temperature": 0.1, "loss": float(NTXentLoss(temperature=0.1)(z0, z1))}
    q, k, queue = r(6, 8), r(6, 8), F.normalize(r(16, 8), dim=1)
    # MoCo's own lines (moco/builder.py): positives from the keys, negatives from the queue.
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    logits = torch.cat([torch.einsum("nc,nc->n", qn, kn).unsqueeze(-1), torch.einsum("nc,ck->nk", qn, queue.t())], 1) / 0.2
    out["info_nce"] = {"q": flat(q), "k": flat(k), "queue": flat(queue), "temperature": 0.2,
                       "loss": float(F.cross_entropy(logits, torch.zeros(6, dtype=torch.long)))}
    p, z = r(6, 8), r(6, 8)
    # BYOL's regression loss (byol-pytorch loss_fn): 2 − 2·cos.
    out["negative_cosine"] = {"p": flat(p), "z": flat(z), "loss": float((2 - 2 * (F.normalize(p, dim=-1) * F.normalize(z, dim=-1)).sum(-1)).mean())}
    teacher = [r(4, 10) for _ in range(2)]
    student = [r(4, 10) for _ in range(4)]
    dino = DINOLoss(output_dim=10, warmup_teacher_temp=0.04, teacher_temp=0.04, student_temp=0.1, center_momentum=0.9)
    l1 = float(dino(teacher, student, teacher_temp=0.04))
    c1 = flat(dino.center)
    l2 = float(dino(teacher, student, teacher_temp=0.07))
    out["dino"] = {"teacher": [flat(t) for t in teacher], "student": [flat(s) for s in student], "loss1": l1, "centre1": c1,
                   "loss2": l2, "centre2": flat(dino.center)}
    pred, target = r(2, 6, 12), r(2, 6, 12)
    mask = (torch.rand(2, 6, generator=g) > 0.5).float()
    # MAE's forward_loss (models_mae.py) with norm_pix_loss.
    mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
    norm = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = (((pred - norm) ** 2).mean(dim=-1) * mask).sum() / mask.sum()
    plain = (((pred - target) ** 2).mean(dim=-1) * mask).sum() / mask.sum()
    out["masked_mse"] = {"pred": flat(pred), "target": flat(target), "mask": flat(mask), "loss_norm_pix": float(loss), "loss_plain": float(plain)}
    out["dino_head"] = dino_head(r)
    out["mae"] = mae_pieces(r)
    json.dump(out, open(os.path.join(METHODS, "losses.json"), "w"), indent=1)


def dino_head(r):
    """lightly's DINOProjectionHead (weight-normalised last layer with its norms fixed at 1)."""
    from lightly.models.modules.heads import DINOProjectionHead

    head = DINOProjectionHead(8, 16, 4, 10)
    with torch.no_grad():
        for name, p in head.named_parameters():
            if name != "last_layer.weight_g":
                p.copy_(r(*p.shape))
    x = r(5, 8)
    params = {n.replace("layers.", "mlp."): flat(p) for n, p in head.named_parameters()}
    return {"params": params, "x": flat(x), "y": flat(head(x))}


def mae_pieces(r):
    """MAE's fixed 2-D sine-cosine position embedding (util/pos_embed.py, written out again in
    numpy here) and its patchify (models_mae.py)."""
    import numpy as np

    def axis(dim, pos):
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    dim, grid = 8, 3
    mesh = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))  # w first
    mesh = np.stack(mesh, axis=0).reshape([2, 1, grid, grid])
    emb = np.concatenate([axis(dim // 2, mesh[0]), axis(dim // 2, mesh[1])], axis=1)
    emb = np.concatenate([np.zeros([1, dim]), emb], axis=0)
    imgs = r(2, 3, 8, 8)
    p, h = 4, 2
    x = imgs.reshape(2, 3, h, p, h, p)
    x = torch.einsum("nchpwq->nhwpqc", x).reshape(2, h * h, p * p * 3)
    return {"sincos_dim": dim, "sincos_grid": grid, "sincos": emb.reshape(-1).tolist(), "images": flat(imgs), "patches": flat(x)}


if __name__ == "__main__":
    import sys

    os.makedirs(MODEL, exist_ok=True)
    os.makedirs(ENGINE, exist_ok=True)
    os.makedirs(METHODS, exist_ok=True)
    torch.set_num_threads(2)
    parts = {"assorted": assorted, "tiny": tiny, "optim": optim, "losses": losses, "reference": reference, "segmentation": segmentation, "dino_pos": dino_pos, "cnn": cnn}
    for name in sys.argv[1:] or list(parts):
        parts[name]()
