"""The update `patchtcga bench pretrain` times, in PyTorch with what users pick: torchvision /
timm backbones and lightly's heads, losses, momentum and masking utilities, configured from the
same run config (TOML, `--set key=value` overrides). One synthetic batch of the recipe's views,
held on the host and copied to the device each step; float16 autocast + GradScaler when the
config enables it on CUDA.

    python3 bench/pretrain_step_torch.py --config configs/dino_vit_s16_ptcga200.toml --set batch_size=32
"""
import argparse
import copy
import math
import resource
import time
import tomllib

import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--config", required=True)
p.add_argument("--set", action="append", default=[])
p.add_argument("--steps", type=int, default=5)
p.add_argument("--warmup", type=int, default=2)
p.add_argument("--threads", type=int)
a = p.parse_args()
with open(a.config, "rb") as f:
    c = tomllib.load(f)
for kv in a.set:
    k, v = kv.split("=", 1)
    try:
        c[k] = tomllib.loads(f"v = {v}")["v"]
    except tomllib.TOMLDecodeError:
        c[k] = v
if a.threads:
    torch.set_num_threads(a.threads)
torch.manual_seed(0)
dev = torch.device(c.get("device", "cpu"))
amp = c.get("enable_autocast", False) and dev.type == "cuda"
method, arch, b, size = c["self_supervised"], c["model_name"], c["batch_size"], c.get("image_size", 224)
timm_names = {"vit-s16": "vit_small_patch16_224", "vit-b16": "vit_base_patch16_224", "vit-l16": "vit_large_patch16_224"}


def backbone(drop_path=0.0):
    if arch.startswith("resnet"):
        import torchvision

        m = getattr(torchvision.models, arch)()
        dim = m.fc.in_features
        m.fc = torch.nn.Identity()
        return m, dim
    import timm

    m = timm.create_model(timm_names[arch], num_classes=0, img_size=size, dynamic_img_size=True, drop_path_rate=drop_path)
    return m, m.num_features


def no_decay(n, p):
    return p.ndim <= 1 or n.endswith(("cls_token", "pos_embed", "mask_token"))


def optimizer(module):
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": c["wd"]},
              {"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0}]
    lr = c["lr"] * b * c.get("num_accum", 1) / c.get("base_batch_size", 512)
    name = c.get("optim", "adam")
    if name == "lars":
        from lightly.utils.lars import LARS

        return LARS(groups, lr=lr, momentum=c.get("momentum", 0.9))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=c.get("momentum", 0.9))
    betas = tuple(c.get("betas", [0.9, 0.999]))
    return (torch.optim.AdamW if name == "adamw" else torch.optim.Adam)(groups, lr=lr, betas=betas)


def frozen_copy(m):
    t = copy.deepcopy(m)
    for q in t.parameters():
        q.requires_grad = False
    return t


from lightly.models.utils import update_momentum  # noqa: E402

views_sizes = [size, size]
if method == "simclr":
    from lightly.loss import NTXentLoss
    from lightly.models.modules.heads import SimCLRProjectionHead

    net, dim = backbone()
    model = torch.nn.ModuleDict({"backbone": net, "head": SimCLRProjectionHead(dim, c["proj_hidden_dim"], c["proj_dim"])})
    crit = NTXentLoss(temperature=c["temperature"])

    def loss_of(views, progress):
        z = model["head"](model["backbone"](torch.cat(views[:2])))
        return crit(*z.chunk(2))
elif method == "byol":
    from lightly.loss import NegativeCosineSimilarity
    from lightly.models.modules.heads import BYOLPredictionHead, BYOLProjectionHead

    net, dim = backbone()
    model = torch.nn.ModuleDict({
        "backbone": net, "projector": BYOLProjectionHead(dim, c["proj_hidden_dim"], c["proj_dim"]),
        "predictor": BYOLPredictionHead(c["proj_dim"], c["pred_hidden_dim"], c["proj_dim"]),
        "classifier": torch.nn.Linear(dim, c.get("num_classes", 20))})
    target = torch.nn.ModuleDict({"backbone": frozen_copy(net), "projector": frozen_copy(model["projector"])})
    cos = NegativeCosineSimilarity()
    labels = torch.arange(b) % c.get("num_classes", 20)

    def loss_of(views, progress):
        x = torch.cat(views[:2])
        h = model["backbone"](x)
        pz = model["predictor"](model["projector"](h)).chunk(2)
        with torch.no_grad():
            t = target["projector"](target["backbone"](x)).chunk(2)
        loss = 2 + 2 * cos(pz[0], t[1]) + 2 + 2 * cos(pz[1], t[0])
        if c.get("organ_classifier"):
            y = torch.cat([labels, labels]).to(dev)
            loss = loss + F.cross_entropy(model["classifier"](h.detach()), y)
        return loss

    def after(progress):
        m = 1 - (1 - c["momentum_base"]) * (math.cos(math.pi * progress) + 1) / 2
        update_momentum(model["backbone"], target["backbone"], m)
        update_momentum(model["projector"], target["projector"], m)
elif method == "mocov2":
    from lightly.loss import NTXentLoss
    from lightly.models.modules.heads import MoCoProjectionHead

    net, dim = backbone()
    model = torch.nn.ModuleDict({"backbone": net, "head": MoCoProjectionHead(dim, c["proj_hidden_dim"], c["proj_dim"])})
    target = frozen_copy(model)
    crit = NTXentLoss(temperature=c["temperature"], memory_bank_size=(c["queue_size"], c["proj_dim"]))

    def loss_of(views, progress):
        q = model["head"](model["backbone"](views[0]))
        with torch.no_grad():
            perm = torch.randperm(b, device=dev)
            k = target["head"](target["backbone"](views[1][perm]))[perm.argsort()]
        return crit(q, k)

    def after(progress):
        update_momentum(model, target, c["momentum_base"])
