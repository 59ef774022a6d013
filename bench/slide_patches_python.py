#!/usr/bin/env python3
"""A PyTorch DataLoader of 224 px patches at 0.5 µm/px straight from a slide, one worker, as a
notebook writes it: with patchtcga's `SlidePatches`, or with openslide-python + PIL + torchvision
transforms (read the level-0 footprint, Resize, ToTensor, Normalize). Both walk the same tissue
grid and give normalised float32 CHW batches.

    python bench/slide_patches_python.py SLIDE --reader patchtcga|patchtcga-u8|openslide [--count 1024]

`patchtcga-u8` hands HWC uint8 batches over instead (normalised where the network runs).

Prints patches/s over the whole loop, and after the first batch (without the worker's start-up).
"""
import argparse
import time

import numpy as np
import torch

import patchtcga

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class OpenSlidePatches(torch.utils.data.Dataset):
    """The same grid read with openslide-python and transformed with torchvision."""

    def __init__(self, path, coords, mpp, size):
        from torchvision import transforms

        self.path, self.coords, self.slide = path, coords, None
        self.footprint = round(size * mpp / float(patchtcga.Slide(path).mpp[0]))
        self.transform = transforms.Compose(
            [transforms.Resize(size), transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
        )

    def __len__(self):
        return len(self.coords)

    def __getitem__(self, i):
        import openslide

        if self.slide is None:
            self.slide = openslide.OpenSlide(self.path)
        x, y = (int(v) for v in self.coords[i])
        region = self.slide.read_region((x, y), 0, (self.footprint, self.footprint)).convert("RGB")
        return self.transform(region), torch.tensor([0, x, y])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("slide")
    ap.add_argument("--reader", choices=["patchtcga", "patchtcga-u8", "openslide"], required=True)
    ap.add_argument("--count", type=int, default=1024)
    ap.add_argument("--mpp", type=float, default=0.5)
    ap.add_argument("--size", type=int, default=224)
    a = ap.parse_args()
    patchtcga.set_threads(1)
    coords = patchtcga.Slide(a.slide).tissue_grid(a.mpp, a.size)[: a.count]
    if a.reader.startswith("patchtcga"):
        normalized = a.reader == "patchtcga"
        data = patchtcga.SlidePatches([a.slide], a.mpp, a.size, coords=[coords], normalized=normalized)
    else:
        data = OpenSlidePatches(a.slide, coords, a.mpp, a.size)
    loader = torch.utils.data.DataLoader(data, batch_size=64, num_workers=1)
    start, n, total, first = time.perf_counter(), 0, 0.0, None
    for images, _ in loader:
        n += len(images)
        total += float(images[..., ::16, ::16, :].sum() if images.dtype == torch.uint8 else images[:, :, ::16, ::16].sum())
        if first is None:
            first, after_first = time.perf_counter(), n
    end = time.perf_counter()
    steady = (n - after_first) / (end - first)
    print(f"{a.reader}: {n} patches in {end - start:.2f} s: {n / (end - start):.1f} patches/s; "
          f"after the first batch (worker start-up, first reads) {steady:.1f} patches/s (checksum {total:.0f})")


if __name__ == "__main__":
    main()
