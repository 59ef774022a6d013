#!/usr/bin/env bash
# Stain normalisation against torchstain's NumPy backend, one core each, same run: a 512 px H&E
# patch of the bundled slide normalised to another (`patchtcga bench stain`,
# bench/stain_torchstain.py). Prints a markdown table with patches/s and the ratio.
# Usage: bash bench/stain.sh [seconds per measurement, default 3]
# Needs a release build of patchtcga and Debian's python3-openslide python3-numpy python3-pil;
# torchstain is pip-installed into bench/out/torchstain.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-3}
work=bench/out/stain
bin=${PATCHTCGA:-target/release/patchtcga}
mkdir -p "$work"
[ -d bench/out/torchstain/torchstain ] || PIP_BREAK_SYSTEM_PACKAGES=1 /usr/bin/python3 -m pip install --quiet \
  --disable-pip-version-check --no-cache-dir --no-deps --target bench/out/torchstain torchstain==1.4.1
/usr/bin/python3 - "$work" <<'PY'
import sys, openslide
s = openslide.OpenSlide("assets/cmu1_small_region.svs")
for name, (x, y) in {"target": (700, 700), "patch": (1100, 1500)}.items():
    s.read_region((x, y), 0, (512, 512)).convert("RGB").save(f"{sys.argv[1]}/{name}.png")
PY
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=$PWD/bench/out/torchstain
echo "| method | torchstain (NumPy) patches/s | patchtcga patches/s | ratio |"
echo "|---|---|---|---|"
for method in macenko reinhard; do
  theirs=$(/usr/bin/python3 bench/stain_torchstain.py --method "$method" --target "$work/target.png" --image "$work/patch.png" --seconds "$seconds" | awk '{print $1}')
  ours=$("$bin" bench stain --method "$method" --target "$work/target.png" --image "$work/patch.png" --seconds "$seconds" | awk '{print $2}')
  echo "| $method | $theirs | $ours | $(awk -v a="$ours" -v b="$theirs" 'BEGIN{printf "%.1f×", a/b}') |"
done
# Vahadane: torchstain has none, and staintools' needs SPAMS (which does not install here).
ours=$("$bin" bench stain --method vahadane --target "$work/target.png" --image "$work/patch.png" --seconds "$seconds" | awk '{print $2}')
echo "| vahadane | (none) | $ours | |"
