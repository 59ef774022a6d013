# patchtcga — set-up and everyday commands. `make demo` and `make test` install what they need.
SHELL := /bin/bash
.DEFAULT_GOAL := demo

# Debian packages: OpenSlide (slide reading), libturbojpeg (JPEG coding), HDF5 (the original PCam
# files), libclang + pkg-config (binding generation), libgloo-dev (the Gloo headers the torch wheel
# leaves out, for the distributed shim), python3 (the split-pickle round-trip test).
APT_PACKAGES := libopenslide-dev libturbojpeg0-dev libhdf5-dev libclang-dev libgloo-dev pkg-config python3 ca-certificates curl build-essential
# Headless Chromium renders the HTML report in its test.
TEST_PACKAGES := chromium
# Extra packages for the side-by-side benchmarks against the Python tools (libvips and tiffset make
# the 40× bench slide).
BENCH_PACKAGES := python3-openslide python3-numpy python3-pil libvips-tools libtiff-tools
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# LibTorch for the networks: the PyPI torch wheel (CPU + CUDA 13), unpacked into .libtorch/ with
# pip --target (no virtualenv). .cargo/config.toml points tch at it and sets the binaries' rpath.
TORCH_VERSION := 2.13.0
LIBTORCH := .libtorch/torch/lib/libtorch_cpu.so
CUDA_HEADERS := .libtorch/.cuda-headers
BIN := target/release/patchtcga
DEMO := out/demo

define apt_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
endef

.PHONY: deps rust demo test python-test lint bench bench-loader clean

deps: $(LIBTORCH) $(CUDA_HEADERS)
	$(call apt_install,$(APT_PACKAGES))

# The wheel, then its requirements except triton (the GPU compiler of torch.compile, which LibTorch
# never loads), without pip's cache: ~4 GB of disk instead of ~9.
PIP := PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check --no-cache-dir --target .libtorch
$(LIBTORCH):
	$(call apt_install,python3-pip)
	$(PIP) --no-deps torch==$(TORCH_VERSION)
	$(PIP) $$(sed -n '/extra ==/d; /triton/d; s/^Requires-Dist: \([^;]*\).*/\1/p' .libtorch/torch-$(TORCH_VERSION).dist-info/METADATA)

