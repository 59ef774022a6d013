#!/usr/bin/env bash
# Pretraining-update benchmark, per method preset: `patchtcga bench pretrain` against the same
# update in PyTorch with lightly's heads and losses (bench/pretrain_step_torch.py), same config,
# machine, threads and batch. PyTorch, torchvision, timm and lightly come from bench/.venv (made
# here with pip if missing; the torch version patchtcga links).
# Usage: [BATCH=32] [DEVICE=cpu] [STEPS=5] bash bench/pretrain_step.sh [preset names…]
set -euo pipefail
cd "$(dirname "$0")/.."
batch=${BATCH:-16}
device=${DEVICE:-cpu}
steps=${STEPS:-5}
bin=${PATCHTCGA:-target/release/patchtcga}
py=${PYTHON:-bench/.venv/bin/python}
if ! command -v "$py" > /dev/null; then python3 -m venv bench/.venv && bench/.venv/bin/pip install -q torch==2.13.0 torchvision timm lightly; fi
presets=("$@")
[ ${#presets[@]} -gt 0 ] || presets=(simclr_resnet50 byol_resnet50 mocov2_resnet50 dino_vit_s16 mae_vit_b16)
amp=false
[ "$device" = cpu ] || amp=true
echo "| preset | batch | device | PyTorch + lightly img/s | patchtcga img/s | ratio |"
echo "|---|---|---|---|---|---|"
for p in "${presets[@]}"; do
  args=(--config "configs/${p}_ptcga200.toml" --set "batch_size=$batch" --set "device=\"$device\"" --set "enable_autocast=$amp"
        --steps "$steps" --warmup 2 --threads "$(nproc)")
  t=$("$py" bench/pretrain_step_torch.py "${args[@]}" 2>> "${ERRLOG:-/dev/null}")
  r=$("$bin" bench pretrain "${args[@]}")
  ti=$(sed -E 's/.*: ([0-9.]+) images\/s.*/\1/' <<<"$t"); ri=$(sed -E 's/.*: ([0-9.]+) images\/s.*/\1/' <<<"$r")
  echo "| $p | $batch | $device$([ $amp = true ] && echo " fp16") | $ti | $ri | $(awk -v a="$ri" -v b="$ti" 'BEGIN{printf "%.2f", a/b}')× |"
done