elif method == "dino":
    from lightly.loss import DINOLoss
    from lightly.models.modules.heads import DINOProjectionHead

    net, dim = backbone(c.get("drop_path", 0.0))
    def dino_head():
        return DINOProjectionHead(dim, c["proj_hidden_dim"], c["proj_dim"], c["out_dim"], freeze_last_layer=c.get("freeze_last_layer", 1))

    model = torch.nn.ModuleDict({"backbone": net, "head": dino_head()})
    # deepcopy cannot copy weight-normed layers: a second head takes the student's weights.
    target = torch.nn.ModuleDict({"backbone": frozen_copy(net), "head": dino_head()})
    target["head"].load_state_dict(model["head"].state_dict())
    for q in target["head"].parameters():
        q.requires_grad = False
    crit = DINOLoss(output_dim=c["out_dim"], warmup_teacher_temp=c["warmup_teacher_temp"], teacher_temp=c["teacher_temp"],
                    warmup_teacher_temp_epochs=c["warmup_teacher_temp_epochs"], student_temp=c["temperature"],
                    center_momentum=c["center_momentum"]).to(dev)
    views_sizes += [size * 96 // 224] * c.get("local_crops", 10)

    def loss_of(views, progress):
        g = torch.cat(views[:2])
        feats = [model["backbone"](g)]
        if len(views) > 2:
            feats.append(model["backbone"](torch.cat(views[2:])))
        s = model["head"](torch.cat(feats)).chunk(len(views))
        with torch.no_grad():
            t = target["head"](target["backbone"](g)).chunk(2)
        return crit(list(t), list(s), epoch=0)

    def after(progress):
        update_momentum(model, target, 1 - (1 - c["momentum_base"]) * (math.cos(math.pi * progress) + 1) / 2)
elif method == "mae":
    import timm
    from lightly.models import utils
    from lightly.models.modules import MAEDecoderTIMM, MaskedVisionTransformerTIMM

    vit = timm.create_model(timm_names[arch], num_classes=0, img_size=size)
    encoder = MaskedVisionTransformerTIMM(vit=vit)
    patch = vit.patch_embed.patch_size[0]
    decoder = MAEDecoderTIMM(num_patches=vit.patch_embed.num_patches, patch_size=patch, embed_dim=vit.embed_dim,
                             decoder_embed_dim=c["decoder_embed_dim"], decoder_depth=c["decoder_depth"],
                             decoder_num_heads=c["decoder_num_heads"])
    model = torch.nn.ModuleDict({"encoder": encoder, "decoder": decoder})
    views_sizes = [size]
    seq = vit.patch_embed.num_patches + 1

    def loss_of(views, progress):
        x = views[0]
        idx_keep, idx_mask = utils.random_token_mask(size=(b, seq), mask_ratio=c["mask_ratio"], device=dev)
        latent = encoder.encode(images=x, idx_keep=idx_keep)
        embedded = decoder.embed(latent)
        tokens = utils.repeat_token(decoder.mask_token, (b, seq)).to(embedded.dtype)
        tokens = utils.set_at_index(tokens, idx_keep, embedded)
        pred = decoder.predict(utils.get_at_index(decoder.decode(tokens), idx_mask))
        target = utils.get_at_index(utils.patchify(x, patch), idx_mask - 1)
        if c.get("norm_pix_loss", True):
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        return F.mse_loss(pred.float(), target)
else:
    raise SystemExit(f"no PyTorch reference for {method}")

model = model.to(dev).train()
if "target" in globals():
    target.to(dev).train()
opt = optimizer(model)
scaler = torch.amp.GradScaler("cuda", enabled=amp)
host = [torch.randn(b, 3, s, s) for s in views_sizes]
total = a.warmup + a.steps


def update(u):
    views = [v.to(dev, non_blocking=False) for v in host]
    with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=amp):
        loss = loss_of(views, u / total)
    scaler.scale(loss).backward()
    loss.item()
    if c.get("clip_norm", 0) > 0:
        scaler.unscale_(opt)
        params = [q for q in model.parameters() if q.grad is not None]
        if c.get("clip_mode") == "per_parameter":
            for q in params:
                n = q.grad.norm(2)
                q.grad.mul_((c["clip_norm"] / (n + 1e-6)).clamp(max=1.0))
        else:
            torch.nn.utils.clip_grad_norm_(params, c["clip_norm"])
    if method == "dino":
        model["head"].cancel_last_layer_gradients(current_epoch=0)
    scaler.step(opt)
    scaler.update()
    opt.zero_grad()
    if "after" in globals():
        after((u + 1) / total)


for u in range(a.warmup):
    update(u)
if dev.type == "cuda":
    torch.cuda.synchronize()
t0 = time.perf_counter()
for u in range(a.warmup, total):
    update(u)
if dev.type == "cuda":
    torch.cuda.synchronize()
secs = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
gpu = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if dev.type == "cuda" else ""
print(f"pytorch {method} {arch} batch {b} ({len(views_sizes)} views) on {dev}{' (autocast fp16)' if amp else ''}: "
      f"{a.steps * b / secs:.1f} images/s ({1000 * secs / a.steps:.1f} ms/step), peak host memory {rss:.0f} MiB{gpu}")
