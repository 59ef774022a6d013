"""The slide feature files ``embed --slides`` writes (CLAM's ``.h5`` layout), read into NumPy."""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np


class Features(NamedTuple):
    """One slide's patch features."""

    features: np.ndarray
    """(N, D) float32, one row per patch."""
    coords: np.ndarray
    """(N, 2) int64 level-0 top-left corners (x, y)."""
    attrs: dict
    """The file's attributes: ``mpp``, ``patch_size``, ``level``, ``model``, ``weights_md5``…"""


def read_features(path: str | os.PathLike) -> Features:
    """Reads an ``.h5`` feature file of ``embed --slides`` (needs ``h5py``)."""
    try:
        import h5py
    except ImportError as exc:
        raise ImportError("read_features needs h5py: pip install h5py") from exc
    path = os.fspath(path)
    with h5py.File(path, "r") as f:
        missing = [k for k in ("features", "coords") if k not in f]
        if missing:
            raise ValueError(f"{path}: no {' or '.join(missing)} dataset (not a feature file of embed --slides)")
        attrs = {k: (v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
        return Features(np.asarray(f["features"], np.float32), np.asarray(f["coords"], np.int64), attrs)
