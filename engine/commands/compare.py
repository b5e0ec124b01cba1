"""``quantdesk compare SRC_OR_DIR``: every output of one source side by side, from the sidecars."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="table of every output of one source: size, PPL, KLD, speed, verdict",
                       description="Size, bits per weight, perplexity, ΔPPL, KL divergence and tokens per "
                       "second of every output of one source, read from the sidecars that "
                       "`quantdesk quantize` and `quantdesk eval` write, with the quick check's verdict and, "
                       "above the table, which file to keep.")
    p.add_argument("target", metavar="SRC_OR_DIR", help="the source model, or a folder of outputs")
    p.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.evaluate.compare import compare_rows, find_artifacts, format_table, headline
    from engine.terminal import one_line, printable

    def warn(message: str) -> None:
        print(f"quantdesk: warning: {one_line(message)}", file=sys.stderr)

    rows = compare_rows(find_artifacts(Path(args.target), warn=warn))
    if args.json:
        print(json.dumps([r.to_dict() for r in rows]))
    else:
        line = headline(rows)
        if line:
            print(one_line(line) + "\n")
        print(printable(format_table(rows)))
    return 0
