#!/usr/bin/env bash
# DICOM region reads on one core, in one run: the 40× bench slide converted by wsidicomizer (its
# JPEG tiles carried over), read as 800 px level-0 regions by patchtcga's Python package, by
# wsidicom, and by OpenSlide 4 (openslide-python on the openslide-bin wheel, in a venv of its own,
# since Debian's OpenSlide 3.4 reads no DICOM), and patchtcga on the SVS itself. Three interleaved
# rounds, the best of each.
# Needs `make python-test` done once (python/.venv with the package).
# Usage: bash bench/dicom.sh [SLIDE.svs]
set -euo pipefail
cd "$(dirname "$0")/.."
SLIDE=${1:-bench/out/cmu1_40x.svs}
[ -f "$SLIDE" ] || { mkdir -p "$(dirname "$SLIDE")" && bash bench/make_40x.sh "$SLIDE"; }
PY=${PY:-python/.venv/bin/python}
PIP="$(dirname "$PY")/pip install --quiet --disable-pip-version-check"
$PY -c 'import wsidicomizer' 2>/dev/null || $PIP wsidicomizer==0.26.1 wsidicom==0.31.0
OS4=bench/.venv-openslide4
[ -x $OS4/bin/python ] || { python3 -m venv $OS4 && $OS4/bin/pip install --quiet openslide-python==1.4.7 openslide-bin==4.0.1.2 numpy==2.4.6; }
SERIES=${SLIDE%.*}-dicom
if [ ! -d "$SERIES" ]; then
  TURBOJPEG=/usr/lib/x86_64-linux-gnu $PY - "$SLIDE" "$SERIES" <<'PY'
import ctypes.util, sys
import opentile.jpeg.jpeg as j
def find_library(name):  # raises on some Python builds; opentile then uses $TURBOJPEG
    try:
        return ctypes.util.find_library(name)
    except OSError:
        return None
j.find_library = find_library
from wsidicomizer import WsiDicomizer
# Level 0 only, 240 px frames as the SVS's tiles (opentile fails on the reduced levels and the
# untiled images libvips writes).
WsiDicomizer.convert(sys.argv[1], sys.argv[2], tile_size=240, include_levels=[0], include_thumbnail=False,
                      include_label=False, include_overview=False)
PY
fi
# OpenSlide 4 opens a series by one of its files: the finest level's, the largest.
LEVEL0=$(ls -S "$SERIES"/*.dcm | head -1)
out=$(mktemp)
echo "== 800 px level-0 regions of a DICOM series, one core ($SERIES)"
for round in 1 2 3; do
  taskset -c 0 $PY bench/regions_python.py "$SERIES" --reader patchtcga --count 300 | tee -a "$out"
  taskset -c 0 $PY bench/regions_python.py "$SERIES" --reader wsidicom --count 300 | tee -a "$out"
  taskset -c 0 $OS4/bin/python bench/regions_python.py "$LEVEL0" --reader openslide --count 300 | sed 's/^openslide/openslide4/' | tee -a "$out"
  taskset -c 0 $PY bench/regions_python.py "$SLIDE" --reader patchtcga --count 300 | sed 's/^patchtcga/patchtcga-svs/' | tee -a "$out"
done
best() { grep "^$1:" "$out" | sed 's/^[^:]*: [^:]*: \([0-9.]*\) regions\/s.*/\1/' | sort -g | tail -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
p=$(best patchtcga); w=$(best wsidicom); o=$(best openslide4); s=$(best patchtcga-svs)
echo "best of 3: regions/s patchtcga $p, wsidicom $w, OpenSlide 4 $o: $(ratio "$p" "$w")× wsidicom, $(ratio "$p" "$o")× OpenSlide 4;" \
  "patchtcga on the SVS the series was converted from $s ($(ratio "$p" "$s")× of it)"
rm -f "$out"
