#!/usr/bin/env bash
# Side-by-side loader benchmark: `patchtcga bench loader` against a torchvision + Pillow
# DataLoader (bench/loader_torchvision.py) on the same JPEG patches, recipes and worker counts.
# Needs the tiling benchmark's dataset (bench/out/rs_1, made here if missing) and torchvision
# in bench/.venv (made here with pip if missing).
# Usage: bash bench/loader.sh [seconds per run, default 15]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
bin=target/release/patchtcga
data=bench/out/rs_1
if [ ! -f "$data/manifest.csv" ]; then bash bench/tiling.sh > /dev/null; fi
py=bench/.venv/bin/python
if [ ! -x "$py" ]; then python3 -m venv bench/.venv && bench/.venv/bin/pip install -q torchvision; fi
cores=$(nproc)
echo "| recipe | workers | torchvision DataLoader img/s | patchtcga img/s | ratio | peak memory torchvision / patchtcga |"
echo "|---|---|---|---|---|---|"
for recipe in simclr dino; do
  for w in 1 "$cores"; do
    t=$("$py" bench/loader_torchvision.py "$data" --recipe "$recipe" --workers "$w" --seconds "$secs")
    r=$("$bin" bench loader --dataset "$data" --recipe "$recipe" --workers "$w" --seconds "$secs")
    ti=$(sed -E 's/.*: ([0-9.]+) images\/s.*/\1/' <<<"$t"); ri=$(sed -E 's/.*: ([0-9.]+) images\/s.*/\1/' <<<"$r")
    tm=$(sed -E 's/.*peak memory ~?([0-9]+) kB.*/\1/' <<<"$t"); rm=$(sed -E 's/.*peak memory ([0-9]+) MiB.*/\1/' <<<"$r")
    echo "| $recipe | $w | $ti | $ri | $(awk -v a="$ri" -v b="$ti" 'BEGIN{printf "%.1f", a/b}')× | $((tm / 1024)) MiB / $rm MiB |"
  done
done
