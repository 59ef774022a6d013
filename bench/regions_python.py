#!/usr/bin/env python3
"""Region reads as Python users do them, for a side-by-side benchmark with `patchtcga bench
regions`: openslide-python (`read_region` → RGB array), cuCIM (`CuImage.read_region` → array),
wsidicom (`WsiDicom.read_region` → RGB array, DICOM series) or patchtcga's Python package
(`Slide.read_region` → RGB array, no PIL),
square level-0 regions on the slide's grid, row by row, one thread.

    python3 bench/regions_python.py SLIDE --reader openslide|cucim|wsidicom|patchtcga [--size 800] [--count 200]

Prints regions/s and peak memory.
"""
import argparse
import itertools
import resource
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("slide")
    ap.add_argument("--reader", choices=["openslide", "cucim", "wsidicom", "patchtcga"], required=True)
    ap.add_argument("--size", type=int, default=800)
    ap.add_argument("--count", type=int, default=200)
    a = ap.parse_args()
    if a.reader == "openslide":
        import openslide
        s = openslide.OpenSlide(a.slide)
        w, h = s.dimensions
        read = lambda x, y: np.asarray(s.read_region((x, y), 0, (a.size, a.size)).convert("RGB"))
    elif a.reader == "patchtcga":
        import patchtcga
        s = patchtcga.Slide(a.slide)
        w, h = s.level_dimensions[0]
        read = lambda x, y: s.read_region(x, y, 0, a.size, a.size)
    elif a.reader == "wsidicom":
        from wsidicom import WsiDicom
        s = WsiDicom.open(a.slide)
        w, h = s.size.width, s.size.height
        read = lambda x, y: np.asarray(s.read_region((x, y), 0, (a.size, a.size)).convert("RGB"))
    else:
        from cucim import CuImage
        s = CuImage(a.slide)
        w, h = s.size("XY")
        read = lambda x, y: np.asarray(s.read_region((x, y), (a.size, a.size), 0))[:, :, :3]
    grid = [(i * a.size, j * a.size) for j in range(h // a.size) for i in range(w // a.size)]
    start = time.perf_counter()
    total = 0
    for x, y in itertools.islice(itertools.cycle(grid), a.count):
        total += int(read(x, y)[::7, ::7].sum())
    secs = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{a.reader}: {a.count} regions of {a.size} px in {secs:.3f} s: {a.count / secs:.1f} regions/s, "
          f"peak memory {peak:.0f} MiB (checksum {total})")


if __name__ == "__main__":
    main()
