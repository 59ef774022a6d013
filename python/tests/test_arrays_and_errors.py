"""Arrays without PIL, batch reads, the tissue grid, and bad input as Python exceptions."""

import os
import shutil

import numpy as np
import openslide
import pytest

import patchtcga
from patchtcga import Slide


def test_read_region_arrays_are_openslides_pixels(sample):
    slide, reference = Slide(sample), openslide.OpenSlide(sample)
    rgba = slide.read_region_rgba(100, 50, 0, 320, 240)
    assert rgba.dtype == np.uint8 and rgba.shape == (240, 320, 4) and rgba.flags.c_contiguous
    assert (rgba == np.asarray(reference.read_region((100, 50), 0, (320, 240)))).all()
    rgb = slide.read_region(100, 50, 0, 320, 240)
    assert rgb.shape == (240, 320, 3) and (rgb == rgba[..., :3]).all()


@pytest.mark.parametrize("x,y", [(-40, -30), (2100, 2900)])
def test_read_region_off_the_slide_is_white(sample, x, y):
    slide = Slide(sample)
    rgb, rgba = slide.read_region(x, y, 0, 200, 100), slide.read_region_rgba(x, y, 0, 200, 100)
    inside = rgba[..., 3] == 255
    assert 0 < inside.mean() < 1
    assert (rgb[inside] == rgba[..., :3][inside]).all() and (rgb[~inside] == 255).all()


def test_read_regions_batch_equals_single_reads(pyramid):
    slide = Slide(pyramid)
    coords = np.array([[0, 0], [512, 256], [1000, 900], [3000, 2000]], np.int64)
    batch = slide.read_regions(coords, 1, 128, 96)
    assert batch.shape == (4, 96, 128, 3)
    for (x, y), image in zip(coords, batch):
        assert (image == slide.read_region(int(x), int(y), 1, 128, 96)).all()
    assert (batch[3][-10:, -10:] == 255).all()  # past the level's edge: the slide's white background


def test_read_patches_resample_to_the_target_mpp(pyramid):
    slide = Slide(pyramid)
    assert slide.mpp == pytest.approx((0.25, 0.25)) and slide.mpp_source == "tiff-resolution"
    patches = slide.read_patches(np.array([[1024, 768]]), 1.0, 64)
    assert patches.shape == (1, 64, 64, 3)
    # 1 µm/px is exactly level 2 of this 0.25 µm/px pyramid: the patch is that level's pixels.
    level2 = slide.read_region(1024, 768, 2, 64, 64).astype(int)
    assert np.abs(patches[0].astype(int) - level2).mean() < 2


def test_tissue_grid_is_row_major_on_tissue(pyramid):
    slide = Slide(pyramid)
    mask, downsample = slide.tissue_mask()
    assert mask.dtype == bool and 0.3 < mask.mean() < 0.7 and downsample > 1
    grid = slide.tissue_grid(0.5, 128)
    assert grid.dtype == np.int64 and grid.shape[1] == 2 and len(grid) > 10
    assert (np.lexsort((grid[:, 0], grid[:, 1])) == np.arange(len(grid))).all()
    footprint = 128 * 0.5 / 0.25
    assert (grid % footprint == 0).all()  # a grid anchored at the slide's origin
    centres = ((grid + footprint / 2) / downsample).astype(int)
    assert mask[centres[:, 1], centres[:, 0]].mean() > 0.9


def test_missing_file_names_it():
    with pytest.raises(FileNotFoundError, match="nowhere.svs: no such file"):
        Slide("nowhere.svs")


def test_not_a_slide_is_unsupported(tmp_path):
    text = tmp_path / "notes.svs"
    text.write_text("not a slide")
    with pytest.raises(patchtcga.OpenSlideUnsupportedFormatError, match="notes.svs"):
        patchtcga.OpenSlide(text)
    assert issubclass(patchtcga.OpenSlideUnsupportedFormatError, patchtcga.OpenSlideError)


def test_truncated_slide_is_one_error_naming_it(sample, tmp_path):
    cut = tmp_path / "cut.svs"
    shutil.copy(sample, cut)
    os.truncate(cut, os.path.getsize(sample) // 3)
    # Opening reads the header and a pixel of the smallest level; the level-0 tiles are gone.
    with pytest.raises(patchtcga.OpenSlideError, match="cut.svs"):
        Slide(str(cut)).read_regions(np.array([[0, 0]]), 0, 2220, 2967)


def test_bad_arguments_raise_value_errors(sample):
    slide = Slide(sample)
    with pytest.raises(IndexError, match="no level 3"):
        slide.read_region(0, 0, 3, 10, 10)
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        slide.read_regions(np.zeros((3, 3), np.int64), 0, 10, 10)
    with pytest.raises(ValueError, match="outside"):
        slide.read_patches(np.array([[-1, 0]]), 0.5, 32)
    with pytest.raises(ValueError, match="unknown reader"):
        Slide(sample, reader="fast")
    with pytest.raises(ValueError, match="--mpp"):
        slide.read_patches(np.zeros((1, 2), np.int64), -1.0, 32)


def test_slide_without_mpp_opens_but_refuses_target_resolutions(tmp_path):
    import tifffile

    path = tmp_path / "nompp.tif"
    tifffile.imwrite(path, np.full((512, 512, 3), 200, np.uint8), tile=(256, 256), photometric="rgb")
    slide = Slide(str(path))
    assert slide.mpp is None and slide.mpp_source == "missing"
    assert slide.read_region_rgba(0, 0, 0, 4, 4).shape == (4, 4, 4)
    with pytest.raises(patchtcga.OpenSlideError, match="no µm/px"):
        slide.tissue_grid(0.5, 224)
    assert Slide(str(path), mpp=0.5).mpp == (0.5, 0.5)
