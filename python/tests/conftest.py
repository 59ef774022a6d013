"""Fixtures: the bundled Aperio sample, and a pyramidal tiled TIFF written here with tifffile."""

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "assets" / "cmu1_small_region.svs"


@pytest.fixture(scope="session")
def sample() -> str:
    return str(SAMPLE)


def _tissue(h: int, w: int) -> np.ndarray:
    """A pink, textured blob on white: tissue the mask finds, detail the resampling shows."""
    yy, xx = np.mgrid[0:h, 0:w]
    inside = ((yy - h / 2) / (h / 3)) ** 2 + ((xx - w / 2) / (w / 3)) ** 2 < 1
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 60, size=(h, w, 1))
    pink = np.concatenate([200 - noise, 90 + noise // 2, 160 - noise], axis=2)
    image = np.full((h, w, 3), 245, np.uint8)
    image[inside] = pink[inside]
    return image


@pytest.fixture(scope="session")
def pyramid(tmp_path_factory) -> str:
    """A three-level tiled TIFF (Deflate tiles, 0.25 µm/px in its resolution tags), levels as
    consecutive IFDs: OpenSlide's generic-tiff, the native reader's generic flavour."""
    import tifffile

    path = tmp_path_factory.mktemp("slides") / "pyramid.tif"
    level = _tissue(2048, 3072)
    with tifffile.TiffWriter(path) as tif:
        for k in range(3):
            px_per_cm = 1e4 / (0.25 * 2**k)
            tif.write(
                level,
                tile=(256, 256),
                compression="zlib",
                photometric="rgb",
                resolution=(px_per_cm, px_per_cm),
                resolutionunit="CENTIMETER",
                subfiletype=0 if k == 0 else 1,
            )
            level = level.reshape(level.shape[0] // 2, 2, level.shape[1] // 2, 2, 3).mean(axis=(1, 3)).astype(np.uint8)
    return str(path)
