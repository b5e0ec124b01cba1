"""The headless command line. Each subcommand lives in ``engine/commands/<name>.py``.

Heavy libraries are imported inside the commands that need them, so
``quantdesk --help`` and ``quantdesk doctor`` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from engine import __version__
from engine.errors import JobCancelled, QuantDeskError

COMMANDS = ("demo", "doctor", "inspect", "recommend", "quantize", "list", "chat", "eval", "compare", "get",
            "export")

Registrar = Callable[[argparse._SubParsersAction], None]


def build_parser(extra: Sequence[Registrar] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quantdesk",
        description="Quantize large language models on your own machine. "
        "With no command, opens the window.",
    )
    parser.add_argument("--version", action="version", version=f"quantdesk {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"engine.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"engine.commands.{name}":
                continue  # not built yet
            raise
        module.register(sub)
    for registrar in extra:
        registrar(sub)
    return parser


def fail(message: str, code: int = 2) -> int:
    print(f"quantdesk: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None, extra: Sequence[Registrar] = ()) -> int:
    parser = build_parser(extra)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        return int(func(args) or 0)
    except JobCancelled as err:
        return fail(str(err), 130)
    except KeyboardInterrupt:
        return fail("Interrupted; nothing was written.", 130)
    except BrokenPipeError:
        # The reader went away (e.g. `quantdesk list | head`); nothing more to say.
        sys.stderr.close()
        return 0
    except QuantDeskError as err:
        return fail(str(err))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
