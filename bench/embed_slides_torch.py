"""The PyTorch side of bench/embed_slides.sh: slide features the way CLAM and TRIDENT users make
them, openslide-python reads of a tissue grid in a torch DataLoader, resized with Pillow's
Lanczos, then a timm ViT.

The grid is the one `patchtcga embed --slides` wrote (its `.h5` files' `coords` and attributes),
so both sides read exactly the same patches.

  make PATH MODEL                               random weights of MODEL in timm names (safetensors)
  read H5DIR SLIDES.csv WORKERS B               the DataLoader alone: patches/s
  forward MODEL N B DEVICE [amp]                timm's bare forward on random tensors: images/s
  pipeline H5DIR SLIDES.csv MODEL WORKERS B DEVICE [amp]   end to end: patches/s and slides/s

MODEL: vit-s16 (timm vit_small_patch16_224) or uni (ViT-L/16 with LayerScale), random weights.
"""
import csv
import os
import sys
import time

import h5py
import numpy as np
import openslide
import timm
import torch
from PIL import Image

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build(name, device):
    kw = {"vit-s16": dict(patch_size=16, embed_dim=384, depth=12, num_heads=6),
          "uni": dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16, init_values=1e-5)}[name]
    m = timm.models.vision_transformer.VisionTransformer(img_size=224, num_classes=0, **kw)
    return m.eval().to(device)


def make(path, name):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in build(name, "cpu").state_dict().items()}, path)


def jobs(h5dir, slides_csv):
    """(slide path, level-0 corners, footprint in level-0 px, output side) per slide."""
    base = os.path.dirname(slides_csv)
    out = []
    with open(slides_csv) as f:
        for row in csv.DictReader(f):
            path = row["slide"] if os.path.isabs(row["slide"]) else os.path.join(base, row["slide"])
            with h5py.File(os.path.join(h5dir, row["id"] + ".h5")) as h:
                coords, mpp, size = h["coords"][:], float(h.attrs["mpp"]), int(h.attrs["patch_size"])
            out.append((path, coords, mpp, size))
    return out


class Grid(torch.utils.data.Dataset):
    """One slide's patches: read_region at the level just finer than the target, Lanczos to size."""

    def __init__(self, path, coords, mpp, size):
        self.path, self.coords, self.size = path, coords, size
        s = openslide.OpenSlide(path)
        slide_mpp = float(s.properties[openslide.PROPERTY_NAME_MPP_X])
        self.footprint = size * mpp / slide_mpp
        self.level = s.get_best_level_for_downsample(self.footprint / size + 1e-6)
        self.read = int(round(self.footprint / s.level_downsamples[self.level]))
        self.slide = None  # opened in the worker

    def __len__(self):
        return len(self.coords)

    def __getitem__(self, i):
        if self.slide is None:
            self.slide = openslide.OpenSlide(self.path)
        x, y = self.coords[i]
        img = self.slide.read_region((int(x), int(y)), self.level, (self.read, self.read)).convert("RGB")
        img = img.resize((self.size, self.size), Image.LANCZOS)
        t = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (t - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def loaders(h5dir, slides_csv, workers, batch):
    for j in jobs(h5dir, slides_csv):
        yield torch.utils.data.DataLoader(Grid(*j), batch_size=batch, num_workers=workers,
                                          pin_memory=torch.cuda.is_available())


def read(h5dir, slides_csv, workers, batch):
    start, n = time.perf_counter(), 0
    for loader in loaders(h5dir, slides_csv, workers, batch):
        n += sum(x.shape[0] for x in loader)
    print(f"openslide-python DataLoader ({workers} worker(s)): {n} patches, {n / (time.perf_counter() - start):.1f} patches/s")


def forward(name, n, batch, device, amp):
    m = build(name, device)
    x = torch.randn(batch, 3, 224, 224, device=device)
    with torch.inference_mode(), torch.autocast(device_type=device.split(":")[0], dtype=torch.float16, enabled=amp):
        m(x)
        sync(device)
        start = time.perf_counter()
        for _ in range(n // batch):
            m(x).float().cpu()
        sync(device)
    print(f"timm forward ({name}, batch {batch}, {device}{', autocast fp16' if amp else ''}): "
          f"{n // batch * batch / (time.perf_counter() - start):.2f} images/s")


def pipeline(h5dir, slides_csv, name, workers, batch, device, amp):
    m = build(name, device)
    with torch.inference_mode(), torch.autocast(device_type=device.split(":")[0], dtype=torch.float16, enabled=amp):
        m(torch.randn(batch, 3, 224, 224, device=device))
        sync(device)
        start, n, slides = time.perf_counter(), 0, 0
        for loader in loaders(h5dir, slides_csv, workers, batch):
            feats = [m(x.to(device, non_blocking=True)).float().cpu() for x in loader]
            n += sum(f.shape[0] for f in feats)
            slides += 1
    secs = time.perf_counter() - start
    print(f"openslide-python DataLoader ({workers} worker(s)) + timm {name}: {n} patches of {slides} slide(s) "
          f"in {secs:.1f} s: {n / secs:.2f} patches/s, {slides / secs:.3f} slides/s")


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("THREADS", os.cpu_count())))
    cmd, *a = sys.argv[1:] or ["help"]
    amp = a[-1:] == ["amp"]
    if cmd == "make":
        make(a[0], a[1])
    elif cmd == "read":
        read(a[0], a[1], int(a[2]), int(a[3]))
    elif cmd == "forward":
        forward(a[0], int(a[1]), int(a[2]), a[3], amp)
    elif cmd == "pipeline":
        pipeline(a[0], a[1], a[2], int(a[3]), int(a[4]), a[5], amp)
    else:
        sys.exit(__doc__)
