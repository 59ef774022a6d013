"""The reference side of bench/slide_encoders.sh: FEATHER and TITAN at their published sizes
(random weights) as their authors' code defines them (tools/make_slide_encoder_goldens.py), run
over a folder of patch-feature .h5 files as TRIDENT runs them (features and coords read with h5py,
one slide at a time, inference mode, float32 on the CPU).

  python3 bench/slide_encoders_torch.py make DIR PATCHES SLIDES   weights and feature files
  python3 bench/slide_encoders_torch.py run DIR feather|titan     prints "slides/s S"
"""
import os
import sys
import time

import h5py
import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from make_slide_encoder_goldens import TitanVision, Wrapper  # noqa: E402

FOOTPRINT = 512


def titan():
    return TitanVision(768, 768, 3072, 6, 128)


def feather():
    return Wrapper(768, 512, 384)


def make(out, patches, slides):
    os.makedirs(os.path.join(out, "feats"), exist_ok=True)
    torch.manual_seed(0)
    for name, model, prefix in [("titan", titan(), "vision_encoder."), ("feather", feather(), "")]:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.02)
        save_file({prefix + k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/{name}.safetensors")
    rng = np.random.default_rng(0)
    side = int(np.ceil(np.sqrt(patches / 0.7)))
    for s in range(slides):
        cells = rng.choice(side * side, size=patches, replace=False)
        coords = np.stack([cells // side, cells % side], axis=1).astype(np.int64) * FOOTPRINT + 2000
        with h5py.File(f"{out}/feats/s{s}.h5", "w") as f:
            f["features"] = rng.normal(size=(patches, 768)).astype(np.float32)
            c = f.create_dataset("coords", data=coords)
            c.attrs["patch_size"] = 512
            c.attrs["patch_size_level0"] = FOOTPRINT
            c.attrs["target_magnification"] = 20


def run(out, name):
    torch.set_num_threads(int(os.environ.get("THREADS", os.cpu_count())))
    model = (titan() if name == "titan" else feather()).eval()
    prefix = "vision_encoder." if name == "titan" else ""
    from safetensors.torch import load_file
    model.load_state_dict({k[len(prefix):]: v for k, v in load_file(f"{out}/{name}.safetensors").items()})
    files = sorted(os.listdir(f"{out}/feats"))
    start = time.perf_counter()
    with torch.inference_mode():
        for f in files:
            with h5py.File(f"{out}/feats/{f}") as h:
                x = torch.from_numpy(h["features"][:])
                coords = torch.from_numpy(h["coords"][:])
                footprint = int(h["coords"].attrs["patch_size_level0"])
            if name == "titan":
                model.encode(x, coords, footprint)
            else:
                model.model.forward_features(x.unsqueeze(0))
    print(f"slides/s {len(files) / (time.perf_counter() - start):.4f}")


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        run(sys.argv[2], sys.argv[3])
