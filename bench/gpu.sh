#!/usr/bin/env bash
# The GPU measurements in the README, as run on a lent machine with PyTorch 2.11 (CUDA 13) and no
# Rust: the patchtcga binary is built elsewhere against that torch (tch 0.24) and unpacked with
# the shared libraries it needs into $G; LibTorch comes from the machine's own torch.
# Usage: G=/tmp/g bash bench/gpu.sh [out folder]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp}
export LD_LIBRARY_PATH="$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')/lib:$G/lib"
export PATCHTCGA=$G/patchtcga PYTHON=python3 TORCH_CPP_LOG_LEVEL=ERROR
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch, torchvision, timm; print("torch", torch.__version__, "torchvision", torchvision.__version__, "timm", timm.__version__)'
"$PATCHTCGA" bench step --arch resnet18 --image-size 64 --batch-size 4 --steps 2 --warmup 1 --device cuda || { ldd "$PATCHTCGA" | grep "not found"; exit 1; }
bash bench/train_step.sh 50 cuda --autocast | tee "$out/step_amp.md"
bash bench/train_step.sh 20 cuda | tee "$out/step_fp32.md"
COPIES=96 bash bench/train_epoch.sh resnet50 8 cuda --autocast | tee "$out/epoch.txt"
python3 tools/check_embed_parity.py bench/out/epoch_96/PTCGA200 --bin "$PATCHTCGA" --device cuda | tee "$out/embed.txt"
