"""patchtcga from Python: whole-slide images through openslide-python's API (``import patchtcga
as openslide`` runs existing scripts), NumPy arrays without PIL, batch reads on a thread pool, the
tissue grid the command line embeds, and datasets for PyTorch's DataLoader."""

from ._native import (
    OpenSlideError,
    OpenSlideUnsupportedFormatError,
    Slide,
    StainNormalizer,
    __version__,
    set_threads,
)
from .build import BuildReport, build
from .data import PatchFolder, SlidePatches
from .features import read_features
from .slide import (
    PROPERTY_NAME_BACKGROUND_COLOR,
    PROPERTY_NAME_BARCODE,
    PROPERTY_NAME_BOUNDS_HEIGHT,
    PROPERTY_NAME_BOUNDS_WIDTH,
    PROPERTY_NAME_BOUNDS_X,
    PROPERTY_NAME_BOUNDS_Y,
    PROPERTY_NAME_COMMENT,
    PROPERTY_NAME_MPP_X,
    PROPERTY_NAME_MPP_Y,
    PROPERTY_NAME_OBJECTIVE_POWER,
    PROPERTY_NAME_QUICKHASH1,
    PROPERTY_NAME_VENDOR,
    AbstractSlide,
    ImageSlide,
    OpenSlide,
    OpenSlideCache,
    open_slide,
)

__all__ = [
    "AbstractSlide",
    "BuildReport",
    "ImageSlide",
    "OpenSlide",
    "OpenSlideCache",
    "OpenSlideError",
    "OpenSlideUnsupportedFormatError",
    "PatchFolder",
    "Slide",
    "SlidePatches",
    "StainNormalizer",
    "build",
    "open_slide",
    "read_features",
    "set_threads",
    "__version__",
] + [name for name in dir() if name.startswith("PROPERTY_NAME_")]
