"""Type stubs of patchtcga's native module."""

from os import PathLike

import numpy as np
import numpy.typing as npt

__version__: str

class OpenSlideError(Exception):
    """A slide could not be opened or read."""

class OpenSlideUnsupportedFormatError(OpenSlideError):
    """The file is not a slide any reader serves."""

def set_threads(threads: int) -> None:
    """Threads of the batch reads (0: one per core)."""

def build(args: list[str]) -> tuple[str, list[str]]:
    """`patchtcga build` with these arguments, in this process: (summary, failures)."""

class StainNormalizer:
    """A stain normaliser ("macenko", "reinhard" or "vahadane") fitted to a target (H, W, 3) uint8 image."""

    def __init__(self, method: str, target: npt.NDArray[np.uint8]) -> None: ...
    def __call__(self, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]: ...
    def to_json(self) -> str: ...
    @staticmethod
    def from_json(text: str) -> StainNormalizer: ...

class Slide:
    """An open whole-slide image (the native reader where it serves the file, else OpenSlide);
    a DICOM series is opened by its folder or any one of its ``.dcm`` files."""

    def __init__(
        self, path: str | PathLike[str], reader: str = "auto", mpp: float | None = None, tile_cache_mb: int = 256
    ) -> None: ...
    @property
    def filename(self) -> str: ...
    @property
    def reader(self) -> str: ...
    @property
    def mpp(self) -> tuple[float, float] | None: ...
    @property
    def mpp_source(self) -> str: ...
    @property
    def level_count(self) -> int: ...
    @property
    def level_dimensions(self) -> list[tuple[int, int]]: ...
    @property
    def level_downsamples(self) -> list[float]: ...
    @property
    def properties(self) -> dict[str, str]: ...
    @property
    def icc_profile(self) -> bytes | None: ...
    @property
    def associated_image_names(self) -> list[str]: ...
    def associated_image(self, name: str) -> npt.NDArray[np.uint8]:
        """(H, W, 4) RGBA."""
    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> npt.NDArray[np.uint8]:
        """(H, W, 3) RGB from level-0 corner (x, y); white outside the slide."""
    def read_region_rgba(self, x: int, y: int, level: int, width: int, height: int) -> npt.NDArray[np.uint8]:
        """(H, W, 4) straight-alpha RGBA from level-0 corner (x, y); transparent outside the slide."""
    def read_regions(
        self, coords: npt.NDArray[np.int64], level: int, width: int, height: int
    ) -> npt.NDArray[np.uint8]:
        """(N, H, W, 3) RGB at the (N, 2) level-0 corners, read on the thread pool."""
    def read_patches(
        self, coords: npt.NDArray[np.int64], mpp: float, size: int, stain: StainNormalizer | None = None
    ) -> npt.NDArray[np.uint8]:
        """(N, size, size, 3) patches at `mpp` µm/px, as `embed --slides` reads them."""
    def read_patches_normalized(
        self,
        coords: npt.NDArray[np.int64],
        mpp: float,
        size: int,
        mean: tuple[float, float, float] = ...,
        std: tuple[float, float, float] = ...,
        stain: StainNormalizer | None = None,
    ) -> npt.NDArray[np.float32]:
        """(N, 3, size, size) float32, scaled to [0, 1] and standardised."""
    def overview(self, downsample: float) -> tuple[npt.NDArray[np.uint8], float]:
        """(H, W, 3) view of the whole slide and its exact downsample."""
    def tissue_mask(self, mask_mpp: float = 8.0, keep_ink: bool = False) -> tuple[npt.NDArray[np.bool_], float]:
        """(H, W) tissue mask and its downsample."""
    def tissue_grid(
        self, mpp: float, size: int, min_tissue: float = 0.5, roi: str | PathLike[str] | None = None
    ) -> npt.NDArray[np.int64]:
        """(N, 2) level-0 corners of the tissue grid `embed --slides` embeds, row by row."""
    def level_for_downsample(self, downsample: float) -> int: ...

class PatchFolder:
    """A patch dataset in one of the release's layouts, read with a view recipe."""

    def __init__(
        self,
        root: str | PathLike[str],
        recipe: str = "eval",
        size: int = 224,
        layout: str | None = None,
        split: str | None = None,
        seed: int = 0,
        local_crops: int = 10,
        mean: tuple[float, float, float] = ...,
        std: tuple[float, float, float] = ...,
    ) -> None: ...
    def __len__(self) -> int: ...
    @property
    def layout(self) -> str: ...
    @property
    def labels(self) -> list[int]: ...
    @property
    def label_names(self) -> list[str]: ...
    @property
    def paths(self) -> list[str]: ...
    @property
    def views_per_sample(self) -> int: ...
    def set_epoch(self, epoch: int) -> None: ...
    def views(
        self, index: int, normalized: bool = True
    ) -> tuple[list[npt.NDArray[np.float32] | npt.NDArray[np.uint8]], npt.NDArray[np.uint8] | None]: ...
