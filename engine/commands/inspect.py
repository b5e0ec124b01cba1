"""``quantdesk inspect PATH``: what a model is, read from its headers and config, never its weights."""

from __future__ import annotations

import argparse
import json

from engine.terminal import one_line
from engine.units import format_bytes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="describe a model folder, config.json or .gguf without loading it")
    p.add_argument("path", help="a Hugging Face model folder, a config.json or a .gguf file")
    p.add_argument("--json", action="store_true", help="print JSON (a stable contract)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.inspect import inspect_model

    info = inspect_model(args.path)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    print(render(info))
    return 0


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def render(info) -> str:
    """The model as an aligned, human-readable block."""
    kinds = {"hf": "Hugging Face checkpoint", "config": "config.json only (nothing downloaded yet)",
             "gguf": "GGUF file"}
    counted = "estimated from config.json" if info.parameters_estimated else "counted from the weights' headers"
    rows = [
        ("Model", info.path),
        ("Kind", kinds.get(info.kind, info.kind)),
        ("Architecture", info.architecture or "?"),
        ("Parameters", f"{info.parameters:,} ({counted})"),
        ("Data type", info.dtype or "?"),
    ]
    if info.bytes_on_disk:
        rows.append(("On disk", format_bytes(info.bytes_on_disk)))
    rows += [
        ("Context", f"{info.context_length:,} tokens" if info.context_length else "?"),
        ("Layers", str(info.layers or "?")),
        ("Heads", f"{info.attention_heads or '?'} attention, {info.kv_heads or '?'} KV, head dim {info.head_dim or '?'}"),
    ]
    if info.sliding_window:
        rows.append(("Sliding window", f"{info.sliding_window:,} tokens on {info.sliding_window_layers} layers"))
    if info.experts:
        rows.append(("Experts", f"{info.experts} ({info.experts_per_token or '?'} per token)"))
    rows += [
        ("Tokenizer", _yes(info.has_tokenizer)),
        ("Chat template", _yes(info.has_chat_template)),
    ]
    if info.kind != "gguf":
        rows.append(("GGUF convertible", _yes(info.gguf_convertible)))
    if info.quantized:
        rows.append(("Already quantized", info.quantized))
    if info.pickle_only:
        rows.append(("Weights", "pickle (.bin) only"))
    for warning in info.warnings:
        rows.append(("Note", warning))
    width = max(len(k) for k, _ in rows)
    # Names and notes come from the model's own files: one printable line each, whatever they hold.
    return "\n".join(f"{k:<{width}}  {one_line(v)}" for k, v in rows)
