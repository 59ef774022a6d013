#!/usr/bin/env python3
"""Reference outputs of torchvision's functional image operations for patchtcga-augment's tests.

Input: a 160×120 crop of a real H&E patch (crates/slide/tests/golden, read with openslide-python
+ Pillow). Each case applies one torchvision operation to the PIL image, as the release's
training transforms do, and saves the result; crates/augment/tests/golden/cases.json lists them.

Regenerate with pip-installed torchvision and scikit-image (these were made with torch 2.15.0,
torchvision 0.29.2, Pillow 13.0.0, scikit-image from PyPI on 2026-11-25):
    python3 -m venv /tmp/v && /tmp/v/bin/pip install torchvision scikit-image
    /tmp/v/bin/python tools/make_augment_goldens.py
"""
import json
import os

import numpy as np
import torch
import torchvision
import torchvision.transforms.functional as F
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates", "augment", "tests", "golden")


def main():
    os.makedirs(OUT, exist_ok=True)
    patch = Image.open(os.path.join(ROOT, "crates", "slide", "tests", "golden", "cmu1_0.39_512_1203_1611.png")).convert("RGB")
    img = patch.crop((200, 150, 360, 270))  # 160 wide, 120 high
    img.save(os.path.join(OUT, "input.png"))
    cases = []

    def case(name, op, args, out):
        file = f"{name}.png"
        out.save(os.path.join(OUT, file))
        cases.append({"name": name, "op": op, "args": args, "file": file})

    t = F.pil_to_tensor(img)
    for k in (1, 2, 3):
        case(f"rot90_{k}", "rot90", {"k": k}, F.to_pil_image(torch.rot90(t, k, [1, 2])))
    case("hflip", "hflip", {}, F.hflip(img))
    case("vflip", "vflip", {}, F.vflip(img))
    case("crop", "crop", {"top": 10, "left": 20, "height": 64, "width": 80}, F.crop(img, 10, 20, 64, 80))
    for s in (100, 99):
        case(f"center_crop_{s}", "center_crop", {"size": s}, F.center_crop(img, [s, s]))
    for w, h in ((96, 72), (224, 168), (61, 47)):
        case(f"resize_{w}x{h}", "resize", {"width": w, "height": h}, F.resize(img, [h, w], interpolation=F.InterpolationMode.BILINEAR))
    case("resized_crop", "resized_crop", {"top": 5, "left": 7, "height": 90, "width": 100, "out": 64},
         F.resized_crop(img, 5, 7, 90, 100, [64, 64], interpolation=F.InterpolationMode.BILINEAR))
    for f in (0.6, 1.4):
        case(f"brightness_{f}", "brightness", {"factor": f}, F.adjust_brightness(img, f))
        case(f"contrast_{f}", "contrast", {"factor": f}, F.adjust_contrast(img, f))
        case(f"saturation_{f}", "saturation", {"factor": f}, F.adjust_saturation(img, f))
    for f in (-0.1, 0.05, 0.5):
        case(f"hue_{f}", "hue", {"factor": f}, F.adjust_hue(img, f))
    case("grayscale", "grayscale", {}, F.rgb_to_grayscale(img, num_output_channels=3))
    for k, s in ((23, 1.5), (9, 0.1), (23, 2.0)):
        case(f"blur_{k}_{s}", "blur", {"kernel": k, "sigma": s}, F.gaussian_blur(img, [k, k], [s, s]))
    case("solarize_128", "solarize", {"threshold": 128}, F.solarize(img, 128))

    normalized = F.normalize(F.to_tensor(img), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    normalized.numpy().astype("<f4").tofile(os.path.join(OUT, "normalize_imagenet.f32"))
    cases.append({"name": "normalize_imagenet", "op": "normalize", "args": {}, "file": "normalize_imagenet.f32"})

    mask = Image.fromarray((np.arange(120)[:, None] // 7 + np.arange(160)[None, :] // 11).astype(np.uint8) % 6, "L")
    mask.save(os.path.join(OUT, "mask.png"))
    case("mask_resize", "resize_mask", {"width": 61, "height": 47}, F.resize(mask, [47, 61], interpolation=F.InterpolationMode.NEAREST))

    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"torch": torch.__version__, "torchvision": torchvision.__version__, "cases": cases}, f, indent=1)



def hed_goldens():
    """HED stain jitter with scikit-image's colour deconvolution (pip install scikit-image)."""
    from skimage.color import hed2rgb, rgb2hed

    img = np.asarray(Image.open(os.path.join(OUT, "input.png")).convert("RGB"))
    with open(os.path.join(OUT, "cases.json")) as f:
        meta = json.load(f)
    for name, alpha, beta in (("hed_identity", [1, 1, 1], [0, 0, 0]), ("hed_jitter", [1.05, 0.95, 1.0], [-0.03, 0.04, 0.01])):
        hed = rgb2hed(img) * np.array(alpha) + np.array(beta)
        out = np.round(hed2rgb(hed) * 255).astype(np.uint8)
        Image.fromarray(out).save(os.path.join(OUT, f"{name}.png"))
        meta["cases"] = [c for c in meta["cases"] if c["name"] != name]
        meta["cases"].append({"name": name, "op": "hed", "args": {"alpha": alpha, "beta": beta}, "file": f"{name}.png"})
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
    hed_goldens()
