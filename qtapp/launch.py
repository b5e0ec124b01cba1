"""The ``quantdesk`` entry point: no command opens the window, a command runs headless."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        from qtapp.app import run_gui

        return run_gui([])
    from engine.cli import main as cli_main
    from qtapp.gui_command import register

    return cli_main(args, extra=[register])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
