"""Goldens for crates/augment's stain normalisers (tests/stain.rs): torchstain's NumPy backend
(Macenko and Reinhard) on real H&E crops of the bundled slide, one of them re-stained to look like
another site's (each channel's optical density scaled), fitted to a third crop.

Regenerate (the committed files were made with torchstain 1.4.1, numpy 2.4.6, openslide-python):
    pip install --target /tmp/st torchstain numpy pillow      (Debian: apt install python3-openslide)
    PYTHONPATH=/tmp/st:/usr/lib/python3/dist-packages python3 tools/make_stain_goldens.py
"""
import json
import os

import numpy as np
import openslide
from PIL import Image
from torchstain.numpy.normalizers import NumpyMacenkoNormalizer, NumpyReinhardNormalizer

ROOT = os.path.join(os.path.dirname(__file__), "..")
OUT = os.path.join(ROOT, "crates/augment/tests/golden")
SIDE = 192


def crop(slide, x, y):
    return np.asarray(slide.read_region((x, y), 0, (SIDE, SIDE)).convert("RGB"))


def restain(rgb, scale):
    """Another site's look: each channel's optical density scaled."""
    od = -np.log((rgb.astype(np.float64) + 1) / 256)
    return np.clip(256 * np.exp(-od * np.array(scale)) - 1, 0, 255).astype(np.uint8)


def main():
    slide = openslide.OpenSlide(os.path.join(ROOT, "assets/cmu1_small_region.svs"))
    target = crop(slide, 1000, 1300)
    sources = [crop(slide, 1200, 1600), restain(crop(slide, 900, 2200), (1.35, 0.8, 1.1))]
    Image.fromarray(target).save(os.path.join(OUT, "stain_target.png"))
    macenko, reinhard = NumpyMacenkoNormalizer(), NumpyReinhardNormalizer()
    macenko.fit(target)
    reinhard.fit(target)
    for i, source in enumerate(sources):
        Image.fromarray(source).save(os.path.join(OUT, f"stain_source_{i}.png"))
        norm, h, e = macenko.normalize(source, stains=True)
        Image.fromarray(norm).save(os.path.join(OUT, f"stain_macenko_{i}.png"))
        Image.fromarray(h).save(os.path.join(OUT, f"stain_macenko_h_{i}.png"))
        Image.fromarray(e).save(os.path.join(OUT, f"stain_macenko_e_{i}.png"))
        Image.fromarray(reinhard.normalize(source)).save(os.path.join(OUT, f"stain_reinhard_{i}.png"))
    fitted = {
        "macenko_stains": macenko.HERef.T.tolist(),
        "macenko_max_concentrations": macenko.maxCRef.tolist(),
        "reinhard_means": np.asarray(reinhard.target_means, dtype=np.float64).tolist(),
        "reinhard_stds": np.asarray(reinhard.target_stds, dtype=np.float64).tolist(),
    }
    with open(os.path.join(OUT, "stain.json"), "w") as f:
        json.dump(fitted, f, indent=1)


if __name__ == "__main__":
    main()
