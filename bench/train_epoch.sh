#!/usr/bin/env bash
# Whole-epoch benchmark: `patchtcga pretrain` (supervised recipe, data loading included) against
# bench/train_epoch_torch.py (torchvision DataLoader + PyTorch) with the same model, batch, workers
# and optimizer, on real patches: the bundled slide tiled as COPIES (default 24) slides, half
# lung, half skin (512 px JPEGs, 12 per slide), made here in bench/out/epoch_<COPIES> if missing.
# Usage: bash bench/train_epoch.sh [arch, default resnet50] [workers, default nproc] [device, default cpu] [--autocast]
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-resnet50}
workers=${2:-$(nproc)}
device=${3:-cpu}
amp=${4:-}
bin=${PATCHTCGA:-target/release/patchtcga}
py=${PYTHON:-bench/.venv/bin/python}
copies=${COPIES:-24}
source bench/lib.sh
data=$(epoch_dataset "$copies" "$bin")
if ! command -v "$py" > /dev/null; then python3 -m venv bench/.venv && bench/.venv/bin/pip install -q torch==2.13.0 torchvision timm; fi
out=$(mktemp -d)
cat > "$out/epoch.toml" <<TOML
name = "epoch"
root_dir = "$out"
dataset_dir = "$data"
model_name = "$arch"
epochs = 1
batch_size = 32
num_workers = $workers
optim = "adam"
lr = 1e-4
warmup_epochs = 0
device = "$device"
enable_autocast = $([ "$amp" = "--autocast" ] && echo true || echo false)
TOML
t=$("$py" bench/train_epoch_torch.py "$data" --arch "$arch" --workers "$workers" --batch-size 32 --device "$device" $amp)
s=$(date +%s.%N)
"$bin" pretrain --config "$out/epoch.toml" > /dev/null 2>&1
e=$(date +%s.%N)
r=$(python3 -c "import json;l=[json.loads(x) for x in open('$out/epoch/metrics.jsonl') if '\"loss\"' in x];print(sum(32 for _ in l))")
echo "$t"
awk -v n="$r" -v s="$s" -v e="$e" 'BEGIN{printf "patchtcga epoch: %d images, %.2f s with start-up\n", n, e-s}'
rm -rf "$out"
