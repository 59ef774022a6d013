#!/usr/bin/env bash
# Slide features side by side: `patchtcga embed --slides` against the pipeline CLAM and TRIDENT
# users run (openslide-python reads of the same tissue grid in a torch DataLoader, Pillow
# Lanczos, timm ViT; bench/embed_slides_torch.py), on copies of the realistic 40× slide
# (bench/make_40x.sh), same machine, threads and batch. Prints a markdown table: the network's
# bare forward rate, each pipeline's patches/s and slides/s as a fraction of it, each reading
# path alone, and on CUDA how busy the GPU was (nvidia-smi's utilization, sampled every 100 ms).
# Usage: bash bench/embed_slides.sh [copies, default 2] [batch, default 32] [device, default cpu]
#        [model: vit-s16 (default) or uni] [DataLoader workers, default 1] [amp]
# Environment: PATCHTCGA (the binary), SLIDE (a 40× slide made beforehand), PYTHON, READ=0 to
# leave out the reading-path rows, PY=0 the Python pipeline's row.
set -euo pipefail
cd "$(dirname "$0")/.."
copies=${1:-2}
batch=${2:-32}
device=${3:-cpu}
model=${4:-vit-s16}
pyworkers=${5:-1}
amp=${6:-}
bin=${PATCHTCGA:-target/release/patchtcga}
py=(${PYTHON:-python3} bench/embed_slides_torch.py)
work=bench/out/embed_slides
mkdir -p "$work"
slide=${SLIDE:-bench/out/tiling/cmu1_40x.svs}
[ -f "$slide" ] || bash bench/make_40x.sh "$slide"
slide=$(realpath "$slide")
{ echo "slide,organ,id"; for i in $(seq 1 "$copies"); do echo "$slide,skin,s$i"; done; } > "$work/slides.csv"
[ -f "$work/$model.safetensors" ] || "${py[@]}" make "$work/$model.safetensors" "$model"
cores=$(nproc)
threads=${THREADS:-$cores}
export THREADS=$threads
arch=$([ "$model" = uni ] && echo uni || echo vit-s16)

# GPU busy share while a command runs: the mean of nvidia-smi's utilization.gpu samples.
busy() {
  if [[ $device != cuda* ]]; then "$@"; echo "busy -"; return; fi
  nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 100 > "$work/util" &
  local smi=$!
  "$@"
  kill "$smi"; wait "$smi" 2> /dev/null || true
  # Samples from the first busy one to the last: the model's loading and start-up are left out.
  awk '{v[NR]=$1} END{f=0; for(i=1;i<=NR;i++) if(v[i]>0){f=i;break}; l=0; for(i=NR;i>=1;i--) if(v[i]>0){l=i;break};
       s=0; for(i=f;i<=l;i++) s+=v[i]; printf "busy %.0f\n", (l>=f && f>0) ? s/(l-f+1) : 0}' "$work/util"
}
num() { sed -nE "s|.*$1.*|\\1|p" | tail -1; }

rm -rf "$work/h5"
ours=$(busy "$bin" embed --slides "$work/slides.csv" --arch "$arch" --weights "$work/$model.safetensors" \
  --mpp 0.5 --image-size 224 --batch-size "$batch" --workers "$cores" --device "$device" \
  ${amp:+--autocast} --out "$work/h5" 2> /dev/null)
ours_rate=$(echo "$ours" | num ': ([0-9.]+) patches/s')
ours_slides=$(echo "$ours" | num ', ([0-9.]+) slides/s')
ours_busy=$(echo "$ours" | num 'busy ([0-9-]+)')
patches=$(echo "$ours" | num 'embedded ([0-9]+) patches')
bare=$("${py[@]}" forward "$model" "$((batch * 8))" "$batch" "$device" $amp | num ': ([0-9.]+) images/s')
theirs=$([ "${PY:-1}" = 0 ] || busy "${py[@]}" pipeline "$work/h5" "$work/slides.csv" "$model" "$pyworkers" "$batch" "$device" $amp)
theirs_rate=$(echo "$theirs" | num ': ([0-9.]+) patches/s')
theirs_slides=$(echo "$theirs" | num ', ([0-9.]+) slides/s')
theirs_busy=$(echo "$theirs" | num 'busy ([0-9-]+)')
if [ "${READ:-1}" = 1 ]; then
read_ours() { "$bin" bench slide-patches --slides "$work/slides.csv" --mpp 0.5 --image-size 224 --batch-size "$batch" \
  --workers "$1" | num ': ([0-9.]+) patches/s'; }
read_one=$(read_ours 1)
read_all=$(read_ours "$cores")
read_theirs=$("${py[@]}" read "$work/h5" "$work/slides.csv" "$pyworkers" "$batch" | num ', ([0-9.]+) patches/s')
fi
x() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }

echo "$copies × $(basename "$slide") ($patches patches at 0.5 µm/px, 224 px), $model, batch $batch, $device${amp:+ (autocast fp16)}, $threads threads"
echo
echo "| | patches/s | slides/s | × bare forward | GPU busy % |"
echo "|---|---|---|---|---|"
echo "| timm bare forward (random tensors) | $bare | | 1.00 | |"
[ "${PY:-1}" = 0 ] || echo "| openslide-python DataLoader ($pyworkers worker(s)) + timm | $theirs_rate | $theirs_slides | $(x "$theirs_rate" "$bare") | $theirs_busy |"
echo "| \`patchtcga embed --slides\` | $ours_rate | $ours_slides | $(x "$ours_rate" "$bare") | $ours_busy |"
[ "${READ:-1}" = 1 ] || exit 0
echo
echo "| reading path alone | patches/s | × openslide-python |"
echo "|---|---|---|"
echo "| openslide-python DataLoader ($pyworkers worker(s)) | $read_theirs | 1.00 |"
echo "| \`patchtcga bench slide-patches\` (1 thread) | $read_one | $(x "$read_one" "$read_theirs") |"
echo "| \`patchtcga bench slide-patches\` ($cores threads) | $read_all | $(x "$read_all" "$read_theirs") |"
