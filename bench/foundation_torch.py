"""The PyTorch side of bench/foundation.sh.

  make PATH PRESET       a checkpoint of the preset's exact shape (timm names, random weights),
                         written tensor by tensor from a meta-device model
  load PATH PRESET       what the model cards do: timm.create_model + load_state_dict(load_file);
                         prints the peak resident memory
  forward PRESET N B     timm's bare forward rate on N random images in batches of B
  pipeline DIR PRESET B  a torchvision ImageFolder-style DataLoader (one worker) + timm forward
"""
import os
import resource
import sys
import time

import torch
from torch import nn
from timm.layers import SwiGLUPacked
from timm.models.vision_transformer import VisionTransformer


def build(preset, device="cpu"):
    swiglu = dict(mlp_layer=SwiGLUPacked, act_layer=nn.SiLU)
    kw = {
        "uni": dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16),
        "gigapath": dict(patch_size=16, embed_dim=1536, depth=40, num_heads=24, mlp_ratio=5.33334, **swiglu),
    }[preset]
    with torch.device(device):
        return VisionTransformer(img_size=224, init_values=1e-5, num_classes=0, dynamic_img_size=True, **kw)


def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make(path, preset):
    from safetensors.torch import save_file

    shapes = {k: v.shape for k, v in build(preset, "meta").state_dict().items()}
    g = torch.Generator().manual_seed(0)
    save_file({k: torch.randn(s, generator=g) * 0.02 for k, s in shapes.items()}, path)
    print(f"{sum(torch.Size(s).numel() for s in shapes.values()) / 1e9:.2f} B parameters → {path}")


def load(path, preset):
    from safetensors.torch import load_file

    m = build(preset)
    m.load_state_dict(load_file(path))
    print(f"timm load_state_dict(load_file): peak host memory {peak_mib():.0f} MiB")


def forward(preset, n, batch):
    m = build(preset).eval()
    x = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        m(x)
        start = time.perf_counter()
        for _ in range(n // batch):
            m(x)
    print(f"timm forward: {n // batch * batch / (time.perf_counter() - start):.2f} images/s")


def pipeline(folder, preset, batch):
    from PIL import Image
    from torchvision import transforms

    tf = transforms.Compose([transforms.Resize(224), transforms.ToTensor(),
                             transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    # The patches patchtcga embed lists: not the thumbnail maps beside them.
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs
                   if f.endswith((".jpg", ".png")) and "thumbnail_position_map" not in r)

    class Folder(torch.utils.data.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            return tf(Image.open(files[i]).convert("RGB"))

    loader = torch.utils.data.DataLoader(Folder(), batch_size=batch, num_workers=1)
    m = build(preset).eval()
    with torch.inference_mode():
        m(torch.randn(batch, 3, 224, 224))
        start = time.perf_counter()
        n = sum(m(x).shape[0] for x in loader)
    print(f"timm + DataLoader: {n / (time.perf_counter() - start):.2f} images/s")


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("THREADS", os.cpu_count())))
    cmd, *args = sys.argv[1:] or ["help"]
    if cmd == "make":
        make(*args)
    elif cmd == "load":
        load(*args)
    elif cmd == "forward":
        forward(args[0], int(args[1]), int(args[2]))
    elif cmd == "pipeline":
        pipeline(args[0], args[1], int(args[2]))
    else:
        sys.exit(__doc__)
