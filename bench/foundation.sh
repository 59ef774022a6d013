#!/usr/bin/env bash
# Foundation models: loading a 1.1-billion-parameter checkpoint (GigaPath's shape) and embedding a
# folder of patches with `uni` (ViT-L/16), patchtcga against timm on the same machine and threads.
# PyTorch is the wheel in .libtorch (what patchtcga links); timm and torchvision go to bench/.pydeps.
# Usage: bash bench/foundation.sh [images, default 64] [batch, default 16]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-64}
batch=${2:-16}
bin=${PATCHTCGA:-target/release/patchtcga}
out=bench/out/foundation
mkdir -p "$out"
export PYTHONPATH=bench/.pydeps:.libtorch THREADS=$(nproc)
if [ ! -d bench/.pydeps/timm ]; then
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --target bench/.pydeps --no-deps timm==1.0.31 torchvision==0.28.0
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --target bench/.pydeps safetensors huggingface_hub pyyaml pillow numpy
fi
py="python3 bench/foundation_torch.py"
peak() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }

# A folder of n 224-px patches from the bundled slide.
if [ ! -f "$out/slides.csv" ]; then
  { echo "slide,organ,id"; echo "$PWD/assets/cmu1_small_region.svs,lung,s1"; } > "$out/slides.csv"
  "$bin" build ptcga200 --slides "$out/slides.csv" --out "$out/patches" --size 224 --per-slide "$n" --sampling random > /dev/null
fi
one="$out/one"; mkdir -p "$one"; cp "$(find "$out/patches" -name '*.jpg' | head -1)" "$one/"

echo "## Loading GigaPath's tile encoder (1.13 B parameters, float32 safetensors)"
[ -f "$out/gigapath.safetensors" ] || $py make "$out/gigapath.safetensors" gigapath
size=$(( $(stat -c %s "$out/gigapath.safetensors") / 1048576 ))
t=$(peak $py load "$out/gigapath.safetensors" gigapath)
r=$(peak "$bin" embed --arch gigapath --weights "$out/gigapath.safetensors" --images "$one" --preprocess none --out "$out/one.npy")
echo "| | peak host memory | × file size |"
echo "|---|---|---|"
echo "| file | $size MiB | 1.00 |"
echo "| timm create_model + load_state_dict(load_file) | $((t / 1024)) MiB | $(awk -v a="$t" -v s="$size" 'BEGIN{printf "%.2f", a/1024/s}') |"
echo "| patchtcga embed (load + 1 image) | $((r / 1024)) MiB | $(awk -v a="$r" -v s="$size" 'BEGIN{printf "%.2f", a/1024/s}') |"

echo
echo "## Embedding $n patches with uni (ViT-L/16, 224 px), batch $batch, $THREADS threads"
[ -f "$out/uni.safetensors" ] || $py make "$out/uni.safetensors" uni
f=$($py forward uni "$n" "$batch" | sed -E 's/.*: ([0-9.]+) images.*/\1/')
p=$($py pipeline "$out/patches" uni "$batch" | sed -E 's/.*: ([0-9.]+) images.*/\1/')
ours=$("$bin" embed --arch uni --weights "$out/uni.safetensors" --images "$out/patches" --preprocess none --batch-size "$batch" --workers 1 --out "$out/uni.npy" 2>/dev/null | sed -nE 's/.*: ([0-9.]+) images\/s.*/\1/p')
echo "| | images/s | × timm bare forward |"
echo "|---|---|---|"
echo "| timm bare forward (random tensors) | $f | 1.00 |"
echo "| timm + DataLoader (1 worker) | $p | $(awk -v a="$p" -v b="$f" 'BEGIN{printf "%.2f", a/b}') |"
echo "| patchtcga embed (reading, decoding, forward; after loading) | $ours | $(awk -v a="$ours" -v b="$f" 'BEGIN{printf "%.2f", a/b}') |"
