"""``quantdesk list DIR [--json]``: what QuantDesk produced in a folder, and where each came from.

``--json`` prints one object (a stable contract): ``{"folder", "artifacts": [...]}``
where each artifact carries the keys of its sidecar (``name``, ``path``,
``kind``, ``format``, ``source``, ``source_name``, ``source_params``,
``size_bytes``, ``options``, ``versions``, ``created_at``, ``evaluation`` (with
the quick check's ``verdict`` and ``verdict_evidence``), ``tracked``), plus ``warnings`` (one sentence per output skipped because
its sidecar is damaged) when there are any.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.errors import QuantDeskError
from engine.terminal import one_line, printable

# Evaluation results worth a column, with how to print them (keys written by `quantdesk eval`).
_EVAL_COLUMNS = (("ppl", "PPL", "{:.3f}"), ("kld_mean", "KLD", "{:.4f}"), ("gen_tps", "TOK/S", "{:.1f}"))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "list",
        help="list the quantized models in a folder and the source each came from",
        description="List what QuantDesk produced in DIR (GGUF files and Hugging Face folders), "
        "with format, size, source and any evaluation results.",
    )
    p.add_argument("folder", metavar="DIR", help="folder holding the outputs")
    p.add_argument("--all", action="store_true",
                   help="also list GGUF files and model folders that QuantDesk did not make")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.artifacts import list_artifacts

    folder = Path(args.folder).expanduser()
    if not folder.exists():
        raise QuantDeskError(f"{folder} does not exist; pass the folder you gave quantize as --out.")
    if not folder.is_dir():
        raise QuantDeskError(f"{folder} is a file; pass the folder that holds the outputs.")
    warnings: list[str] = []
    artifacts = list_artifacts(folder, include_untracked=args.all, warn=warnings.append)
    for warning in warnings:
        print(f"quantdesk: warning: {one_line(warning)}", file=sys.stderr)
    if args.json:
        data = {"folder": str(folder.resolve()), "artifacts": [a.to_dict() for a in artifacts]}
        if warnings:
            data["warnings"] = warnings
        print(json.dumps(data, indent=2))
        return 0
    if not artifacts:
        hint = "" if args.all else " (add --all to include files made elsewhere)"
        print(printable(f"No quantized models in {folder}{hint}."))
        return 0
    print(printable(_table(artifacts)))
    return 0


def _table(artifacts: list) -> str:
    from engine.units import format_bytes

    shown = [(key, title, fmt) for key, title, fmt in _EVAL_COLUMNS
             if any(isinstance(a.evaluation.get(key), (int, float)) for a in artifacts)]
    verdicts = any(isinstance(a.evaluation.get("verdict"), str) for a in artifacts)
    header = ["NAME", "FORMAT", "SIZE", "BPW", "SOURCE", "CREATED", *[title for _, title, _ in shown]]
    if verdicts:
        header.append("VERDICT")
    rows = [header]
    for a in artifacts:
        bpw = a.bits_per_weight
        row = [
            a.name,
            a.format or "?",
            format_bytes(a.size_bytes),
            f"{bpw:.2f}" if bpw else "-",
            a.source_name or ("(unknown)" if not a.tracked else "-"),
            a.created_at[:16].replace("T", " ") if a.created_at else "-",
        ]
        for key, _, fmt in shown:
            value = a.evaluation.get(key)
            row.append(fmt.format(value) if isinstance(value, (int, float)) else "-")
        if verdicts:
            verdict = a.evaluation.get("verdict")
            row.append(one_line(verdict, 40) if isinstance(verdict, str) and verdict else "-")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    sources = {a.source for a in artifacts if a.source}
    if sources:
        lines.append("")
        lines += [f"source {Path(s).name}: {s}" for s in sorted(sources)]
    return "\n".join(lines)
