#!/usr/bin/env bash
# The Python package against what notebooks use today, on one core, in one run:
#   800 px level-0 region reads: patchtcga.Slide.read_region vs openslide-python vs cuCIM;
#   a DataLoader (1 worker) of 224 px patches at 0.5 µm/px: SlidePatches vs openslide-python +
#   PIL + torchvision transforms (SlidePatches handing over normalised float32, and uint8).
# Needs `make python-test` done once (python/.venv with the package) and the 40× bench slide
# (bench/make_40x.sh); installs torchvision (for the PyTorch wheel in .libtorch) and cuCIM's CPU
# reader into that venv.  Usage: bash bench/python.sh [SLIDE]
set -euo pipefail
cd "$(dirname "$0")/.."
SLIDE=${1:-bench/out/cmu1_40x.svs}
[ -f "$SLIDE" ] || { mkdir -p "$(dirname "$SLIDE")" && bash bench/make_40x.sh "$SLIDE"; }
PY=python/.venv/bin/python
PIP="python/.venv/bin/pip install --quiet --disable-pip-version-check"
$PY -c 'import torchvision' 2>/dev/null || $PIP --no-deps torchvision==0.28.0
$PY -c 'import cucim' 2>/dev/null || $PIP cucim-cu12==26.10.0
one() { taskset -c 0 "$PY" "$@"; }
# Readers take turns, three rounds; the best round of each is compared (this machine's speed drifts
# by more than the readers differ from round to round).
best() { grep "^$1:" "$2" | sed 's/^[^:]*: [^:]*: \([0-9.]*\) \(regions\|patches\)\/s.*/\1/' | sort -g | tail -1; }
steady() { grep "^$1:" "$2" | sed 's/.*first reads) \([0-9.]*\) patches\/s.*/\1/' | sort -g | tail -1; }
out=$(mktemp)
echo "== 800 px level-0 regions, one core ($SLIDE)"
for round in 1 2 3; do
  for reader in patchtcga openslide cucim; do one bench/regions_python.py "$SLIDE" --reader $reader --count 300 | tee -a "$out"; done
done
echo "== DataLoader, 224 px at 0.5 µm/px, 1 worker, one core"
for round in 1 2 3; do
  for reader in patchtcga patchtcga-u8 openslide; do one bench/slide_patches_python.py "$SLIDE" --reader $reader --count 1024 | sed 's/^/loader-/' | tee -a "$out"; done
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
p=$(best patchtcga "$out"); o=$(best openslide "$out"); c=$(best cucim "$out")
lp=$(best loader-patchtcga "$out"); lu=$(best loader-patchtcga-u8 "$out"); lo=$(best loader-openslide "$out")
sp=$(steady loader-patchtcga "$out"); su=$(steady loader-patchtcga-u8 "$out"); so=$(steady loader-openslide "$out")
echo "best of 3: regions/s patchtcga $p, openslide-python $o, cuCIM $c: $(ratio "$p" "$o")× openslide-python, $(ratio "$p" "$c")× cuCIM"
echo "best of 3: DataLoader patches/s SlidePatches $lp (float32, normalised; $lu uint8), openslide-python + PIL + torchvision $lo: $(ratio "$lp" "$lo")× ($(ratio "$lu" "$lo")× uint8)"
echo "best of 3, after the first batch: SlidePatches $sp (uint8 $su), openslide-python + PIL + torchvision $so: $(ratio "$sp" "$so")× ($(ratio "$su" "$so")× uint8)"
rm -f "$out"
