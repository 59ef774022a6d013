"""openslide-python's API over patchtcga's readers: ``OpenSlide``, ``ImageSlide``, ``open_slide``
and the ``PROPERTY_NAME_*`` keys, returning PIL images as openslide-python does."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Union

from PIL import Image

from ._native import OpenSlideError, OpenSlideUnsupportedFormatError, Slide

PROPERTY_NAME_BACKGROUND_COLOR = "openslide.background-color"
PROPERTY_NAME_BARCODE = "openslide.barcode"
PROPERTY_NAME_BOUNDS_HEIGHT = "openslide.bounds-height"
PROPERTY_NAME_BOUNDS_WIDTH = "openslide.bounds-width"
PROPERTY_NAME_BOUNDS_X = "openslide.bounds-x"
PROPERTY_NAME_BOUNDS_Y = "openslide.bounds-y"
PROPERTY_NAME_COMMENT = "openslide.comment"
PROPERTY_NAME_MPP_X = "openslide.mpp-x"
PROPERTY_NAME_MPP_Y = "openslide.mpp-y"
PROPERTY_NAME_OBJECTIVE_POWER = "openslide.objective-power"
PROPERTY_NAME_QUICKHASH1 = "openslide.quickhash-1"
PROPERTY_NAME_VENDOR = "openslide.vendor"

Filename = Union[str, bytes, "os.PathLike[str]"]


class AbstractSlide:
    """What every slide object offers (openslide-python's ``AbstractSlide``)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Closes the slide."""

    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of level 0."""
        return self.level_dimensions[0]

    @property
    def color_profile(self):
        """The slide's ICC profile as a PIL ``ImageCmsProfile``, or None."""
        return None

    def set_cache(self, cache: OpenSlideCache) -> None:
        """Accepted for compatibility: each slide keeps its own tile cache (``tile_cache_mb``)."""
        if not isinstance(cache, OpenSlideCache):
            raise TypeError("Not a cache object")

    def get_best_level_for_downsample(self, downsample: float) -> int:
        """The level OpenSlide reads for ``downsample``: the last whose downsample does not
        exceed it (OpenSlide's rule, ties included)."""
        downsamples = self.level_downsamples
        if downsample < downsamples[0]:
            return 0
        for level in range(1, len(downsamples)):
            if downsample < downsamples[level]:
                return level - 1
        return len(downsamples) - 1

    def get_thumbnail(self, size: tuple[int, int]) -> Image.Image:
        """An RGB thumbnail no larger than ``size``, made as openslide-python makes it."""
        downsample = max(dim / thumb for dim, thumb in zip(self.dimensions, size))
        level = self.get_best_level_for_downsample(downsample)
        tile = self.read_region((0, 0), level, self.level_dimensions[level])
        background = "#" + self.properties.get(PROPERTY_NAME_BACKGROUND_COLOR, "ffffff")
        thumb = Image.new("RGB", tile.size, background)
        thumb.paste(tile, None, tile)
        thumb.thumbnail(size, Image.Resampling.LANCZOS)
        if "icc_profile" in tile.info:
            thumb.info["icc_profile"] = tile.info["icc_profile"]
        return thumb


class OpenSlide(AbstractSlide):
    """An open whole-slide image (openslide-python's ``OpenSlide``), served by patchtcga's
    native reader where it reads the file and by OpenSlide otherwise. A DICOM series is opened by
    its folder or any one of its ``.dcm`` files.

    ``reader`` ("auto", "native", "openslide"), ``mpp`` (a µm/px override) and ``tile_cache_mb``
    are patchtcga's additions; ``slide`` is the native object behind it (arrays, batch reads,
    tissue grids)."""

    def __init__(self, filename: Filename, *, reader: str = "auto", mpp: float | None = None, tile_cache_mb: int = 256):
        self._filename = filename
        self.slide = Slide(os.fsdecode(filename), reader=reader, mpp=mpp, tile_cache_mb=tile_cache_mb)
        self._closed = False

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self._filename!r})"

    @classmethod
    def detect_format(cls, filename: Filename) -> str | None:
        """The vendor OpenSlide names for the file, or None if no reader serves it."""
        try:
            return Slide(os.fsdecode(filename)).properties.get(PROPERTY_NAME_VENDOR)
        except (OpenSlideError, FileNotFoundError):
            return None

    def close(self) -> None:
        """Closes the slide: later calls raise OpenSlideError."""
        self._closed = True

    def _open(self) -> Slide:
        if self._closed:
            raise OpenSlideError(f"{os.fsdecode(self._filename)}: the slide is closed")
        return self.slide

    @property
    def level_count(self) -> int:
        """Number of levels."""
        return self._open().level_count

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """(width, height) of each level."""
        return tuple(self._open().level_dimensions)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Downsample of each level."""
        return tuple(self._open().level_downsamples)

    @property
    def properties(self) -> Mapping[str, str]:
        """The slide's metadata: OpenSlide's keys, and ``patchtcga.*`` (reader, µm/px source)."""
        return _Frozen(self._open().properties)

    @property
    def associated_images(self) -> Mapping[str, Image.Image]:
        """Label, macro, thumbnail…: name → RGBA PIL image, read on access."""
        return _AssociatedImages(self._open())

    @property
    def color_profile(self):
        """The ICC profile the slide embeds (read by the native reader) as a PIL
        ``ImageCmsProfile``, or None."""
        profile = self._open().icc_profile
        if profile is None:
            return None
        from io import BytesIO

        from PIL import ImageCms

        return ImageCms.getOpenProfile(BytesIO(profile))

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> Image.Image:
        """An RGBA PIL image of ``size`` at ``level`` whose top-left pixel is ``location`` in
        level-0 coordinates; transparent outside the slide."""
        width, height = size
        if width < 0 or height < 0:
            raise OpenSlideError(f"negative width ({width}) or height ({height}) not allowed")
        slide = self._open()
        region = Image.fromarray(slide.read_region_rgba(int(location[0]), int(location[1]), level, width, height), "RGBA")
        if slide.icc_profile is not None:
            region.info["icc_profile"] = slide.icc_profile
        return region


class _Frozen(Mapping):
    """A read-only mapping."""

    def __init__(self, items: dict):
        self._items = items

    def __getitem__(self, key):
        return self._items[key]

    def __iter__(self) -> Iterator:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} {self._items!r}>"


class _AssociatedImages(Mapping):
    """Associated images, decoded when asked for."""

    def __init__(self, slide: Slide):
        self._slide = slide
        self._names = slide.associated_image_names

    def __getitem__(self, name: str) -> Image.Image:
        if name not in self._names:
            raise KeyError(name)
        return Image.fromarray(self._slide.associated_image(name), "RGBA")

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class OpenSlideCache:
    """Accepted for compatibility with openslide-python (each slide keeps its own tile cache)."""

    def __init__(self, capacity: int):
        if capacity < 0:
            raise ValueError(f"capacity must be ≥ 0, got {capacity}")
        self.capacity = capacity


class ImageSlide(AbstractSlide):
    """A plain image (PNG, JPEG…) behind the slide API, one level (openslide-python's
    ``ImageSlide``)."""

    def __init__(self, file: Filename | Image.Image):
        if isinstance(file, Image.Image):
            self._close, self._image = False, file
        else:
            self._close, self._image = True, Image.open(file)
        self._file = file

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self._file!r})"

    @classmethod
    def detect_format(cls, filename: Filename) -> str | None:
        """PIL's name for the image format, or None."""
        try:
            with Image.open(filename) as img:
                return img.format
        except OSError:
            return None

    def close(self) -> None:
        if self._close:
            self._image.close()
            self._close = False

    @property
    def level_count(self) -> int:
        return 1

    @property
    def level_dimensions(self) -> tuple[tuple[int, int]]:
        return (self._image.size,)

    @property
    def level_downsamples(self) -> tuple[float]:
        return (1.0,)

    @property
    def properties(self) -> Mapping[str, str]:
        return _Frozen({})

    @property
    def associated_images(self) -> Mapping[str, Image.Image]:
        return _Frozen({})

    def get_best_level_for_downsample(self, downsample: float) -> int:
        return 0

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> Image.Image:
        """An RGBA region; transparent outside the image."""
        if level != 0:
            raise OpenSlideError("Invalid level")
        if size[0] < 0 or size[1] < 0:
            raise OpenSlideError(f"Size {size} must be non-negative")
        tile = Image.new("RGBA", size, (0, 0, 0, 0))
        (x, y), (w, h) = location, self._image.size
        box = (max(x, 0), max(y, 0), min(x + size[0], w), min(y + size[1], h))
        if box[0] < box[2] and box[1] < box[3]:
            crop = self._image.crop(box)
            if crop.mode != "RGBA":
                crop = crop.convert("RGBA")
            tile.paste(crop, (box[0] - x, box[1] - y))
        return tile


def open_slide(filename: Filename) -> OpenSlide | ImageSlide:
    """A whole-slide image as ``OpenSlide``, any other image as ``ImageSlide``."""
    try:
        return OpenSlide(filename)
    except OpenSlideUnsupportedFormatError:
        return ImageSlide(filename)
