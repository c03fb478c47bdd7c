"""Progress bars: notebook widgets in JupyterLab, plain text under the study runner.

The runner sets ``STUDY_PLAIN_PROGRESS=1`` for its kernels, so executed notebooks keep a readable text bar
instead of a widget that renders as "0%" in a saved notebook or an offline HTML export.
"""

from __future__ import annotations

import os

#: Environment variable that selects plain-text progress bars.
PLAIN_ENV = "STUDY_PLAIN_PROGRESS"

if os.environ.get(PLAIN_ENV):
    from tqdm.std import tqdm
else:
    from tqdm.auto import tqdm

__all__ = ["tqdm", "PLAIN_ENV"]
