"""matplotlib for the stages that draw: the Agg backend, imported on first use, and atomic saving.

Kept apart from `effnet.plots` (the paper's figures) on purpose: the `cam_maps` stages draw a
model's maps from weights that exist only on the machine of its chain, and they depend on the
code they import; a change to the figures' code must not make their finished results stale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from effnet.io import write_atomic


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (imported here, not at module level)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 110) -> None:
    """Save a matplotlib figure atomically (temporary file in the same directory, then rename) and close it."""
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight"))
    finally:
        pyplot().close(fig)
