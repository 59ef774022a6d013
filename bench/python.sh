#!/usr/bin/env bash
# The Python package against what notebooks use today, on one core, in one run:
#   800 px level-0 region reads: patchtcga.Slide.read_region vs openslide-python vs cuCIM;
#   a DataLoader (1 worker) of 224 px patches at 0.5 µm/px: SlidePatches vs openslide-python +
#   PIL + torchvision transforms.
# Needs `make python-test` done once (python/.venv with the package) and the 40× bench slide
# (bench/make_40x.sh); installs torchvision (for the PyTorch wheel in .libtorch) and cuCIM's CPU
# reader into that venv.  Usage: bash bench/python.sh [SLIDE]
set -euo pipefail
cd "$(dirname "$0")/.."
SLIDE=${1:-bench/out/cmu1_40x.svs}
[ -f "$SLIDE" ] || bash bench/make_40x.sh
PY=python/.venv/bin/python
PIP="python/.venv/bin/pip install --quiet --disable-pip-version-check"
$PY -c 'import torchvision' 2>/dev/null || $PIP --no-deps torchvision==0.28.0
$PY -c 'import cucim' 2>/dev/null || $PIP cucim-cu12==26.10.0
one() { taskset -c 0 "$PY" "$@"; }
echo "== 800 px level-0 regions, one core ($SLIDE)"
for reader in patchtcga openslide cucim; do one bench/regions_python.py "$SLIDE" --reader $reader --count 300; done
echo "== DataLoader, 224 px at 0.5 µm/px, 1 worker, one core"
for reader in patchtcga openslide; do one bench/slide_patches_python.py "$SLIDE" --reader $reader --count 1024; done
