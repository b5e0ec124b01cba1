"""``quantdesk demo``: prepare the demo model (SmolLM2-135M-Instruct) and print where it is."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="prepare the demo model and print its folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.demo import demo_model_dir, ensure_demo_model, is_built

    folder = demo_model_dir()
    if not is_built(folder):
        print("Preparing the demo model (SmolLM2-135M-Instruct, about a minute, once)...", flush=True)
    print(ensure_demo_model(folder))
    return 0
