"""The study's files under ``data/`` and ``reports/``: paths, saves and loads with lineage and integrity checks.

* :mod:`.files`: every file of docs/ARCHITECTURE.md's "Files between notebooks" table with its save and load;
* :mod:`.lineage`: side files, the report's ``lineage.json``, input checks and digests, staleness;
* :mod:`.integrity`: verified reads (an ``.npz`` against its lineage, a model against its SHA-256);
* :mod:`.split_files`: the dataset folder notebook 01 names, ``split.csv`` written and read with its lineage;
* :mod:`.lung_files`: the U-Net's files and the predicted lung masks.

The notebooks use the file API as ``from helpers import study`` then ``study.load_split(...)``: the public names of
:mod:`.files`, loaded on first use (PEP 562).
"""

from __future__ import annotations

import importlib

#: The subpackage's modules: imported as modules, never looked up among the file API's names.
_MODULES = ("files", "integrity", "lineage", "lung_files", "split_files")


def __getattr__(name: str):
    """A public name of :mod:`helpers.study.files`, loaded on first use (PEP 562)."""
    if name in _MODULES or name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    files = importlib.import_module(f"{__name__}.files")
    if name in files.__all__:
        return getattr(files, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """Module attributes and the file API's names."""
    return sorted(set(globals()) | set(importlib.import_module(f"{__name__}.files").__all__))
