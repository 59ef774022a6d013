#!/usr/bin/env bash
# The GPU measurements in docs/benchmarks.md and docs/distributed.md, as run on a lent machine with PyTorch 2.11 (CUDA 13) and no
# Rust: the patchtcga binary is built elsewhere against that torch (tch 0.24) and unpacked with
# the shared libraries it needs into $G; LibTorch comes from the machine's own torch.
# lightly (for the pretraining reference) is carried too, in $G/py.
# Usage: G=/tmp/g bash bench/gpu.sh [out folder] [parts: step epoch embed pretrain wait dist nccl slides
#        foundation; default all]
# `slides` embeds copies of a 40× slide (SLIDE, default bench/out/gpu/cmu1_40x_2x1.svs, made by
# `TILES=2x1 bash bench/make_40x.sh` where libvips is) with uni against openslide-python + timm,
# float32 and float16 autocast; openslide-python and openslide-bin are carried into $G/py.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp}
parts=${2:-step epoch embed pretrain wait dist nccl slides foundation}
export LD_LIBRARY_PATH="$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')/lib:$G/lib"
export PATCHTCGA=$G/patchtcga PYTHON=python3 TORCH_CPP_LOG_LEVEL=ERROR PYTHONPATH=$G/py
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch, torchvision, timm; print("torch", torch.__version__, "torchvision", torchvision.__version__, "timm", timm.__version__)'
"$PATCHTCGA" bench step --arch resnet18 --image-size 64 --batch-size 4 --steps 2 --warmup 1 --device cuda || { ldd "$PATCHTCGA" | grep "not found"; exit 1; }
has() { [[ " $parts " == *" $1 "* ]]; }
if has step; then
  bash bench/train_step.sh 50 cuda --autocast | tee "$out/step_amp.md"
  bash bench/train_step.sh 20 cuda | tee "$out/step_fp32.md"
fi
if has epoch; then COPIES=96 bash bench/train_epoch.sh resnet50 8 cuda --autocast | tee "$out/epoch.txt"; fi
if has embed; then
  COPIES=96 bash bench/train_epoch.sh resnet50 8 cuda --autocast > /dev/null  # makes the dataset
  python3 tools/check_embed_parity.py bench/out/epoch_96/PTCGA200 --bin "$PATCHTCGA" --device cuda | tee "$out/embed.txt"
fi
if has pretrain; then BATCH=64 DEVICE=cuda STEPS=20 bash bench/pretrain_step.sh | tee "$out/pretrain_step.md"; fi
if has wait; then
  COPIES=96 UPDATES=40 WORKERS=14 BATCH=64 DEVICE=cuda bash bench/pretrain_wait.sh | tee "$out/pretrain_wait.md"
fi
if has dist; then
  # One GPU: PyTorch's per-GPU step under DistributedDataParallel (one process, NCCL) and without,
  # against patchtcga's; then two processes sharing the GPU through Gloo (function, not scaling:
  # NCCL refuses two ranks on one GPU).
  args=(--arch resnet50 --batch-size 64 --image-size 224 --steps 30 --warmup 5 --optim sgd --device cuda --autocast)
  { python3 bench/train_step_torch.py "${args[@]}" --ddp; python3 bench/train_step_torch.py "${args[@]}"
    "$PATCHTCGA" bench step "${args[@]}"; } | tee "$out/ddp_step.txt"
  DEVICE=cuda:0 BACKEND=gloo ARCH=resnet50 SIZE=224 B=32 UPDATES=20 bash bench/dist_scaling.sh | tee "$out/dist_gpu.md"
fi
if has nccl; then
  # c10d's NCCL group on this GPU (one process: NCCL takes one GPU per rank), the check of
  # crates/collective/tests/collectives.rs, its test binary carried as $G/dist_collectives.
  "$G/dist_collectives" --exact nccl_on_a_gpu_or_a_clear_refusal_without_one --nocapture 2>&1 | tee "$out/nccl.txt"
fi
if has slides; then
  export SLIDE=${SLIDE:-bench/out/gpu/cmu1_40x_2x1.svs}
  bash bench/embed_slides.sh 64 64 cuda uni 8 | tee "$out/embed_slides.md"
  READ=0 bash bench/embed_slides.sh 64 64 cuda uni 8 amp | tee "$out/embed_slides_amp.md"
fi
if has foundation; then
  # The release's last backbones and a foundation-model ViT-L, one training step each.
  ARCHS="incv3 eff-b3 uni" BATCH=32 bash bench/train_step.sh 10 cuda --autocast | tee "$out/step_foundation.md"
fi
