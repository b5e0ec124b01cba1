"""Where the project's own files (``resources/``: icons, style sheet, texts) are.

From a source checkout or an editable install they sit next to ``engine/``;
in the frozen app (PyInstaller one-folder build) ``build-app.sh`` places them
at the same relative spot inside the bundle (``sys._MEIPASS``), so callers
never need to know which of the two they run from.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def resources_root() -> Path:
    """The folder that holds ``resources/``: the bundle when frozen, the checkout otherwise."""
    bundle = getattr(sys, "_MEIPASS", None)
    if getattr(sys, "frozen", False) and bundle:
        return Path(bundle)
    return _SOURCE_ROOT


def resources_dir() -> Path:
    """``resources/`` itself; ``QUANTDESK_RESOURCES`` overrides it (a theme or texts under work)."""
    override = os.environ.get("QUANTDESK_RESOURCES")
    if override:
        return Path(override)
    return resources_root() / "resources"


def resource_path(*parts: str) -> Path:
    """``resource_path("icons", "quantdesk.svg")`` → the file under ``resources/``, frozen or not."""
    return resources_dir().joinpath(*parts)
