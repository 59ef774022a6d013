#!/usr/bin/env bash
# How long each pretraining preset waits on its loader: `patchtcga pretrain` for UPDATES updates
# on real patches (the bundled slide tiled as COPIES slides, made in bench/out/epoch_<COPIES> by
# bench/train_epoch.sh's recipe if missing), then the mean images/s and the share of each update
# spent waiting for the next batch, from metrics.jsonl (first 5 updates left out: warm-up), and
# that share at the first update of each epoch after the first (where a loader that starts each
# epoch empty makes the network wait). SETS adds `--set`s (space-separated key=value).
# Usage: [COPIES=96] [UPDATES=40] [WORKERS=nproc] [BATCH=64] [DEVICE=cuda] [SETS=…] bash bench/pretrain_wait.sh [presets…]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${PATCHTCGA:-target/release/patchtcga}
copies=${COPIES:-96}
updates=${UPDATES:-40}
workers=${WORKERS:-$(nproc)}
batch=${BATCH:-64}
device=${DEVICE:-cuda}
source bench/lib.sh
data=$(epoch_dataset "$copies" "$bin")
presets=("$@")
[ ${#presets[@]} -gt 0 ] || presets=(simclr_resnet50 byol_resnet50 mocov2_resnet50 dino_vit_s16 mae_vit_b16)
runs=$(mktemp -d)
sets=()
for s in ${SETS:-}; do sets+=(--set "$s"); done
echo "| preset | batch | loader workers | device | source images/s | loader wait | at epoch starts |"
echo "|---|---|---|---|---|---|---|"
for p in "${presets[@]}"; do
  "$bin" pretrain --config "configs/${p}_ptcga200.toml" --set "dataset_dir=\"$data\"" --set 'split=""' \
    --set "root_dir=\"$runs\"" --set "batch_size=$batch" --set "num_workers=$workers" --set "device=\"$device\"" \
    --set "stop_num_updates=$updates" --set "queue_size=$((batch * 64))" --set snapshot_epoch=1000 "${sets[@]}" > /dev/null 2>&1
  python3 - "$runs/${p}_ptcga200/metrics.jsonl" "$p" "$batch" "$workers" "$device" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l][5:]
rate = sum(r["images_per_s"] for r in rows) / len(rows)
wait = sum(r["data_wait"] for r in rows) / len(rows)
starts = [r["data_wait"] for r in rows if r["epoch"] > 0 and r["batch"] == min(x["batch"] for x in rows)]
at_start = f"{100 * sum(starts) / len(starts):.0f} % ({len(starts)})" if starts else "–"
print(f"| {sys.argv[2]} | {sys.argv[3]} | {sys.argv[4]} | {sys.argv[5]} | {rate:.0f} | {100 * wait:.0f} % | {at_start} |")
PY
done
