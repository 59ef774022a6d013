#!/usr/bin/env python3
"""A miniature of the original PatchCamelyon HDF5 files for patchtcga-loader's tests, written by
h5py the way the release's are laid out: valid_x.h5 (dataset `x`, N×96×96×3 uint8, gzip) and
valid_y.h5 (dataset `y`, N×1×1×1 uint8). The images are 96 px crops of a real H&E patch.

    python3 -m venv /tmp/v && /tmp/v/bin/pip install h5py pillow numpy && /tmp/v/bin/python tools/make_pcam_fixture.py
"""
import os

import h5py
import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates", "loader", "tests", "data")


def main():
    os.makedirs(OUT, exist_ok=True)
    patch = np.asarray(Image.open(os.path.join(ROOT, "crates", "slide", "tests", "golden", "cmu1_0.39_512_800_800.png")).convert("RGB"))
    x = np.stack([patch[40 * i : 40 * i + 96, 60 * i : 60 * i + 96] for i in range(6)]).astype(np.uint8)
    y = np.array([0, 1, 1, 0, 1, 0], dtype=np.uint8).reshape(6, 1, 1, 1)
    with h5py.File(os.path.join(OUT, "valid_x.h5"), "w") as f:
        f.create_dataset("x", data=x, compression="gzip", chunks=(1, 96, 96, 3))
    with h5py.File(os.path.join(OUT, "valid_y.h5"), "w") as f:
        f.create_dataset("y", data=y)
    Image.fromarray(x[4]).save(os.path.join(OUT, "valid_x_4.png"))


if __name__ == "__main__":
    main()
