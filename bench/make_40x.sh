#!/usr/bin/env bash
# A realistic 40× slide for the tiling benchmarks, made from the bundled 20× one with libvips
# (Debian libvips-tools) and libtiff's tiffset: 2× Lanczos upscale, 3 × 3 copies side by side
# (13,320 × 17,802 px, so per-patch work outweighs per-slide work as on real scans), pyramidal tiled TIFF of
# 240 px JPEG tiles (shared tables, YCbCr, as libtiff writes them), an Aperio description with
# MPP = 0.2495 so OpenSlide and patchtcga read it as Aperio SVS (and resolution tags saying the
# same, which cuCIM reads).
# Usage: [TILES=3x3] bash bench/make_40x.sh OUT.svs   (TILES: copies across × down)
set -euo pipefail
out=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
vips extract_band assets/cmu1_small_region.svs "$tmp/rgb.v" 0 --n 3
vips resize "$tmp/rgb.v" "$tmp/up.v" 2 --kernel lanczos3
across=${TILES:-3x3}; down=${across#*x}; across=${across%x*}
vips arrayjoin "$(printf "$tmp/up.v %.0s" $(seq 1 $((across * down))))" "$tmp/big.v" --across "$across"
vips tiffsave "$tmp/big.v" "$out" --compression jpeg --Q 90 --tile --tile-width 240 --tile-height 240 --pyramid --resunit cm --xres 4008.016 --yres 4008.016
read -r w h < <(vipsheader -f width "$tmp/big.v" | tr '\n' ' '; vipsheader -f height "$tmp/big.v")
tiffset -s 270 "Aperio Image Library vbench
${w}x${h} (240x240) JPEG/YCbCr Q=90|AppMag = 40|MPP = 0.2495" "$out"
