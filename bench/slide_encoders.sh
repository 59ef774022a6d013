#!/usr/bin/env bash
# Slide encoders side by side: `patchtcga embed-slides` against the authors' architectures in
# PyTorch (bench/slide_encoders_torch.py) over the same folder of patch-feature .h5 files (random
# CONCH-v1.5-wide features on a TITAN grid, published sizes, random weights), same threads, in
# interleaved rounds. Prints a markdown table: slides/s (best round) and peak memory of each, and
# the ratio.
# Usage: bash bench/slide_encoders.sh [patches per slide, default 10000] [slides, default 2] [rounds, default 2]
# Environment: PATCHTCGA (the binary), PYTHON (with torch, h5py, safetensors), THREADS.
set -euo pipefail
cd "$(dirname "$0")/.."
patches=${1:-10000}
slides=${2:-2}
rounds=${3:-2}
bin=${PATCHTCGA:-target/release/patchtcga}
py=${PYTHON:-python3}
work=bench/out/slide_encoders_${patches}
export OMP_NUM_THREADS=${THREADS:-$(nproc)} THREADS=${THREADS:-$(nproc)}
[ -f "$work/titan.safetensors" ] || "$py" bench/slide_encoders_torch.py make "$work" "$patches" "$slides"
rate() { sed -nE 's|.*[(]([0-9.]+) slides/s[)].*|\1|p; s|^slides/s ([0-9.]+)$|\1|p' | tail -1; }
peak() { sed -nE 's|.*Maximum resident set size \(kbytes\): ([0-9]+)|\1|p' "$1"; }
echo "| encoder | patches/slide | patchtcga slides/s | PyTorch slides/s | ratio | patchtcga peak MiB | PyTorch peak MiB | memory ratio |"
echo "|---|---|---|---|---|---|---|---|"
for enc in feather titan; do
  best_ours=0 best_ref=0 mem_ours=0 mem_ref=0
  for r in $(seq 1 "$rounds"); do
    ours=$(/usr/bin/time -v -o "$work/time_ours" "$bin" embed-slides --encoder "$enc" --weights "$work/$enc.safetensors" \
      --features "$work/feats" --out "$work/$enc.h5" 2> /dev/null | rate)
    ref=$(/usr/bin/time -v -o "$work/time_ref" "$py" bench/slide_encoders_torch.py run "$work" "$enc" | rate)
    best_ours=$(echo "$ours $best_ours" | awk '{print ($1 > $2) ? $1 : $2}')
    best_ref=$(echo "$ref $best_ref" | awk '{print ($1 > $2) ? $1 : $2}')
    mem_ours=$(peak "$work/time_ours") mem_ref=$(peak "$work/time_ref")
  done
  echo "$enc $patches $best_ours $best_ref $mem_ours $mem_ref" | awk '{printf "| %s | %d | %.4f | %.4f | %.2f× | %.0f | %.0f | %.2f× |\n",
    $1, $2, $3, $4, $3 / $4, $5 / 1024, $6 / 1024, $5 / $6}'
done
