"""`patchtcga embed` against torch on real patches: a torchvision ResNet50 and a timm ViT-S/16
with random weights are saved as PyTorch checkpoints (the ViT inside a DINO-style
{'teacher': {'backbone.*'}} wrapper), embedded by patchtcga, and compared with the features torch
computes from the same pixels (224×224 PNG crops of real patches, `--preprocess none`).

    python3 tools/check_embed_parity.py DATASET_DIR [--bin target/release/patchtcga] [--n 16]

Prints the largest absolute difference relative to the largest feature magnitude, per model;
then exports each backbone with `patchtcga export` and loads it back into torchvision / timm
with strict `load_state_dict`, printing the largest output difference.
"""
import argparse
import glob
import os
import subprocess
import tempfile

import numpy as np
import timm
import torch
import torchvision
from PIL import Image

ap = argparse.ArgumentParser()
ap.add_argument("dataset")
ap.add_argument("--bin", default="target/release/patchtcga")
ap.add_argument("--n", type=int, default=16)
ap.add_argument("--device", default="cpu", help="device patchtcga embeds on (torch's reference runs on the CPU)")
a = ap.parse_args()
torch.manual_seed(0)
tmp = tempfile.mkdtemp()
imgs = os.path.join(tmp, "imgs")
os.makedirs(imgs)
files = sorted(f for f in glob.glob(os.path.join(a.dataset, "**", "*.jpg"), recursive=True) if "thumbnail_position_map" not in f)[: a.n]
for i, f in enumerate(files):
    Image.open(f).convert("RGB").crop((100, 100, 324, 324)).save(os.path.join(imgs, f"{i:03d}.png"))
x = torch.stack([torch.from_numpy(np.asarray(Image.open(os.path.join(imgs, f"{i:03d}.png")), dtype=np.float32) / 255.0).permute(2, 0, 1) for i in range(len(files))])
x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

resnet = torchvision.models.resnet50().eval()
torch.save(resnet.state_dict(), os.path.join(tmp, "resnet50.pth"))
vit = timm.create_model("vit_small_patch16_224").eval()
torch.save({"teacher": {f"backbone.{k}": v for k, v in vit.state_dict().items() if not k.startswith("head.")}, "epoch": 1},
           os.path.join(tmp, "dino_vits16.pth"))
with torch.no_grad():
    resnet.fc = torch.nn.Identity()
    ref = {"resnet50": resnet(x).numpy(), "vit-s16": vit.forward_head(vit.forward_features(x), pre_logits=True).numpy()}
for arch, w in [("resnet50", "resnet50.pth"), ("vit-s16", "dino_vits16.pth")]:
    out = os.path.join(tmp, f"{arch}.npy")
    subprocess.run([a.bin, "embed", "--arch", arch, "--weights", os.path.join(tmp, w), "--images", imgs, "--out", out,
                    "--preprocess", "none", "--device", a.device], check=True, capture_output=True)
    ours = np.load(out)
    err = np.abs(ours - ref[arch]).max() / np.abs(ref[arch]).max()
    print(f"{arch} on {a.device}: {ours.shape[0]} real patches, features {ours.shape[1]}, max relative error {err:.2e}")

for arch, w, ext in [("resnet50", "resnet50.pth", "pth"), ("vit-s16", "dino_vits16.pth", "safetensors")]:
    out = os.path.join(tmp, f"{arch}_export.{ext}")
    subprocess.run([a.bin, "export", "--arch", arch, "--weights", os.path.join(tmp, w), "--out", out], check=True, capture_output=True)
    if ext == "pth":
        model = torchvision.models.resnet50()
        model.fc = torch.nn.Identity()
        sd = torch.load(out, weights_only=True)
    else:
        from safetensors.torch import load_file

        model = timm.create_model("vit_small_patch16_224", num_classes=0)
        sd = load_file(out)
    model.load_state_dict(sd, strict=True)
    with torch.no_grad():
        diff = (model.eval()(x) - torch.from_numpy(ref[arch])).abs().max().item()
    print(f"{arch}: export → strict load_state_dict → max output difference {diff:.2e}")
