"""DICOM whole-slide images: a wsidicomizer conversion of the bundled SVS (its JPEG tiles carried
over) reads as wsidicom reads it, and builds exactly the dataset the SVS builds."""

import ctypes.util
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import patchtcga

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "assets" / "cmu1_small_region.svs"


def _convert(out: Path, **options) -> Path:
    """The bundled SVS converted to a DICOM series by wsidicomizer."""
    import opentile.jpeg.jpeg as opentile_jpeg
    from wsidicomizer import WsiDicomizer

    # opentile looks libturbojpeg up with ctypes' find_library, which raises on some Python builds
    # (pyenv's, here); it then falls back to the TURBOJPEG folder.
    def find_library(name):
        try:
            return ctypes.util.find_library(name)
        except OSError:
            return None

    opentile_jpeg.find_library = find_library
    os.environ.setdefault("TURBOJPEG", "/usr/lib/x86_64-linux-gnu")
    WsiDicomizer.convert(str(SAMPLE), str(out), **options)
    return out


@pytest.fixture(scope="session")
def series(tmp_path_factory) -> Path:
    """The bundled SVS as a DICOM series, its JPEG tiles carried over as they are."""
    return _convert(tmp_path_factory.mktemp("dicom") / "cmu1_small_region")


@pytest.fixture(scope="session")
def j2k_series(tmp_path_factory) -> Path:
    """The bundled SVS transcoded to lossless JPEG 2000 frames (YBR_RCT)."""
    from wsidicom.codec import Jpeg2kSettings

    out = tmp_path_factory.mktemp("dicom") / "j2k"
    return _convert(out, encoding=Jpeg2kSettings(levels=[0]), force_transcoding=True, include_label=False)


def test_the_series_opens_from_its_folder_or_any_of_its_files(series):
    for path in [series, *sorted(series.glob("*.dcm"))]:
        with patchtcga.OpenSlide(str(path)) as s:
            assert s.dimensions == (2220, 2967)
            assert s.properties["openslide.vendor"] == "dicom"
            assert float(s.properties[patchtcga.PROPERTY_NAME_MPP_X]) == pytest.approx(0.499)
            assert s.properties["dicom.SeriesInstanceUID"]
            assert set(s.associated_images) == {"label", "macro", "thumbnail"}
            assert s.properties["patchtcga.reader"] == "native reader (DICOM)"


def test_regions_equal_wsidicom_and_the_svs(series):
    from wsidicom import WsiDicom

    ours, svs = patchtcga.OpenSlide(str(series)), patchtcga.OpenSlide(str(SAMPLE))
    with WsiDicom.open(series) as theirs:
        for x, y in [(0, 0), (800, 800), (1400, 2100), (617, 1333)]:
            want = np.asarray(theirs.read_region((x, y), 0, (800, 800)).convert("RGB"))
            got = np.asarray(ours.read_region((x, y), 0, (800, 800)).convert("RGB"))
            assert np.array_equal(got, want), (x, y)
            assert np.array_equal(got, np.asarray(svs.read_region((x, y), 0, (800, 800)).convert("RGB")))
        label = np.asarray(theirs.read_label().convert("RGB"))
        assert np.array_equal(np.asarray(ours.associated_images["label"].convert("RGB")), label)


def test_the_series_builds_the_dataset_the_svs_builds(series, tmp_path):
    cli = os.environ.get("PATCHTCGA_CLI")
    if not cli:
        pytest.skip("PATCHTCGA_CLI (the patchtcga binary) not given; make python-test gives it")
    sums = {}
    for name, slide in [("svs", SAMPLE), ("dicom", series)]:
        (tmp_path / f"{name}.csv").write_text(f"slide,organ\n{slide},skin\n")
        out = tmp_path / name
        args = ["--slides", tmp_path / f"{name}.csv", "--out", out, "--per-slide", "40", "--size", "128"]
        subprocess.run([cli, "build", "ptcga200", *args], check=True)
        sums[name] = (out / "MD5SUMS").read_text()
    assert sums["svs"] == sums["dicom"] and len(sums["svs"].splitlines()) >= 20


def test_jpeg_2000_frames_equal_wsidicom_and_the_svs(j2k_series):
    from wsidicom import WsiDicom

    ours, svs = patchtcga.OpenSlide(str(j2k_series)), patchtcga.OpenSlide(str(SAMPLE))
    with WsiDicom.open(j2k_series) as theirs:
        assert theirs.levels[0].default_instance.dataset.PhotometricInterpretation == "YBR_RCT"
        for x, y in [(0, 0), (1400, 2100), (617, 1333)]:
            got = np.asarray(ours.read_region((x, y), 0, (800, 800)).convert("RGB"))
            assert np.array_equal(got, np.asarray(theirs.read_region((x, y), 0, (800, 800)).convert("RGB"))), (x, y)
            assert np.array_equal(got, np.asarray(svs.read_region((x, y), 0, (800, 800)).convert("RGB")))
