"""Progress bars: notebook widgets in JupyterLab, plain text on the runner's console under the study runner.

The runner sets ``STUDY_PLAIN_PROGRESS=1`` for its kernels. There the bars are plain text written to the kernel
process's own stderr (``sys.__stderr__``), which the runner forwards to its console: the executed notebooks and
their HTML pages keep no progress output at all (no stderr blocks, no bar frozen at "0%").
"""

from __future__ import annotations

import os
import sys

#: Environment variable that selects plain-text progress bars on the console.
PLAIN_ENV = "STUDY_PLAIN_PROGRESS"

if os.environ.get(PLAIN_ENV):
    from tqdm.std import tqdm as _text_tqdm

    class tqdm(_text_tqdm):
        """A plain-text tqdm on the process's console, never in a cell's output (disabled when there is no console)."""

        def __init__(self, *args, **kwargs):
            console = _console()
            kwargs.setdefault("file", console)
            if console is None:
                kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    _CONSOLE: list = []

    def _console():
        """The kernel process's own stderr: ipykernel captures fd 2 into the cell, so use its copy of the original fd."""
        if not _CONSOLE:
            fd = getattr(sys.stderr, "_original_stdstream_copy", None)  # ipykernel >= 6 (fd capture)
            if fd is not None:
                _CONSOLE.append(os.fdopen(os.dup(fd), "w", buffering=1, errors="replace"))
            elif "ipykernel" in sys.modules:
                _CONSOLE.append(None)  # a kernel without a reachable console: no bars rather than bars in the page
            else:
                _CONSOLE.append(sys.__stderr__)
        return _CONSOLE[0]

else:
    from tqdm.auto import tqdm

__all__ = ["tqdm", "PLAIN_ENV", "console_progress"]


def console_progress() -> bool:
    """True when bars go to the console rather than into the notebook (under the study runner)."""
    return bool(os.environ.get(PLAIN_ENV))


def progress_bar(iterable, enabled: bool, desc: str, total: int | None = None, unit: str = "img"):
    """``iterable`` wrapped in the package's progress bar when ``enabled``."""
    if not enabled:
        return iterable
    from helpers.common.progress import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit)
