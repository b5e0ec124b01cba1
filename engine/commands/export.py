"""``quantdesk export lmstudio|ollama|llama-server FILE``: hand a GGUF on to the app you chat in.

- ``lmstudio``: link (or copy) the file into LM Studio's models folder as publisher/repository/file.gguf
- ``ollama``: write a Modelfile beside the file and run ``ollama create`` (or print the command)
- ``llama-server``: print the llama.cpp server command with the context and GPU layers for this machine

``--json`` prints one JSON object per line, ending in ``{"event": "done", ...}`` or ``{"event": "error"}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="hand a GGUF on to LM Studio, Ollama or llama.cpp's server",
                       description="Put a GGUF where your chat app finds it. "
                       "Example: quantdesk export lmstudio ./out/model-Q4_K_M.gguf")
    targets = p.add_subparsers(dest="target", metavar="TARGET", required=True)

    lm = targets.add_parser("lmstudio", help="link or copy the file into LM Studio's models folder")
    lm.add_argument("file", metavar="FILE", help="a .gguf file")
    lm.add_argument("--models-dir", metavar="DIR", help="LM Studio's models folder (default: from its settings)")
    lm.add_argument("--publisher", metavar="NAME", help="the publisher folder (default quantdesk)")
    lm.add_argument("--repository", metavar="NAME", help="the repository folder (default <model>-GGUF)")
    lm.add_argument("--yes", "-y", action="store_true", help="copy a large file without asking")
    lm.add_argument("--json", action="store_true", help="JSON events on stdout")
    lm.set_defaults(func=run_lmstudio)

    ol = targets.add_parser("ollama", help="create an Ollama model from the file (or print the command)")
    ol.add_argument("file", metavar="FILE", help="a .gguf file")
    ol.add_argument("--name", metavar="NAME", help="the Ollama model name (default <model>:<type>)")
    ol.add_argument("--source", metavar="DIR",
                    help="the original model folder, for its sampling defaults (default: from the file's record)")
    ol.add_argument("--print-only", action="store_true", help="write the Modelfile and print the command only")
    ol.add_argument("--json", action="store_true", help="JSON events on stdout")
    ol.set_defaults(func=run_ollama)

    ls = targets.add_parser("llama-server", help="print the llama-server command sized for this machine")
    ls.add_argument("file", metavar="FILE", help="a .gguf file")
    ls.add_argument("--ctx", type=int, metavar="N", help="context length (default 4096, capped at the model's)")
    ls.add_argument("--port", type=int, default=8080, help="the server's port (default 8080)")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=run_llama_server)


def _emit(args: argparse.Namespace, data: dict[str, Any]) -> None:
    if args.json:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()


def _drive(args: argparse.Namespace, job: Any) -> Any:
    """Run a job with Ctrl-C as cancel; progress as JSON events or plain lines."""
    from engine.jobs import cancel_on_signals, run_job

    def show(event: Any) -> None:
        if args.json:
            _emit(args, {"event": "progress", **event.to_dict()})
        elif event.fraction in (0.0, 1.0) or event.extra.get("ollama"):
            print(event.message, file=sys.stderr, flush=True)

    with cancel_on_signals(args._cancel):
        return run_job(job, show)


def _guard(func):
    def wrapper(args: argparse.Namespace) -> int:
        from engine.errors import JobCancelled, QuantDeskError
        from engine.jobs import CancelToken

        args._cancel = CancelToken()
        try:
            return func(args)
        except JobCancelled as err:
            _emit(args, {"event": "error", "message": str(err), "cancelled": True})
            print(f"quantdesk: error: {err}", file=sys.stderr)
            return 130
        except QuantDeskError as err:
            _emit(args, {"event": "error", "message": str(err)})
            print(f"quantdesk: error: {err}", file=sys.stderr)
            return 2
    return wrapper


@_guard
def run_lmstudio(args: argparse.Namespace) -> int:
    from engine.export import place_in_lmstudio, plan_lmstudio
    from engine.units import format_bytes

    plan = plan_lmstudio(args.file, args.models_dir, publisher=args.publisher, repository=args.repository)
    _emit(args, {"event": "plan", **plan.to_dict()})
    if plan.large and not args.yes:
        question = (f"{plan.target.parent} is on another disk: copy {format_bytes(plan.size_bytes)} there? [y/N] ")
        if args.json or not sys.stdin.isatty() or input(question).strip().lower() not in ("y", "yes"):
            message = "Nothing copied; run the same command with --yes to copy without asking."
            _emit(args, {"event": "error", "message": message, "confirm": True})
            print(f"quantdesk: {message}", file=sys.stderr)
            return 1
    target = _drive(args, place_in_lmstudio(plan, args._cancel))
    _emit(args, {"event": "done", "path": str(target), "method": plan.method})
    if not args.json:
        how = {"present": "already there", "link": "hard-linked", "copy": "copied"}[plan.method]
        print(f"{target}\nIn LM Studio's models folder ({how}); it shows in LM Studio's model list.")
    return 0


@_guard
def run_ollama(args: argparse.Namespace) -> int:
    from engine.export import create_in_ollama, plan_ollama

    plan = plan_ollama(args.file, args.name, source=args.source)
    _emit(args, {"event": "plan", **plan.to_dict()})
    for note in plan.notes:
        print(f"note: {note}", file=sys.stderr)
    if plan.ollama is None or args.print_only:
        _emit(args, {"event": "done", "created": False, "command": plan.command, "modelfile": str(plan.modelfile)})
        if not args.json:
            if plan.ollama is None:
                print("Ollama is not installed here (no ollama on PATH); once it is, run:", file=sys.stderr)
            print(plan.command)
        return 0
    name = _drive(args, create_in_ollama(plan, args._cancel))
    _emit(args, {"event": "done", "created": True, "name": name, "command": plan.command})
    if not args.json:
        print(f"ollama run {name}")
    return 0


@_guard
def run_llama_server(args: argparse.Namespace) -> int:
    from engine.export import server_command

    cmd = server_command(args.file, ctx=args.ctx, port=args.port)
    if args.json:
        print(json.dumps(cmd.to_dict(), indent=2))
        return 0
    print(cmd.command)
    print(f"# {cmd.context} tokens of context; -ngl {cmd.gpu_layers}: {cmd.reason}", file=sys.stderr)
    for note in cmd.notes:
        print(f"# {note}", file=sys.stderr)
    return 0
