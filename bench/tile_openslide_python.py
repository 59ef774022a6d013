#!/usr/bin/env python3
"""The Python way of tiling slides today, for a side-by-side benchmark with `patchtcga build`:
openslide-python (or cuCIM) reads, a CLAM-style tissue mask with Pillow + NumPy (HSV
saturation, median filter, Otsu threshold, morphological close), a grid of 0.39 µm/px 512 px
patches with at least 50% tissue, Pillow's Lanczos resize, a blank/blur check in NumPy, JPEG
quality 90.

    python3 bench/tile_openslide_python.py SLIDES.csv OUT_DIR --workers N [--reader cucim]

SLIDES.csv has the columns slide,organ,id (as patchtcga's). Prints the patch count and seconds.
"""
import argparse
import csv
import math
import os
import time
from multiprocessing import Pool

import numpy as np
import openslide
from PIL import Image, ImageFilter

MPP, SIZE, MASK_MPP, MIN_TISSUE = 0.39, 512, 8.0, 0.5
READER = "openslide"


class CuSlide:
    """The few OpenSlide calls the pipeline makes, served by cuCIM's reader."""

    def __init__(self, path):
        from cucim import CuImage
        self.img = CuImage(path)
        r = self.img.resolutions
        self.level_dimensions = [tuple(d) for d in r["level_dimensions"]]
        self.level_downsamples = list(r["level_downsamples"])
        self.dimensions = self.level_dimensions[0]
        assert self.img.spacing_units()[0] == "micrometer", self.img.spacing_units()
        self.mpp = float(self.img.spacing()[0])

    def get_best_level_for_downsample(self, ds):
        return max(i for i, d in enumerate(self.level_downsamples) if d <= ds * (1 + 1e-6))

    def read_region(self, xy, level, size):
        return Image.fromarray(np.asarray(self.img.read_region(xy, size, level)))


def open_slide(path):
    """The slide and its level-0 µm/px."""
    if READER == "cucim":
        s = CuSlide(path)
        return s, s.mpp
    s = openslide.OpenSlide(path)
    return s, float(s.properties[openslide.PROPERTY_NAME_MPP_X])


def otsu(values):
    hist = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    p = hist / hist.sum()
    omega = np.cumsum(p)
    mu = np.cumsum(p * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * omega - mu) ** 2 / (omega * (1 - omega))
    return int(np.nanargmax(between))


def tissue_mask(slide, mpp0):
    ds = MASK_MPP / mpp0
    level = slide.get_best_level_for_downsample(ds)
    lw, lh = slide.level_dimensions[level]
    factor = max(1, int(ds / slide.level_downsamples[level]))
    region = slide.read_region((0, 0), level, (lw, lh)).convert("RGB")
    small = region.resize((lw // factor, lh // factor), Image.BOX)
    sat = np.asarray(small.convert("HSV"))[:, :, 1]
    sat = np.asarray(Image.fromarray(sat).filter(ImageFilter.MedianFilter(7)))
    mask = Image.fromarray(((sat > max(otsu(sat), 15)) * 255).astype(np.uint8))
    mask = mask.filter(ImageFilter.MaxFilter(5)).filter(ImageFilter.MinFilter(5))
    return np.asarray(mask) > 0, slide.level_dimensions[0][0] / small.size[0]


def good(patch):
    a = np.asarray(patch, dtype=np.int16)
    background = ((a.min(axis=2) >= 215) | (a.max(axis=2) <= 25)).mean()
    if background > 0.5:
        return False
    g = (a[:, :, 0] * 299 + a[:, :, 1] * 587 + a[:, :, 2] * 114) // 1000
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
    return lap.var() >= 15.0


def tile(job):
    path, organ, sid, out = job
    slide, mpp0 = open_slide(path)
    mask, mds = tissue_mask(slide, mpp0)
    integral = np.pad(mask.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    w, h = slide.dimensions
    field = SIZE * MPP / mpp0
    os.makedirs(os.path.join(out, organ), exist_ok=True)
    n = 0
    for j in range(int(h // field)):
        for i in range(int(w // field)):
            x, y = round(i * field), round(j * field)
            x0, y0 = round(x / mds), round(y / mds)
            x1, y1 = max(round((x + field) / mds), x0 + 1), max(round((y + field) / mds), y0 + 1)
            cx1, cy1 = min(x1, mask.shape[1]), min(y1, mask.shape[0])
            inside = integral[cy1, cx1] - integral[y0, cx1] - integral[cy1, x0] + integral[y0, x0]
            if inside / ((x1 - x0) * (y1 - y0)) < MIN_TISSUE:
                continue
            m = 4
            rx, ry = max(0, x - m), max(0, y - m)
            rw, rh = math.ceil(x + field) + m - rx, math.ceil(y + field) + m - ry
            region = slide.read_region((rx, ry), 0, (rw, rh)).convert("RGB")
            patch = region.resize((SIZE, SIZE), Image.LANCZOS, box=(x - rx, y - ry, x - rx + field, y - ry + field))
            if not good(patch):
                continue
            patch.save(os.path.join(out, organ, f"{sid}_{x}_{y}.jpg"), quality=90)
            n += 1
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("slides")
    ap.add_argument("out")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--reader", choices=["openslide", "cucim"], default="openslide")
    a = ap.parse_args()
    global READER
    READER = a.reader
    base = os.path.dirname(os.path.abspath(a.slides))
    with open(a.slides) as f:
        jobs = [(os.path.join(base, r["slide"]), r["organ"], r["id"], a.out) for r in csv.DictReader(f)]
    start = time.perf_counter()
    with Pool(a.workers) as pool:
        n = sum(pool.map(tile, jobs, chunksize=1))
    print(f"{n} patches in {time.perf_counter() - start:.3f} s")


if __name__ == "__main__":
    main()
