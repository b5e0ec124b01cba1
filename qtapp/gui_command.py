"""``quantdesk gui``: open the window, or render it to a PNG and exit."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gui", help="open the window (the default with no command)")
    p.add_argument("--screenshot", metavar="FILE", help="render the window offscreen to a PNG and exit")
    p.add_argument("--model", metavar="PATH", help="open this model first")
    p.add_argument("--size", help="window size, e.g. 1920x1080 (default: as last closed; 1280x800 for --screenshot)")
    p.add_argument("--tab", choices=("recommendation", "quantize", "chat", "results"),
                   help="the tab to show first")
    p.add_argument("--out", metavar="DIR", help="write this run's outputs into DIR (for every model); Chat and Results list it from now on")
    p.add_argument("--prompt", metavar="TEXT",
                   help="with --screenshot: ask the newest output this first, and wait for the reply")
    p.add_argument("--get", metavar="REPO_ID",
                   help="open Get from Hugging Face with this model's name, e.g. Qwen/Qwen2.5-1.5B-Instruct, "
                   "and show its plan")
    p.add_argument("--hand-on", choices=("lmstudio", "ollama", "llama-server"),
                   help="with --screenshot: pick the newest GGUF output in Results and ask for this hand-off")
    p.add_argument("--theme", choices=("system", "light", "dark"), default="system",
                   help="the colours: the system's (default), or a light or dark palette")
    p.add_argument("--side-by-side", action="store_true",
                   help="open the chat with two panes (newest output and the original)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from qtapp.app import run_gui

    return run_gui([], model=args.model, screenshot=args.screenshot, size=args.size, tab=args.tab,
                   out=args.out, prompt=args.prompt, side_by_side=args.side_by_side,
                   theme=args.theme, get=args.get, hand_on=args.hand_on)
