"""The dataset builders from Python, with the command line's options."""

from __future__ import annotations

import os
from typing import NamedTuple

from . import _native


class BuildReport(NamedTuple):
    """What a build did."""

    summary: str
    """The summary ``patchtcga build`` prints."""
    failures: list
    """One message per failed slide (the others are complete; building again retries these)."""


def build(layout: str, slides: str | os.PathLike, out: str | os.PathLike, **options) -> BuildReport:
    """Tiles the slides of the slide list ``slides`` into the release layout ``layout``
    ("ptcga200", "pcam200", "segpanda200") under ``out``, in this process, exactly as
    ``patchtcga build`` does. ``options`` are the command's flags in Python spelling:
    ``build("ptcga200", "S.csv", "D", per_slide=500, size=256, keep_ink=True)`` runs
    ``patchtcga build ptcga200 --slides S.csv --out D --per-slide 500 --size 256 --keep-ink``."""
    args = [layout, "--slides", os.fspath(slides), "--out", os.fspath(out)]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is not False and value is not None:
            args += [flag, os.fspath(value) if isinstance(value, os.PathLike) else str(value)]
    summary, failures = _native.build(args)
    return BuildReport(summary, failures)
