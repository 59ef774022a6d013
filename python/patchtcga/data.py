"""Datasets for PyTorch's DataLoader, returning NumPy arrays ``torch.from_numpy`` takes without a
copy: ``SlidePatches`` (patches straight from slides, on the tissue grid ``embed --slides`` uses)
and ``PatchFolder`` (the release's dataset layouts, with the view recipes of pretraining)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np

from . import _native
from ._native import Slide, StainNormalizer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SlidePatches:
    """Patches of ``size`` px at ``mpp`` µm/px read straight from slides, as a map-style dataset.

    Item ``i`` is ``(image, where)``: the patch (HWC ``uint8``, or CHW ``float32`` normalised with
    ``mean``/``std`` when ``normalized``) and ``where`` = int64 ``[slide index, x, y]`` (level-0
    top-left corner). Without ``coords`` each slide's patches are its tissue grid
    (``Slide.tissue_grid``, what ``embed --slides`` embeds); ``coords`` gives an (N, 2) array per
    slide instead; ``stain`` (a ``StainNormalizer``) normalises each patch's stain as
    ``build --stain-normalize`` does. A DataLoader fetching batches (``__getitems__``) reads each batch on the
    reading pool without the GIL. Slides open lazily in each worker process."""

    def __init__(
        self,
        slides: Sequence[str | os.PathLike],
        mpp: float = 0.5,
        size: int = 224,
        coords: Sequence[np.ndarray] | None = None,
        min_tissue: float = 0.5,
        normalized: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        reader: str = "auto",
        stain: StainNormalizer | None = None,
    ):
        self.paths = [os.fspath(p) for p in slides]
        self.stain = stain
        self.mpp, self.size, self.normalized = float(mpp), int(size), bool(normalized)
        self.mean, self.std, self.reader = tuple(mean), tuple(std), reader
        self._slides: tuple[int, list[Slide]] | None = None
        if coords is None:
            grids = [s.tissue_grid(self.mpp, self.size, min_tissue) for s in self._open()]
        else:
            if len(coords) != len(self.paths):
                raise ValueError(f"{len(coords)} coordinate arrays for {len(self.paths)} slides")
            grids = [np.asarray(c, dtype=np.int64).reshape(-1, 2) for c in coords]
        self.index = np.concatenate(
            [np.column_stack([np.full(len(g), k, np.int64), g]) for k, g in enumerate(grids)]
            or [np.empty((0, 3), np.int64)]
        )

    def _open(self) -> list[Slide]:
        """This process's open slides (a forked DataLoader worker opens its own)."""
        if self._slides is None or self._slides[0] != os.getpid():
            self._slides = (os.getpid(), [Slide(p, reader=self.reader) for p in self.paths])
        return self._slides[1]

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_slides"] = None
        return state

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list:
        """The items at ``indices``, read slide by slide on the reading pool."""
        rows = self.index[np.asarray(indices, dtype=np.int64)]
        items: list = [None] * len(rows)
        slides = self._open()
        for k in np.unique(rows[:, 0]):
            at = np.flatnonzero(rows[:, 0] == k)
            corners = np.ascontiguousarray(rows[at, 1:])
            if self.normalized:
                batch = slides[k].read_patches_normalized(
                    corners, self.mpp, self.size, self.mean, self.std, stain=self.stain
                )
            else:
                batch = slides[k].read_patches(corners, self.mpp, self.size, stain=self.stain)
            for j, image in zip(at, batch):  # views of the slide's batch: nothing is copied
                items[j] = (image, rows[j])
        return items


class PatchFolder:
    """A patch dataset in one of the release's layouts (PTCGA200, PCam200, segPANDA200; or the
    original PatchCamelyon ``.h5`` files with ``layout="pcam"`` and ``split``), as a map-style
    dataset whose item ``i`` is ``(views, label)`` — or ``(views, mask, label)`` for
    layouts with label masks — where ``views`` is the one view array, or the list of a
    multi-view recipe's (SimCLR, BYOL, DINO): normalised CHW ``float32``, or HWC ``uint8`` with
    ``normalized=False``. The augmentation of item ``i`` depends only on (``seed``, epoch, ``i``),
    so it is the same in any worker, on any rank, and equals the command-line loader's; call
    ``set_epoch`` each epoch as with ``DistributedSampler``."""

    def __init__(
        self,
        root: str | os.PathLike,
        recipe: str = "eval",
        size: int = 224,
        layout: str | None = None,
        split: str | None = None,
        seed: int = 0,
        normalized: bool = True,
        local_crops: int = 10,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        self.native = _native.PatchFolder(
            os.fspath(root), recipe, size, layout, split, seed, local_crops, tuple(mean), tuple(std)
        )
        self.normalized = normalized
        self.labels = np.asarray(self.native.labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.native)

    def set_epoch(self, epoch: int) -> None:
        """Draws the augmentation of ``epoch`` from now on."""
        self.native.set_epoch(epoch)

    def __getitem__(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} of a dataset of {len(self)}")
        views, mask = self.native.views(i, self.normalized)
        views = views[0] if len(views) == 1 else views
        return (views, self.labels[i]) if mask is None else (views, mask, self.labels[i])


class Shard:
    """An iterable over one share of a map-style dataset: this rank's (of ``world_size``), then,
    inside a DataLoader worker, that worker's — the order PyTorch's ``DistributedSampler`` gives
    (reshuffled by ``seed`` + ``epoch`` when ``shuffle``). Use it as an ``IterableDataset``'s
    iterator, or on its own."""

    def __init__(self, dataset, rank: int = 0, world_size: int = 1, shuffle: bool = False, seed: int = 0, epoch: int = 0):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} of world size {world_size}")
        self.dataset, self.rank, self.world_size = dataset, rank, world_size
        self.shuffle, self.seed, self.epoch = shuffle, seed, epoch

    def indices(self) -> np.ndarray:
        """This rank's and this worker's positions, in order."""
        n = len(self.dataset)
        order = np.random.default_rng(self.seed + self.epoch).permutation(n) if self.shuffle else np.arange(n)
        mine = order[self.rank :: self.world_size]
        worker, workers = _worker()
        return mine[worker::workers]

    def __iter__(self) -> Iterator:
        for i in self.indices():
            yield self.dataset[int(i)]

    def __len__(self) -> int:
        return len(self.indices())


def _worker() -> tuple[int, int]:
    """(this DataLoader worker, number of workers), (0, 1) outside one or without torch."""
    try:
        from torch.utils.data import get_worker_info
    except ImportError:
        return 0, 1
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)
