#!/usr/bin/env bash
# Side-by-side tiling benchmark: `patchtcga build ptcga200` against openslide-python + Pillow +
# NumPy (bench/tile_openslide_python.py), same slides, same machine, one core and all cores.
# Usage: bash bench/tiling.sh [copies of the sample slide, default 24]
set -euo pipefail
cd "$(dirname "$0")/.."
copies=${1:-24}
work=bench/out
rm -rf "$work" && mkdir -p "$work"
cp assets/cmu1_small_region.svs "$work/"
{ echo "slide,organ,id"; for i in $(seq 1 "$copies"); do echo "cmu1_small_region.svs,skin,s$i"; done; } > "$work/slides.csv"
bin=target/release/patchtcga
cores=$(nproc)
echo "| pipeline | workers | patches | seconds | patches/s |"
echo "|---|---|---|---|---|"
for w in 1 "$cores"; do
  read -r n s < <(/usr/bin/python3 bench/tile_openslide_python.py "$work/slides.csv" "$work/py_$w" --workers "$w" | awk '{print $1, $4}')
  echo "| openslide-python + Pillow + NumPy | $w | $n | $s | $(awk -v n="$n" -v s="$s" 'BEGIN{printf "%.1f", n/s}') |"
  py[$w]=$(awk -v n="$n" -v s="$s" 'BEGIN{print n/s}')
  start=$(date +%s.%N)
  "$bin" build ptcga200 --slides "$work/slides.csv" --out "$work/rs_$w" --workers "$w" > /dev/null
  end=$(date +%s.%N)
  n=$(($(wc -l < "$work/rs_$w/manifest.csv") - 1))
  s=$(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.3f", b-a}')
  echo "| patchtcga | $w | $n | $s | $(awk -v n="$n" -v s="$s" 'BEGIN{printf "%.1f", n/s}') |"
  rs[$w]=$(awk -v n="$n" -v s="$s" 'BEGIN{print n/s}')
done
echo
echo "patchtcga / Python: $(awk -v a="${rs[1]}" -v b="${py[1]}" 'BEGIN{printf "%.2f", a/b}')× on 1 core, $(awk -v a="${rs[$cores]}" -v b="${py[$cores]}" 'BEGIN{printf "%.2f", a/b}')× on $cores cores"
echo "patchtcga scaling 1 → $cores cores: $(awk -v a="${rs[$cores]}" -v b="${rs[1]}" 'BEGIN{printf "%.2f", a/b}')×"
