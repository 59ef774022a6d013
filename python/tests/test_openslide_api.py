"""`import patchtcga as openslide`: the same answers and pixels as openslide-python."""

import numpy as np
import openslide
import pytest
from openslide.deepzoom import DeepZoomGenerator

import patchtcga


@pytest.fixture(params=["sample", "pyramid"])
def both(request):
    path = request.getfixturevalue(request.param)
    with patchtcga.OpenSlide(path) as ours, openslide.OpenSlide(path) as theirs:
        yield ours, theirs


def pixels(image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def test_geometry_and_properties_match(both):
    ours, theirs = both
    assert ours.level_count == theirs.level_count
    assert ours.dimensions == theirs.dimensions
    assert ours.level_dimensions == theirs.level_dimensions
    assert ours.level_downsamples == pytest.approx(theirs.level_downsamples)
    for key, value in theirs.properties.items():
        assert ours.properties[key] == value, key
    assert {k for k in ours.properties if not k.startswith("patchtcga.")} == set(theirs.properties)
    for ds in (0.5, 1, 1.5, 2, 3.9, 4, 5, 100):
        assert ours.get_best_level_for_downsample(ds) == theirs.get_best_level_for_downsample(ds), ds


def test_native_reader_serves_both(both):
    ours, _ = both
    assert ours.properties["patchtcga.reader"].startswith("native reader")


@pytest.mark.parametrize(
    "location,size",
    [((0, 0), (300, 200)), ((-50, -20), (300, 200)), ((700, 500), (256, 256)), ((2000, 1900), (1200, 400))],
)
def test_read_region_level0_equals_openslide(both, location, size):
    ours, theirs = both
    a, b = ours.read_region(location, 0, size), theirs.read_region(location, 0, size)
    assert a.mode == b.mode == "RGBA" and a.size == b.size == size
    assert np.abs(pixels(a) - pixels(b)).max() <= 1


def test_read_region_upper_levels_equal_openslide(pyramid):
    with patchtcga.OpenSlide(pyramid) as ours, openslide.OpenSlide(pyramid) as theirs:
        for level in range(1, ours.level_count):
            ds = int(ours.level_downsamples[level])
            for x, y in [(0, 0), (256 * ds, 128 * ds), (-8 * ds, 600 * ds)]:
                a, b = ours.read_region((x, y), level, (300, 300)), theirs.read_region((x, y), level, (300, 300))
                assert np.abs(pixels(a) - pixels(b)).max() <= 1, (level, x, y)


def test_thumbnail_and_associated_images(sample):
    with patchtcga.OpenSlide(sample) as ours, openslide.OpenSlide(sample) as theirs:
        assert np.abs(pixels(ours.get_thumbnail((256, 256))) - pixels(theirs.get_thumbnail((256, 256)))).max() <= 1
        assert sorted(ours.associated_images) == sorted(theirs.associated_images) == ["label", "macro", "thumbnail"]
        for name in theirs.associated_images:
            assert (pixels(ours.associated_images[name]) == pixels(theirs.associated_images[name])).all(), name
        with pytest.raises(KeyError):
            ours.associated_images["nothing"]


def test_deepzoom_generator_tiles_equal(both):
    ours, theirs = both
    zo, zt = DeepZoomGenerator(ours, tile_size=254, overlap=1), DeepZoomGenerator(theirs, tile_size=254, overlap=1)
    assert zo.level_count == zt.level_count and zo.level_tiles == zt.level_tiles
    for level in (zo.level_count - 1, zo.level_count - 3, 9):
        cols, rows = zo.level_tiles[level]
        for address in {(0, 0), (cols - 1, rows - 1), (cols // 2, rows // 2)}:
            a, b = zo.get_tile(level, address), zt.get_tile(level, address)
            assert a.size == b.size and np.abs(pixels(a) - pixels(b)).max() <= 1, (level, address)


def test_module_stands_in_for_openslide(sample, tmp_path):
    osl = patchtcga
    assert osl.PROPERTY_NAME_MPP_X == openslide.PROPERTY_NAME_MPP_X
    with osl.open_slide(sample) as slide:
        assert float(slide.properties[osl.PROPERTY_NAME_MPP_X]) == pytest.approx(0.499)
    png = tmp_path / "plain.png"
    from PIL import Image

    Image.new("RGB", (40, 30), (10, 20, 30)).save(png)
    plain, reference = osl.open_slide(png), openslide.open_slide(str(png))
    assert isinstance(plain, osl.ImageSlide)
    assert (pixels(plain.read_region((-5, 3), 0, (20, 40))) == pixels(reference.read_region((-5, 3), 0, (20, 40)))).all()
    assert osl.OpenSlide.detect_format(sample) == "aperio"
    assert osl.OpenSlide.detect_format(png) is None


def test_closed_slide_refuses(sample):
    slide = patchtcga.OpenSlide(sample)
    slide.close()
    with pytest.raises(patchtcga.OpenSlideError, match="closed"):
        slide.read_region((0, 0), 0, (10, 10))


def test_an_embedded_icc_profile_is_the_color_profile(tmp_path):
    import tifffile
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = tmp_path / "icc.tif"
    tifffile.imwrite(
        path,
        np.full((512, 512, 3), 200, np.uint8),
        tile=(256, 256),
        photometric="rgb",
        resolution=(4e4, 4e4),
        resolutionunit="CENTIMETER",
        extratags=[(34675, 7, len(profile), profile, True)],
    )
    with patchtcga.OpenSlide(path) as slide:
        assert slide.slide.icc_profile == profile
        assert ImageCms.getProfileDescription(slide.color_profile).strip() == "sRGB built-in"
        assert slide.read_region((0, 0), 0, (8, 8)).info["icc_profile"] == profile
        assert slide.get_thumbnail((64, 64)).info["icc_profile"] == profile
    with patchtcga.OpenSlide(tmp_path / "icc.tif", reader="openslide") as through_openslide_34:
        assert through_openslide_34.color_profile is None
