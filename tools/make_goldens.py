#!/usr/bin/env python3
"""Reference patches for patchtcga's slide tests, read the way users do it today:
openslide-python for the region and Pillow's Lanczos resize over the exact fractional footprint.

Regenerate (Debian: apt-get install python3-openslide python3-pil) with
    /usr/bin/python3 tools/make_goldens.py
It writes crates/slide/tests/golden/*.png; the Rust tests compare against them by PSNR.
"""
import math
import os

import openslide
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates", "slide", "tests", "golden")


def reference_patch(slide, mpp0, target_mpp, size, x, y, level):
    """The size×size patch at target_mpp whose level-0 top-left corner is (x, y)."""
    ds = slide.level_downsamples[level]
    field = size * target_mpp / mpp0 / ds  # footprint in pixels of `level`
    lx, ly = x / ds, y / ds
    margin = 16
    rx, ry = max(0, math.floor(lx) - margin), max(0, math.floor(ly) - margin)
    rw = math.ceil(lx + field) + margin - rx
    rh = math.ceil(ly + field) + margin - ry
    region = slide.read_region((round(rx * ds), round(ry * ds)), level, (rw, rh)).convert("RGB")
    box = (lx - rx, ly - ry, lx - rx + field, ly - ry + field)
    return region.resize((size, size), Image.LANCZOS, box=box)


def main():
    os.makedirs(OUT, exist_ok=True)
    svs = openslide.OpenSlide(os.path.join(ROOT, "assets", "cmu1_small_region.svs"))
    mpp0 = float(svs.properties["openslide.mpp-x"])
    for x, y in [(800, 800), (1203, 1611), (0, 1000)]:
        reference_patch(svs, mpp0, 0.39, 512, x, y, 0).save(os.path.join(OUT, f"cmu1_0.39_512_{x}_{y}.png"))
    # Downsampling from a coarser pyramid level: boxes.tiff (4 levels), declared 1 µm/px; a
    # 2.5 µm/px target reads level 1 (downsample 2).
    boxes = openslide.OpenSlide(os.path.join(ROOT, "crates", "slide", "tests", "data", "boxes.tiff"))
    reference_patch(boxes, 1.0, 2.5, 64, 20, 30, 1).save(os.path.join(OUT, "boxes_2.5_64_20_30.png"))


if __name__ == "__main__":
    main()


def release_style_split():
    """A split pickle written by Python the way the release's is (protocol 4, str keys), over
    the synthetic PTCGA200 listing that crates/dataset/tests/tools.rs lays out: organs lung and
    skin, slides TCGA-<organ>-<i> (i < 6), two patches each (<slide>_<x>_0.png, x in 0, 512)."""
    import pickle

    files = []
    for organ in sorted(["skin", "lung"]):
        names = sorted(f"TCGA-{organ}-{i}_{x}_0.png" for i in range(6) for x in (0, 512))
        files += [(organ, n) for n in names]
    splits = {}
    for t in range(3):
        sets = {"train": {"idx": [], "imgs": []}, "val": {"idx": [], "imgs": []}, "test": {"idx": [], "imgs": []}}
        for i, (organ, name) in enumerate(files):
            slide = int(name.split("_")[0].rsplit("-", 1)[1])
            s = "val" if slide == 2 * t else "test" if slide == 2 * t + 1 else "train"
            sets[s]["idx"].append(i)
            sets[s]["imgs"].append(name)
        splits[str(t)] = sets
    out = os.path.join(ROOT, "crates", "dataset", "tests", "golden")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "release_style_split.pickle"), "wb") as f:
        pickle.dump(splits, f, protocol=4)


if __name__ == "__main__":
    release_style_split()
