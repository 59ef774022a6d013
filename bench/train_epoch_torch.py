#!/usr/bin/env python3
"""One epoch of supervised organ classification the way the release trains it, in PyTorch: a
torchvision ResNet, the release's train transform over Pillow (RandomResizedCrop 224 (0.8–1),
ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, Gaussian blur p 0.5, flips), a DataLoader with
`num_workers` processes, Adam, gradient clipping at 1.0. `bench/train_epoch.sh` times it against
`patchtcga pretrain` with the same settings.

    python bench/train_epoch_torch.py DATASET --arch resnet50 --workers N --batch-size 32
"""
import argparse
import glob
import os
import time

import torch
import torchvision
from PIL import Image
from torchvision import transforms as T

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class Patches(torch.utils.data.Dataset):
    def __init__(self, root, transform):
        self.files = sorted(f for f in glob.glob(os.path.join(root, "**", "*.jpg"), recursive=True) if "thumbnail_position_map" not in f)
        organs = sorted({os.path.basename(os.path.dirname(f)) for f in self.files})
        self.labels = [organs.index(os.path.basename(os.path.dirname(f))) for f in self.files]
        self.transform = transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        return self.transform(Image.open(self.files[i]).convert("RGB")), self.labels[i]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--autocast", action="store_true")
    a = ap.parse_args()
    t0 = time.perf_counter()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    transform = T.Compose([
        T.RandomResizedCrop(224, scale=(0.8, 1.0)),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomApply([T.GaussianBlur(23, (0.1, 2.0))], p=0.5),
        T.RandomHorizontalFlip(),
        T.RandomVerticalFlip(),
        T.ToTensor(),
        T.Normalize(MEAN, STD),
    ])
    ds = Patches(a.dataset, transform)
    dl = torch.utils.data.DataLoader(ds, batch_size=a.batch_size, shuffle=True, drop_last=True, num_workers=a.workers,
                                     pin_memory=dev.type == "cuda")
    backbone = getattr(torchvision.models, a.arch)(num_classes=20)
    backbone.fc = torch.nn.Sequential(torch.nn.Dropout(0.4), backbone.fc)
    model = backbone.to(dev).train()
    decay = [p for p in model.parameters() if p.ndim > 1]
    other = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.Adam([{"params": decay, "weight_decay": 5e-5}, {"params": other, "weight_decay": 0.0}], lr=1e-4 * a.batch_size / 512)
    amp = a.autocast and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    n = 0
    start = time.perf_counter()
    for x, y in dl:
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        opt.zero_grad()
        with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        n += len(y)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    end = time.perf_counter()
    print(f"pytorch epoch: {n} images in {end - start:.2f} s ({n / (end - start):.1f} images/s), {end - t0:.2f} s with start-up")


if __name__ == "__main__":
    main()
