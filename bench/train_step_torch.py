"""The training step `patchtcga bench step` times, in PyTorch: the same model (torchvision ResNet /
timm ViT, 1000 classes), one fixed random batch, cross-entropy, backward, the optimizer's update
(PyTorch's default implementation), float16 autocast + GradScaler with --autocast on CUDA.
--ddp wraps the model in DistributedDataParallel, one process (NCCL on CUDA, Gloo on CPU), as a
multi-GPU run's per-GPU step.

    python3 bench/train_step_torch.py --arch resnet50 --batch-size 32 --image-size 224 --steps 10
"""
import argparse
import resource
import time

import torch

p = argparse.ArgumentParser()
p.add_argument("--arch", default="resnet50")
p.add_argument("--batch-size", type=int, default=32)
p.add_argument("--image-size", type=int, default=224)
p.add_argument("--steps", type=int, default=10)
p.add_argument("--warmup", type=int, default=3)
p.add_argument("--optim", default="sgd")
p.add_argument("--device", default="cpu")
p.add_argument("--autocast", action="store_true")
p.add_argument("--threads", type=int)
p.add_argument("--ddp", action="store_true")
a = p.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)
torch.manual_seed(0)
dev = torch.device(a.device)
if a.arch.startswith("resnet"):
    import torchvision

    model = getattr(torchvision.models, a.arch)(num_classes=1000)
elif a.arch == "incv3":
    import torchvision

    model = torchvision.models.inception_v3(num_classes=1000, aux_logits=True, transform_input=True, init_weights=False)
elif a.arch == "eff-b3":
    import torchvision

    model = torchvision.models.efficientnet_b3(num_classes=1000)
elif a.arch == "uni":
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(img_size=a.image_size, patch_size=16, embed_dim=1024, depth=24, num_heads=16, init_values=1e-5, num_classes=1000)
else:
    import timm

    name = {"vit-s16": "vit_small_patch16_224", "vit-b16": "vit_base_patch16_224", "vit-b32": "vit_base_patch32_224", "vit-l16": "vit_large_patch16_224"}[a.arch]
    model = timm.create_model(name, num_classes=1000, img_size=a.image_size)
model = model.to(dev).train()
if a.ddp:
    import os

    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29555")
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=0, world_size=1)
    model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev] if dev.type == "cuda" else None)
decay = [p for n, p in model.named_parameters() if p.ndim > 1 and not n.endswith(("cls_token", "pos_embed"))]
other = [p for n, p in model.named_parameters() if not (p.ndim > 1 and not n.endswith(("cls_token", "pos_embed")))]
groups = [{"params": decay, "weight_decay": 1e-4}, {"params": other, "weight_decay": 0.0}]
opt = {"sgd": lambda: torch.optim.SGD(groups, lr=0.01, momentum=0.9), "adam": lambda: torch.optim.Adam(groups, lr=0.01),
       "adamw": lambda: torch.optim.AdamW(groups, lr=0.01)}[a.optim]()
x = torch.randn(a.batch_size, 3, a.image_size, a.image_size, device=dev)
y = torch.randint(0, 1000, (a.batch_size,), device=dev)
amp = a.autocast and dev.type == "cuda"
scaler = torch.amp.GradScaler("cuda", enabled=amp)


def step():
    opt.zero_grad()
    with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=amp):
        out = model(x)
    # Inception v3 in training mode also returns its auxiliary logits (reference recipe: weight 0.4).
    logits, aux = (out.logits, out.aux_logits) if hasattr(out, "aux_logits") else (out, None)
    loss = torch.nn.functional.cross_entropy(logits.float(), y)
    if aux is not None:
        loss = loss + 0.4 * torch.nn.functional.cross_entropy(aux.float(), y)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()


for _ in range(a.warmup):
    step()
if dev.type == "cuda":
    torch.cuda.synchronize()
t0 = time.perf_counter()
for _ in range(a.steps):
    step()
if dev.type == "cuda":
    torch.cuda.synchronize()
secs = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
gpu = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if dev.type == "cuda" else ""
print(f"pytorch{' DDP' if a.ddp else ''} {a.arch} batch {a.batch_size} at {a.image_size} px on {a.device}{' (autocast fp16)' if amp else ''}: "
      f"{a.steps * a.batch_size / secs:.1f} images/s ({1000 * secs / a.steps:.1f} ms/step), peak host memory {rss:.0f} MiB{gpu}")
