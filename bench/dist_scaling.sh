#!/usr/bin/env bash
# Data-parallel scaling on one machine: `patchtcga pretrain` (supervised) for UPDATES updates as
# one process of batch 2·B and as two processes of batch B (the same global batch; Gloo over
# loopback on CPU, BACKEND picks `dist_backend` on GPUs), on the bundled slide tiled as COPIES slides (bench/out/epoch_<COPIES>, made here if
# missing). Prints images/s over all ranks (updates 3+, from rank 0's metrics.jsonl) and the
# gradient bytes all-reduced per update, then how far the two runs' final weights are apart (the
# same training: a float-rounding gap, not a drift).
# Usage: [ARCH=resnet18] [SIZE=112] [B=8] [UPDATES=20] [COPIES=24] [DEVICE=cpu] [SYNC_BN=true] [BACKEND=auto] bash bench/dist_scaling.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${PATCHTCGA:-target/release/patchtcga}
arch=${ARCH:-resnet18}; size=${SIZE:-112}; b=${B:-8}; updates=${UPDATES:-20}; copies=${COPIES:-24}; device=${DEVICE:-cpu}
source bench/lib.sh
data=$(epoch_dataset "$copies" "$bin")
runs=$(mktemp -d)
cat > "$runs/run.toml" <<TOML
model_name = "$arch"
image_size = $size
val_image_size = $size
dataset_dir = "$data"
root_dir = "$runs"
epochs = 100
stop_num_updates = $updates
base_batch_size = $((2 * b))
optim = "sgd"
lr = 0.01
warmup_epochs = 0
dropout_p = 0
num_workers = 2
device = "$device"
sync_batch_norm = ${SYNC_BN:-true}
dist_backend = "${BACKEND:-auto}"
TOML
echo "| processes | batch per process | images/s (all ranks) | all-reduced per update |"
echo "|---|---|---|---|"
for procs in 1 2; do
  batch=$((2 * b / procs))
  "$bin" pretrain --config "$runs/run.toml" --set "name=\"p$procs\"" --set "batch_size=$batch" \
    --nproc-per-node "$procs" --master-port $((29600 + procs)) > /dev/null 2>&1
  python3 - "$runs/p$procs/metrics.jsonl" "$procs" "$batch" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l][2:]
procs = int(sys.argv[2])
rate = procs * sum(r["images_per_s"] for r in rows) / len(rows)
mib = rows[-1].get("allreduce_mib", 0.0)
print(f"| {procs} | {sys.argv[3]} | {rate:.1f} | {mib:.1f} MiB |")
PY
done
python3 - "$runs/p1" "$runs/p2" "$updates" <<'PY'
import json, struct, sys
import numpy as np

def tensors(run, updates):
    raw = open(f"{run}/checkpoints/update_{int(updates):07d}/model.safetensors", "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    kinds = {"F32": np.float32, "F64": np.float64, "I64": np.int64}
    return {k: np.frombuffer(raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]], kinds[v["dtype"]])
            for k, v in header.items() if k != "__metadata__"}

a, b = tensors(sys.argv[1], sys.argv[3]), tensors(sys.argv[2], sys.argv[3])
def gap(k):
    x, y = a[k].astype(np.float64), b[k].astype(np.float64)
    return float(np.abs(x - y).max(initial=0)) / max(float(np.abs(x).max(initial=0)), 1e-12)

worst = max(a, key=gap)
absolute = max(float(np.abs(a[k].astype(np.float64) - b[k]).max(initial=0)) for k in a)
print(f"weights, 1 against 2 processes after {sys.argv[3]} updates: largest difference {absolute:.2e}; "
      f"largest relative to its tensor's largest |value| {gap(worst):.2e} ({worst})")
PY
