"""The builders from Python write what the command line writes."""

import os
import subprocess
from pathlib import Path

import pytest

import patchtcga

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = dict(size=128, field_um=100, per_slide=20, seed=3)


def test_build_from_python_equals_the_command_line(tmp_path):
    cli = os.environ.get("PATCHTCGA_CLI")
    if not cli:
        pytest.skip("PATCHTCGA_CLI (the patchtcga binary) not given; make python-test gives it")
    slides = ROOT / "assets" / "demo_slides.csv"
    report = patchtcga.build("ptcga200", slides, tmp_path / "py", **OPTIONS)
    assert report.failures == [] and "1 slide" in report.summary
    flags = [a for k, v in OPTIONS.items() for a in ("--" + k.replace("_", "-"), str(v))]
    subprocess.run([cli, "build", "ptcga200", "--slides", slides, "--out", tmp_path / "cli", *flags], check=True)
    ours, theirs = (tmp_path / "py" / "MD5SUMS").read_text(), (tmp_path / "cli" / "MD5SUMS").read_text()
    assert ours == theirs and len(ours.splitlines()) >= 10


def test_build_refuses_bad_options_in_the_commands_words(tmp_path):
    with pytest.raises(ValueError, match="--size"):
        patchtcga.build("ptcga200", ROOT / "assets" / "demo_slides.csv", tmp_path, size="big")
    with pytest.raises(ValueError, match="unrecognized subcommand|invalid value"):
        patchtcga.build("camelyon99", ROOT / "assets" / "demo_slides.csv", tmp_path)
    with pytest.raises(ValueError, match="several processes"):
        patchtcga.build("ptcga200", ROOT / "assets" / "demo_slides.csv", tmp_path, nproc_per_node=2)