# CUDA's C++ headers that the wheel's CUDA runtime leaves out (crt/, and cccl's nv/), of its CUDA
# version, for the NCCL process group in the distributed shim (~3 MB). The wheels are unpacked
# over .libtorch/: pip --target would replace the whole nvidia/ folder.
# A wheel without CUDA (no CUDA runtime beside it) needs none.
$(CUDA_HEADERS): $(LIBTORCH)
	rm -rf .libtorch/.wheels
	cuda=$$(ls -d .libtorch/nvidia_cuda_runtime-*.dist-info 2>/dev/null | sed 's/.*runtime-\([0-9]*\.[0-9]*\)\..*/\1/'); \
	if [ -n "$$cuda" ]; then \
	  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip download --quiet --disable-pip-version-check --no-cache-dir --no-deps \
	    -d .libtorch/.wheels "nvidia-cuda-crt==$$cuda.*" "nvidia-cuda-cccl==$$cuda.*" && \
	  for w in .libtorch/.wheels/*.whl; do python3 -m zipfile -e $$w .libtorch || exit 1; done; \
	fi
	rm -rf .libtorch/.wheels
	touch $@

# Rust from rustup when the machine has none (Debian's own cargo is too old for the crates used).
rust:
	@command -v cargo >/dev/null || [ -x "$$HOME/.cargo/bin/cargo" ] || \
	  (curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal)

$(BIN): deps rust $(shell find crates -name '*.rs' -o -name Cargo.toml) Cargo.toml
	PATH="$$HOME/.cargo/bin:$$PATH" cargo build --release -p patchtcga-cli -p patchtcga-nn

# Tile the bundled sample slide into a PTCGA200-layout dataset, then summarise it.
demo: $(BIN)
	rm -rf $(DEMO)
	$(BIN) info assets/cmu1_small_region.svs
	$(BIN) build ptcga200 --slides assets/demo_slides.csv --out $(DEMO)/PTCGA200
	$(BIN) stats $(DEMO)/PTCGA200 --mosaic $(DEMO)/mosaic.png
	$(BIN) build pcam200 --slides assets/demo_pcam200.csv --out $(DEMO)/PCam200 --size 128 --field-um 100 --sampling random --per-slide 40 --seed 1
	$(BIN) pretrain --config configs/demo_simclr_resnet18.toml
	$(BIN) finetune --config configs/demo_pcam200_resnet18.toml --init $(DEMO)/runs/demo_simclr_resnet18/model.safetensors
	$(BIN) finetune --config configs/demo_pcam200_resnet18.toml --init none --set 'name="demo_pcam200_resnet18_scratch"'
	$(BIN) embed --arch resnet18 --image-size 64 --weights $(DEMO)/runs/demo_simclr_resnet18/model.safetensors --images $(DEMO)/PCam200 --out $(DEMO)/pcam200_simclr.npy
	$(BIN) probe --dataset $(DEMO)/PCam200 --features $(DEMO)/pcam200_simclr.npy --out $(DEMO)/probe.json
	$(BIN) embed --slides assets/demo_slides.csv --arch resnet18 --image-size 64 --mpp 1.0 --weights $(DEMO)/runs/demo_simclr_resnet18/model.safetensors --out $(DEMO)/slide_features
	$(BIN) infer --arch resnet18 --image-size 64 --field-um 64 --weights $(DEMO)/runs/demo_pcam200_resnet18/model.safetensors --slide assets/cmu1_small_region.svs --out $(DEMO)/heatmap.png
	$(BIN) embed --slides assets/demo_bags/slides.csv --coords assets/demo_bags --arch resnet18 --image-size 64 --mpp 1.0 --weights $(DEMO)/runs/demo_simclr_resnet18/model.safetensors --out $(DEMO)/bag_features
	$(BIN) mil train --features $(DEMO)/bag_features --labels assets/demo_bags/labels.csv --folds 3 --epochs 20 --out $(DEMO)/runs/demo_mil
	$(BIN) infer --mil $(DEMO)/runs/demo_mil --weights $(DEMO)/runs/demo_simclr_resnet18/model.safetensors --slide assets/cmu1_small_region.svs --out $(DEMO)/mil_heatmap.png
	$(BIN) report $(DEMO)/runs --out $(DEMO)/report.html
	@echo "look at: $(DEMO)/report.html (every run: table, curves, confusion matrices), $(DEMO)/heatmap.png (the fine-tuned classifier over the slide),"
	@echo "         $(DEMO)/mil_heatmap.png (slide-level attention), $(DEMO)/PTCGA200/thumbnail_position_map/ (where patches came from),"
	@echo "         $(DEMO)/mosaic.png, $(DEMO)/probe.json"

# Reference readers the tests compare with (pip --target, no venv): TensorBoard's event reader
# for our event files, shapely for the GeoJSON we write.
PYTOOLS := .pytools/shapely
$(PYTOOLS):
	$(call apt_install,python3-pip)
	PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check --no-cache-dir --target .pytools tensorboard==2.20.0 shapely==2.1.2

test: deps rust $(PYTOOLS)
	$(call apt_install,$(TEST_PACKAGES))
	PATH="$$HOME/.cargo/bin:$$PATH" PATCHTCGA_REQUIRE_CHROMIUM=1 PATCHTCGA_REQUIRE_SHAPELY=1 cargo test --workspace --no-fail-fast
	@echo "the reference-parity tests again on LibTorch's and MKL's baseline kernels (no AVX), as any x86-64 CPU runs them:"
	PATH="$$HOME/.cargo/bin:$$PATH" ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 \
	  cargo test --workspace --test parity --test foundation --test cnn --test mil --test slide_encoders --no-fail-fast -- match
	$(MAKE) python-test

# The Python package (`pip install ./python`) in a virtual environment of its own, with what its
# tests compare against: openslide-python (on Debian's OpenSlide), tifffile for fixtures, h5py,
# wsidicomizer and wsidicom (DICOM conversion and reading), and PyTorch's DataLoader from the
# LibTorch wheel already unpacked in .libtorch/ (a .pth line).
PYVENV := python/.venv
PYTEST_PACKAGES := pytest==9.2.0 numpy==2.4.6 pillow==13.0.0 openslide-python==1.4.7 h5py==3.16.0 tifffile==2026.3.3 \
  wsidicomizer==0.26.1 wsidicom==0.31.0
$(PYVENV)/bin/pytest: $(LIBTORCH)
	$(call apt_install,python3-venv)
	python3 -m venv $(PYVENV)
	$(PYVENV)/bin/pip install --quiet --disable-pip-version-check $(PYTEST_PACKAGES)
	echo "$(CURDIR)/.libtorch" > "$$($(PYVENV)/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/libtorch.pth"

python-test: deps rust $(PYVENV)/bin/pytest
	PATH="$$HOME/.cargo/bin:$$PATH" $(PYVENV)/bin/pip install --quiet --disable-pip-version-check ./python
	PATH="$$HOME/.cargo/bin:$$PATH" cargo build --quiet -p patchtcga-cli
	cd python && PATCHTCGA_CLI=$(CURDIR)/target/debug/patchtcga .venv/bin/pytest -q tests

# Formatting and lints, as CI checks them.
lint: rust
	@PATH="$$HOME/.cargo/bin:$$PATH"; cargo clippy --version >/dev/null 2>&1 && cargo fmt --version >/dev/null 2>&1 || \
	  rustup component add clippy rustfmt
	PATH="$$HOME/.cargo/bin:$$PATH" cargo fmt --all -- --check
	PATH="$$HOME/.cargo/bin:$$PATH" cargo clippy --workspace --all-targets -- -D warnings

bench: $(BIN)
	$(call apt_install,$(BENCH_PACKAGES))
	bash bench/tiling.sh 4

clean:
	rm -rf target out bench/out runs

# Loader against a torchvision DataLoader (pip-installs torchvision into bench/.venv once).
bench-loader: $(BIN)
	$(call apt_install,$(BENCH_PACKAGES) python3-venv)
	bash bench/loader.sh
