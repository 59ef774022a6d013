#!/usr/bin/env bash
# Side-by-side tiling benchmark on a realistic 40× slide (bench/make_40x.sh): `patchtcga build
# ptcga200` (native reader, and --reader openslide) against the Python pipeline
# (bench/tile_openslide_python.py) on openslide-python and on cuCIM, one core and all cores, same
# run; then 800 px region reads per reader on one core (`patchtcga bench regions`,
# bench/regions_python.py). Prints markdown tables with patches/s, regions/s, peak memory, ratios.
# Usage: bash bench/tiling.sh [copies of the 40× slide, default 4]
# Needs `make deps`, a release build, Debian's libvips-tools libtiff-tools python3-openslide
# python3-numpy python3-pil; cuCIM (CPU path) is pip-installed into bench/out/cucim unless CUCIM=0.
set -euo pipefail
cd "$(dirname "$0")/.."
copies=${1:-4}
work=bench/out/tiling
bin=target/release/patchtcga
cores=$(nproc)
mkdir -p "$work"
[ -f "$work/cmu1_40x.svs" ] || bash bench/make_40x.sh "$work/cmu1_40x.svs"
{ echo "slide,organ,id"; for i in $(seq 1 "$copies"); do echo "cmu1_40x.svs,skin,s$i"; done; } > "$work/slides.csv"
py=(/usr/bin/python3)
if [ "${CUCIM:-1}" = 1 ]; then
  [ -d bench/out/cucim/cucim ] || PIP_BREAK_SYSTEM_PACKAGES=1 /usr/bin/python3 -m pip install --quiet \
    --disable-pip-version-check --no-cache-dir --target bench/out/cucim cucim-cu12
  export PYTHONPATH=$PWD/bench/out/cucim
fi

# "patches seconds peak_MiB" of one run.
timed() { /usr/bin/time -f "%e %M" -o "$work/time" "$@" > "$work/log" 2>&1; read -r s kb < "$work/time"; echo "$s $((kb / 1024))"; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN{printf "%.1f", n/s}'; }

echo "| pipeline | reader | workers | patches | seconds | patches/s | peak MiB |"
echo "|---|---|---|---|---|---|---|"
declare -A r
for w in 1 "$cores"; do
  for reader in native openslide; do
    rm -rf "$work/rs"
    read -r s mb < <(timed "$bin" build ptcga200 --slides "$work/slides.csv" --out "$work/rs" --workers "$w" --reader "$reader")
    n=$(($(wc -l < "$work/rs/manifest.csv") - 1))
    r[rs_${reader}_$w]=$(rate "$n" "$s")
    echo "| patchtcga build | $reader | $w | $n | $s | ${r[rs_${reader}_$w]} | $mb |"
  done
  for reader in openslide $([ "${CUCIM:-1}" = 1 ] && echo cucim); do
    rm -rf "$work/py"
    read -r s mb < <(timed "${py[@]}" bench/tile_openslide_python.py "$work/slides.csv" "$work/py" --workers "$w" --reader "$reader")
    n=$(find "$work/py" -name '*.jpg' | wc -l)
    r[py_${reader}_$w]=$(rate "$n" "$s")
    echo "| Python + Pillow + NumPy | $reader | $w | $n | $s | ${r[py_${reader}_$w]} | $mb (main process) |"
  done
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
echo
echo "patchtcga (native) / Python on openslide-python: $(ratio "${r[rs_native_1]}" "${r[py_openslide_1]}")× on 1 core, $(ratio "${r[rs_native_$cores]}" "${r[py_openslide_$cores]}")× on $cores cores"
[ -n "${r[py_cucim_1]:-}" ] && echo "patchtcga (native) / Python on cuCIM: $(ratio "${r[rs_native_1]}" "${r[py_cucim_1]}")× on 1 core, $(ratio "${r[rs_native_$cores]}" "${r[py_cucim_$cores]}")× on $cores cores"
echo "patchtcga native / patchtcga on OpenSlide: $(ratio "${r[rs_native_1]}" "${r[rs_openslide_1]}")× on 1 core"
echo "patchtcga scaling 1 → $cores cores: $(ratio "${r[rs_native_$cores]}" "${r[rs_native_1]}")×"
echo
# Region reads: the whole grid of 800 px regions, once, one thread.
read -r w h < <("$bin" info "$work/cmu1_40x.svs" | sed -n 's/.*: \([0-9]*\) × \([0-9]*\) px,.*/\1 \2/p' | head -1)
count=$(((w / 800) * (h / 800)))
echo "| reader | 800 px regions/s (1 core) | peak MiB |"
echo "|---|---|---|"
for reader in native openslide; do
  line=$("$bin" bench regions "$work/cmu1_40x.svs" --reader "$reader" --count "$count")
  echo "| patchtcga $reader | $(sed 's/.*: \([0-9.]*\) regions\/s.*/\1/' <<< "$line") | $(sed 's/.*peak memory \([0-9]*\) MiB.*/\1/' <<< "$line") |"
done
for reader in openslide $([ "${CUCIM:-1}" = 1 ] && echo cucim); do
  line=$("${py[@]}" bench/regions_python.py "$work/cmu1_40x.svs" --reader "$reader" --count "$count")
  echo "| Python $reader | $(sed 's/.*: \([0-9.]*\) regions\/s.*/\1/' <<< "$line") | $(sed 's/.*peak memory \([0-9]*\) MiB.*/\1/' <<< "$line") |"
done
