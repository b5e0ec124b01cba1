"""The headless command line. Each subcommand lives in ``engine/commands/<name>.py``.

Heavy libraries are imported inside the commands that need them, so
``quantdesk --help`` and ``quantdesk doctor`` stay fast.

Whatever goes wrong ends here as one line on stderr (``quantdesk: error: ...``)
and, for a command run with ``--json``, one ``{"event": "error", "message": ...}``
line on stdout, never a traceback: QuantDeskError carries its own sentence, and
``engine.failures`` turns anything else (a full disk, a file that cannot be
read, malformed JSON) into one. ``QUANTDESK_DEBUG=1`` adds the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from engine import __version__
from engine.errors import JobCancelled

COMMANDS = ("demo", "doctor", "inspect", "recommend", "quantize", "list", "chat", "eval", "compare", "get",
            "export")
# Commands that load a model's weights: they take the pickle opt-in (engine.trust).
_LOADS_WEIGHTS = ("quantize", "chat", "eval")
DEBUG_ENV = "QUANTDESK_DEBUG"

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
    _add_pickle_opt_in(sub)
    return parser


def _add_pickle_opt_in(sub: argparse._SubParsersAction) -> None:
    from engine.trust import ALLOW_PICKLE_ENV, ALLOW_PICKLE_FLAG

    for name in _LOADS_WEIGHTS:
        p = sub.choices.get(name)
        if p is None or ALLOW_PICKLE_FLAG in p._option_string_actions:
            continue
        p.add_argument(ALLOW_PICKLE_FLAG, action="store_true",
                       help="load pickle (.bin/.pt) weights when a model has no .safetensors; pickle files can "
                       f"run code, so only for models you trust (same as {ALLOW_PICKLE_ENV}=1)")


def fail(message: str, code: int = 2) -> int:
    from engine.terminal import one_line

    print(f"quantdesk: error: {one_line(message)}", file=sys.stderr, flush=True)
    return code


def main(argv: Sequence[str] | None = None, extra: Sequence[Registrar] = ()) -> int:
    parser = build_parser(extra)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    if getattr(args, "allow_pickle", False):
        from engine.trust import allow_pickle

        allow_pickle()
    try:
        code = int(func(args) or 0)
        sys.stdout.flush()  # a full disk under `> file` must fail here, not in the interpreter's exit
        return code
    except JobCancelled as err:
        return _report(args, str(err), 130, cancelled=True)
    except KeyboardInterrupt:
        return _report(args, "Interrupted; nothing was written.", 130, cancelled=True)
    except BrokenPipeError:
        # The reader went away (e.g. `quantdesk list | head`); nothing more to say.
        _silence_stdout()
        sys.stderr.close()
        return 0
    except Exception as err:  # noqa: BLE001 - a QuantDeskError's sentence, or the last resort's
        _debug(err)
        from engine.failures import sentence

        return _report(args, sentence(err), 2)


def _report(args: argparse.Namespace, message: str, code: int, *, cancelled: bool = False) -> int:
    """The error on stderr, and as a JSON event on stdout for ``--json``."""
    if getattr(args, "json", False):
        from engine.terminal import one_line

        event: dict[str, Any] = {"event": "error", "message": one_line(message)}
        if cancelled:
            event["cancelled"] = True
        with contextlib.suppress(OSError, ValueError):  # stdout is gone; stderr still says it
            print(json.dumps(event), flush=True)
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        _silence_stdout()  # what could not be written is dropped, not retried at exit
    return fail(message, code)


def _debug(err: BaseException) -> None:
    if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
        traceback.print_exception(err, file=sys.stderr)
        from engine.jobs import ChildFailed

        if isinstance(err, ChildFailed) and err.traceback:  # the child's own traceback
            print(err.traceback, file=sys.stderr)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
