#!/usr/bin/env python3
"""torchstain's NumPy normalisers timed as Python users run them, for a side-by-side benchmark
with `patchtcga bench stain`: fitted to TARGET, then normalising IMAGE over and over for SECONDS
on one thread (BLAS pinned to one thread by bench/stain.sh).

    python3 bench/stain_torchstain.py --method macenko|reinhard --target T.png --image P.png [--seconds 3]

Prints patches/s.
"""
import argparse
import time

import numpy as np
from PIL import Image
from torchstain.numpy.normalizers import NumpyMacenkoNormalizer, NumpyReinhardNormalizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", required=True, choices=["macenko", "reinhard"])
    ap.add_argument("--target", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    target = np.asarray(Image.open(a.target).convert("RGB"))
    image = np.asarray(Image.open(a.image).convert("RGB"))
    norm = NumpyMacenkoNormalizer() if a.method == "macenko" else NumpyReinhardNormalizer()
    norm.fit(target)
    run = (lambda: norm.normalize(image, stains=False)) if a.method == "macenko" else (lambda: norm.normalize(image))
    start, n = time.perf_counter(), 0
    while n == 0 or time.perf_counter() - start < a.seconds:
        run()
        n += 1
    print(f"{n / (time.perf_counter() - start):.2f} patches/s")


if __name__ == "__main__":
    main()
