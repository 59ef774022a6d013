"""Writes assets/demo_bags/: the demo's slide-level task, twelve "slides" cut from the bundled
sample as lists of patch coordinates (`<id>.csv`, `x`,`y` level-0 corners, which `patchtcga embed
--slides --coords` reads), their slide list (`slides.csv`) and labels (`labels.csv`, a `case` per
slide). Six "tumour" slides hold 3 patches from inside the demo's stand-in tumour region
(assets/demo_tumour.xml: x 450-1900, y from 1900, level-0 px) among 12; six "normal" ones none.
The region is not a tumour (see the XML's comment): the task only exercises the pipeline.

The patches are the sample's tissue grid at 1 µm/px, 64 px, as `make demo` embeds it:
    patchtcga embed --slides <(printf 'slide,id\\nassets/cmu1_small_region.svs,cmu1\\n') \\
        --arch resnet18 --image-size 64 --mpp 1.0 --weights ANY_RESNET18 --out /tmp/grid
    python3 tools/make_demo_bags.py /tmp/grid/cmu1.h5
Needs h5py.
"""
import random
import sys
from pathlib import Path

import h5py

FOOTPRINT = 128  # level-0 px of a 64 px patch at 1 µm/px on the 0.499 µm/px sample


def inside(x, y):
    return x >= 450 and x + FOOTPRINT <= 1900 and y >= 1900


def main():
    coords = [tuple(int(v) for v in c) for c in h5py.File(sys.argv[1], "r")["coords"][:]]
    tumour = [c for c in coords if inside(*c)]
    normal = [c for c in coords if not inside(*c) and c[1] + FOOTPRINT <= 1900]
    rng = random.Random(0)
    out = Path(__file__).resolve().parent.parent / "assets" / "demo_bags"
    out.mkdir(parents=True, exist_ok=True)
    slides, labels = ["slide,id"], ["slide,label,case"]
    for i in range(12):
        label = "tumour" if i % 2 else "normal"
        picked = rng.sample(normal, 12 - 3 * (i % 2)) + (rng.sample(tumour, 3) if i % 2 else [])
        rng.shuffle(picked)
        sid = f"{label}_{i // 2 + 1}"
        (out / f"{sid}.csv").write_text("x,y\n" + "".join(f"{x},{y}\n" for x, y in picked))
        slides.append(f"../cmu1_small_region.svs,{sid}")
        labels.append(f"{sid},{label},case_{sid}")
    (out / "slides.csv").write_text("\n".join(slides) + "\n")
    (out / "labels.csv").write_text("\n".join(labels) + "\n")
    print(f"{len(tumour)} patches inside the region, {len(normal)} above it; 12 slides → {out}")


if __name__ == "__main__":
    main()
