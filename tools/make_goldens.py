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
