"""``quantdesk recommend PATH``: which format fits this machine (or a planned one), best first."""

from __future__ import annotations

import argparse
import json
import shutil
import textwrap
from pathlib import Path

from engine.commands.doctor import add_machine_arguments, overrides_from_args
from engine.terminal import printable
from engine.units import format_bytes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recommend", help="rank the formats that fit this machine, with sizes and why")
    p.add_argument("path", help="a Hugging Face model folder, a config.json or a .gguf file")
    p.add_argument("--ctx", type=int, metavar="N", help="context length to plan for (default 4096, capped at the model's)")
    p.add_argument("--out", metavar="DIR",
                   help="where this model's outputs go: a kept intermediate GGUF there makes the GGUF sizes exact")
    p.add_argument("--estimate", action="store_true",
                   help="estimate every size (skip llama.cpp's dry run of a GGUF source or kept intermediate)")
    p.add_argument("--json", action="store_true", help="print JSON (a stable contract)")
    add_machine_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.hardware import detect_machine
    from engine.inspect import inspect_model
    from engine.recommend import recommend

    overrides = overrides_from_args(args)
    model = inspect_model(args.path)
    machine = detect_machine(overrides=overrides)
    rec = recommend(model, machine, args.ctx, exact=not args.estimate,
                    outputs=Path(args.out).expanduser() if args.out else None)
    if args.json:
        print(json.dumps(rec.to_dict(), indent=2))
        return 0
    print(printable(render(rec)))
    return 0


def render(rec) -> str:
    """A ranked, aligned table with each option's reason wrapped underneath."""
    width = min(shutil.get_terminal_size((100, 24)).columns, 110)
    model = rec.model
    lines = [f"{model.name}: {model.parameters:,} parameters, planning for {rec.context:,} tokens", ""]
    header = ("#", "format", "size", "peak", "where", "fit", "ready")
    rows = []
    for i, o in enumerate(rec.options, 1):
        where = f"split {o.gpu_layers}/{o.layers}" if o.device == "split" else o.device
        size = format_bytes(o.size_bytes) + (" exact" if o.size_exact else "")
        rows.append((str(i), o.format, size, format_bytes(o.peak_bytes), where,
                     {"no": "does not fit"}.get(o.fit, o.fit), "yes" if o.available else "no"))
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    right = {0, 2, 3}

    def line(cells) -> str:
        return "  ".join(c.rjust(w) if k in right else c.ljust(w) for k, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    lines.append(line(header))
    for row, o in zip(rows, rec.options, strict=True):
        lines.append(line(row))
        lines += textwrap.wrap(o.why, width=width, initial_indent="     ", subsequent_indent="     ")
    if rec.notes:
        lines.append("")
        for note in rec.notes:
            lines += textwrap.wrap(note, width=width, initial_indent="Note: ", subsequent_indent="      ")
    return "\n".join(lines)
