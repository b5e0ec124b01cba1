"""``quantdesk get REPO_ID``: plan, confirm, then download a model from the Hugging Face Hub.

The plan (file list, sizes, what fits this machine, the disk it needs) comes before
any large download; on a terminal QuantDesk asks before it starts (``--yes`` skips
the question). ``--json`` prints one JSON object per line: ``{"event": "plan"}``,
``{"event": "progress"}`` events, then ``{"event": "done", "path": ...}`` or
``{"event": "error", "message": ...}``. Ctrl-C pauses: the same command resumes.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from engine.commands.events import JsonEvents


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "get",
        help="download a model from the Hugging Face Hub into its cache (plan first)",
        description="Show what QuantDesk would download and what it becomes on this machine, then download "
        "it into the Hugging Face cache, resumably. Example: quantdesk get Qwen/Qwen2.5-1.5B-Instruct",
    )
    p.add_argument("repo_id", metavar="REPO_ID", help="the model's name on the Hub, e.g. Qwen/Qwen2.5-1.5B-Instruct")
    p.add_argument("--revision", metavar="R", help="branch, tag or commit (default main)")
    p.add_argument("--token", metavar="T", help="Hugging Face token (default: HF_TOKEN or the saved login); "
                   "used for this run only, never stored")
    p.add_argument("--ctx", type=int, metavar="N", help="context length to plan for (default 4096)")
    p.add_argument("--yes", "-y", action="store_true", help="download without asking")
    p.add_argument("--json", action="store_true", help="one JSON event per line on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.errors import JobCancelled, QuantDeskError
    from engine.hub import download, plan_download
    from engine.inspect import inspect_model
    from engine.jobs import CancelToken, cancel_on_signals

    out = _Json() if args.json else _Terminal()
    cancel = CancelToken()
    try:
        with cancel_on_signals(cancel):
            plan = plan_download(args.repo_id, args.revision, args.token, ctx=args.ctx, cancel=cancel)
            out.plan(plan)
            if not args.yes and not _confirm(plan, args.json):
                return out.stop("Nothing downloaded; run the same command with --yes to download without asking.")
            job = download(plan, cancel)
            while True:
                try:
                    out.progress(next(job))
                except StopIteration as stop:
                    snapshot = stop.value
                    break
        model = inspect_model(snapshot)
    except JobCancelled as err:
        out.error(str(err), cancelled=True)
        return 130
    except QuantDeskError as err:
        out.error(str(err))
        return 2
    out.done(plan, snapshot, model)
    return 0


def _confirm(plan: Any, as_json: bool) -> bool:
    if as_json or not sys.stdin.isatty():
        return False
    from engine.units import format_bytes

    try:
        answer = input(f"Download {format_bytes(plan.remaining_bytes)} into {plan.cache_dir}? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


class _Json(JsonEvents):
    def plan(self, plan: Any) -> None:
        self._write({"event": "plan", **plan.to_dict()})

    def done(self, plan: Any, snapshot: Any, model: Any) -> None:
        self._write({"event": "done", "repo_id": plan.repo_id, "commit": plan.commit, "path": str(snapshot),
                     "parameters": model.parameters, "architecture": model.architecture})

    def stop(self, message: str) -> int:
        self._write({"event": "error", "message": message, "confirm": True})
        print(f"quantdesk: {message}", file=sys.stderr)
        return 1


class _Terminal:
    """The plan on stdout; a live line on a terminal's stderr, one line per file otherwise."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._last = 0.0
        self._file: str | None = None
        self._drawn = False

    def plan(self, plan: Any) -> None:
        print(plan.summary(), flush=True)

    def progress(self, event: Any) -> None:
        file = event.extra.get("file")
        if not self._tty:
            if file and file != self._file:
                self._file = file
                print(f"downloading {file}", file=sys.stderr, flush=True)
            return
        now = time.monotonic()
        if now - self._last < 0.1 and event.fraction < 1.0:
            return
        self._last = now
        eta = f" ETA {int(event.eta_s)}s" if event.eta_s is not None else ""
        sys.stderr.write("\r\033[K" + f"{event.fraction * 100:5.1f}%{eta}  {event.message}"[:160])
        sys.stderr.flush()
        self._drawn = True

    def _end_line(self) -> None:
        if self._drawn:
            sys.stderr.write("\n")
            self._drawn = False

    def done(self, plan: Any, snapshot: Any, model: Any) -> None:
        self._end_line()
        print(f"{snapshot}\n{plan.repo_id} is ready: quantdesk recommend {snapshot}")

    def stop(self, message: str) -> int:
        print(f"quantdesk: {message}", file=sys.stderr)
        return 1

    def error(self, message: str, cancelled: bool = False) -> None:
        self._end_line()
        print(f"quantdesk: error: {message}", file=sys.stderr)
