#!/usr/bin/env bash
# Training-step benchmark: `patchtcga bench step` against the same step in PyTorch
# (bench/train_step_torch.py: torchvision ResNet50, timm ViT-S/16) on the same machine, threads
# and batch. PyTorch, torchvision and timm come from bench/.venv (made here with pip if missing;
# the same torch version patchtcga links).
# Usage: [BATCH=32] [ARCHS="resnet50 vit-s16"] bash bench/train_step.sh [steps, default 5] [device, default cpu] [extra flags, e.g. --autocast]
# (ARCHS may also name incv3 (299 px, with its auxiliary loss), eff-b3 (300 px) and uni.)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-5}
device=${2:-cpu}
extra=${3:-}
batch=${BATCH:-32}
bin=${PATCHTCGA:-target/release/patchtcga}
py=${PYTHON:-bench/.venv/bin/python}
if ! command -v "$py" > /dev/null; then python3 -m venv bench/.venv && bench/.venv/bin/pip install -q torch==2.13.0 torchvision timm; fi
threads=$(nproc)
echo "| model | batch | device | PyTorch img/s | patchtcga img/s | ratio | peak host memory PyTorch / patchtcga |"
echo "|---|---|---|---|---|---|---|"
for arch in ${ARCHS:-resnet50 vit-s16}; do
  size=224; case $arch in incv3) size=299;; eff-b3) size=300;; esac
  args=(--arch "$arch" --batch-size "$batch" --image-size "$size" --steps "$steps" --warmup 2 --optim sgd --device "$device" --threads "$threads" $extra)
  t=$("$py" bench/train_step_torch.py "${args[@]}")
  r=$("$bin" bench step "${args[@]}")
  ti=$(sed -E 's/.*: ([0-9.]+) images\/s.*/\1/' <<<"$t"); ri=$(sed -E 's/.*: ([0-9.]+) images\/s.*/\1/' <<<"$r")
  tm=$(sed -E 's/.*peak host memory ([0-9]+) MiB.*/\1/' <<<"$t"); rm=$(sed -E 's/.*peak host memory ([0-9]+) MiB.*/\1/' <<<"$r")
  echo "| $arch | $batch | $device $extra | $ti | $ri | $(awk -v a="$ri" -v b="$ti" 'BEGIN{printf "%.2f", a/b}')× | $tm MiB / $rm MiB |"
done
