#!/usr/bin/env python3
"""The torchvision + Pillow DataLoader that patchtcga's loader replaces, for a side-by-side
benchmark: the same recipes (SimCLR two views, DINO 2 global + 10 local views) on the same
JPEG patches, `num_workers` processes, batches of 64, ImageNet normalisation.

    python bench/loader_torchvision.py DATASET --recipe simclr|dino --workers N --seconds S

Prints images/s and the peak resident memory of the main process plus its workers.
"""
import argparse
import glob
import os
import resource
import time

import torch
from PIL import Image
from torchvision import transforms as T

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def view(size, scale, jitter, blur, solarize):
    ops = [
        T.RandomResizedCrop(size, scale=scale),
        T.RandomHorizontalFlip(),
        T.RandomVerticalFlip(),
        T.RandomApply([T.ColorJitter(*jitter)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([T.GaussianBlur(int(size * 0.1) // 2 * 2 + 1, (0.1, 2.0))], p=blur),
        T.RandomSolarize(128, p=solarize),
        T.ToTensor(),
        T.Normalize(MEAN, STD),
    ]
    return T.Compose(ops)


def recipe(name):
    strong, byol = (0.4, 0.4, 0.4, 0.1), (0.4, 0.4, 0.2, 0.1)
    if name == "simclr":
        return [view(224, (0.08, 1.0), strong, 0.5, 0.0)] * 2
    if name == "dino":
        return [view(224, (0.4, 1.0), byol, 1.0, 0.0), view(224, (0.4, 1.0), byol, 0.1, 0.2)] + [view(96, (0.05, 0.4), byol, 0.5, 0.0)] * 10
    raise SystemExit(f"unknown recipe {name}")


class Patches(torch.utils.data.Dataset):
    def __init__(self, root, views):
        self.files = sorted(f for f in glob.glob(os.path.join(root, "**", "*.jpg"), recursive=True) if "thumbnail_position_map" not in f)
        self.views = views

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        img = Image.open(self.files[i]).convert("RGB")
        return [v(img) for v in self.views], 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("--recipe", default="simclr")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch-size", type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(1)
    ds = Patches(a.dataset, recipe(a.recipe))
    dl = torch.utils.data.DataLoader(ds, batch_size=a.batch_size, shuffle=True, num_workers=a.workers, persistent_workers=True, prefetch_factor=2)
    # The clock starts once the first batch has arrived (worker start-up excluded).
    start, n = None, 0
    while True:
        for views, labels in dl:
            if start is None:
                start = time.perf_counter()
                continue
            n += len(labels)
            if time.perf_counter() - start >= a.seconds:
                break
        else:
            continue
        break
    secs = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + a.workers * resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"{a.recipe}: {n} images ({len(ds.views)} views each) in {secs:.2f} s with {a.workers} worker(s): {n / secs:.1f} images/s, peak memory ~{peak} kB")


if __name__ == "__main__":
    main()
