"""Every artifact of one source side by side: size, bits per weight, quality and speed, from the sidecars."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.artifacts import Artifact, list_artifacts
from engine.errors import QuantDeskError

_FULL_PRECISION = ("gguf:F32", "gguf:F16", "gguf:BF16", "hf:fp16")


@dataclass
class Row:
    name: str
    path: str
    format: str
    source: str
    size_bytes: int
    bits_per_weight: float | None
    ppl: float | None
    delta_ppl: float | None
    kld_mean: float | None
    gen_tps: float | None
    prompt_tps: float | None
    verdict: str | None = None  # the quick check's (engine.evaluate.verdict)
    verdict_evidence: str | None = None
    check_delta_ppl_pct: float | None = None  # the quick check's ΔPPL, in % of the original's
    check_kld_mean: float | None = None  # the quick check's mean KLD against the original
    base_from_cache: bool = False  # the original's PPL (for ΔPPL) was read from the evaluation cache

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _candidates(target: Path) -> list[Path]:
    folders = [target] if target.is_dir() else []
    parent = target.parent
    folders.append(parent)
    for folder in (target, parent):
        if folder.is_dir():
            folders += [p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    seen: list[Path] = []
    for f in folders:
        if f not in seen:
            seen.append(f)
    return seen


def find_artifacts(src_or_dir: Path, warn: Callable[[str], None] | None = None) -> list[Artifact]:
    """The artifacts of one source: those in a folder of outputs, or those whose sidecar names ``src``.

    An output whose sidecar is damaged is left out; ``warn`` hears one sentence for each.
    """
    target = Path(src_or_dir).expanduser()
    if not target.exists():
        raise QuantDeskError(f"{target} does not exist; point at a source model or a folder of outputs.")
    found: dict[str, Artifact] = {}
    told: set[str] = set()

    def tell(message: str) -> None:
        if warn is not None and message not in told:
            told.add(message)
            warn(message)

    direct = list_artifacts(target, warn=tell) if target.is_dir() else []
    if direct:
        for art in direct:
            found[str(art.path)] = art
    else:
        wanted = str(target.resolve())
        for folder in _candidates(target):
            for art in list_artifacts(folder, warn=tell):
                if art.source == wanted:
                    found[str(art.path)] = art
    if not found:
        raise QuantDeskError(
            f"No QuantDesk outputs found for {target}; quantize it first or point at the output folder."
        )
    return sorted(found.values(), key=lambda a: (-a.size_bytes, a.path.name))


def _parameters(source: str) -> int | None:
    if not source:
        return None
    try:
        from engine.inspect import inspect_model

        return inspect_model(source).parameters or None
    except Exception:  # noqa: BLE001 - a moved or missing source only loses this column
        return None


def compare_rows(artifacts: list[Artifact]) -> list[Row]:
    from engine.formats import FORMATS

    params: dict[str, int | None] = {}
    reference = _reference_ppl(artifacts)
    # A KLD run records the PPL of its base (the model it was compared against).
    measured_as_base = {a.evaluation["base"]: _number(a.evaluation, "base_ppl") for a in artifacts
                        if isinstance((a.evaluation or {}).get("base"), str)
                        and _number(a.evaluation, "base_ppl") is not None}
    rows = []
    for art in artifacts:
        ev = _numbers(art.evaluation)
        bpw = art.bits_per_weight  # from the parameter count the sidecar recorded
        if bpw is None and art.source not in params:
            params[art.source] = _parameters(art.source)
        n = params.get(art.source)
        if bpw is None and n:
            bpw = art.size_bytes * 8 / n
        elif bpw is None:
            fmt = FORMATS.get(art.format)
            bpw = fmt.bits_per_weight if fmt else None
        ppl = ev.get("ppl")
        if ppl is None:  # e.g. the original: measured as the base of another artifact's KLD run
            ppl = measured_as_base.get(str(Path(art.path).resolve()))
        raw = art.evaluation if isinstance(art.evaluation, dict) else {}
        base = ev.get("base_ppl") or reference.get(_text_key(ev))
        from_cache = False
        if base is None and ppl is not None and art.format not in _FULL_PRECISION:
            base = _cached_original_ppl(art, ev, raw)
            from_cache = base is not None
        delta = ppl - base if ppl is not None and base is not None else None
        check = raw.get("quick_check") if isinstance(raw.get("quick_check"), dict) else {}
        rows.append(Row(art.path.name, str(art.path), art.format, art.source, art.size_bytes, bpw, ppl, delta,
                        ev.get("kld_mean"), ev.get("gen_tps"), ev.get("prompt_tps"),
                        _text(raw, "verdict"), _text(raw, "verdict_evidence"), _number(check, "delta_ppl_pct"),
                        _number(check, "kld_mean"), from_cache))
    return rows


def _cached_original_ppl(art: Artifact, ev: dict[str, Any], raw: dict[str, Any]) -> float | None:
    """The original's PPL over the text this output was measured on, from the cache beside it (no model runs).

    Only for the shipped texts (the only ones a sidecar names well enough to rebuild) and a source still there.
    """
    if ev.get("text") != "built-in texts" or not isinstance(ev.get("n_ctx"), int) or not art.source:
        return None
    from engine.evaluate.reference import cached_reference
    from engine.evaluate.texts import default_text

    device = raw.get("device") if raw.get("device") in ("cpu", "cuda") else "cpu"
    run = cached_reference(art.path, art.source, default_text(), ev["n_ctx"], device=device)
    return run.base_ppl if run is not None else None


_KEEPABLE = ("near-lossless", "small loss")
_DEFAULTS = ("verdict", "verdict_evidence", "check_delta_ppl_pct", "check_kld_mean", "base_from_cache")


def headline(rows: list[Row]) -> str | None:
    """Which file to keep: the smallest output judged near-lossless or small loss, and what it saves.

    None when no output carries a verdict yet (nothing to say).
    """
    judged = [r for r in rows if r.verdict]
    if not judged:
        return None
    best = recommended(rows)
    if best is None:
        return ("No output keeps the original's quality: none was judged near-lossless or small loss; "
                "try a larger type such as Q8_0.")
    kind = best.format.split(":", 1)[-1] or best.name
    original = _original_size(rows, best.source)
    saving = (f"{100.0 * (1.0 - best.size_bytes / original):.0f}% smaller than the original"
              if original and original > best.size_bytes else f"{_size(best.size_bytes)}")
    quality = best.verdict or ""
    if best.check_delta_ppl_pct is not None:
        quality = f"{quality}, perplexity within {max(abs(best.check_delta_ppl_pct), 0.1):.1f}% of the original's"
    return f"Keep {kind}: {saving} ({quality})."


def recommended(rows: list[Row]) -> Row | None:
    """The row the headline tells the user to keep: the smallest output judged near-lossless or small loss."""
    keep = [r for r in rows if r.verdict in _KEEPABLE and r.format not in _FULL_PRECISION]
    return min(keep, key=lambda r: (r.size_bytes, r.name)) if keep else None


def recommended_path(rows: list[dict[str, Any]]) -> str | None:
    """``recommended`` for rows as ``Row.to_dict`` gives them: the path of the file to keep."""
    from dataclasses import fields

    names = [f.name for f in fields(Row)]
    best = recommended([Row(**{n: row.get(n) for n in names if n in row or n not in _DEFAULTS})
                        for row in rows if row.get("verdict") and row.get("size_bytes")])
    return best.path if best is not None else None


def headline_of(rows: list[dict[str, Any]]) -> str | None:
    """``headline`` for rows as ``Row.to_dict`` gives them (the window's library)."""
    from dataclasses import fields

    names = {f.name for f in fields(Row)}
    return headline([Row(**{k: v for k, v in row.items() if k in names}) for row in rows])


def _size(n: int) -> str:
    from engine.units import format_bytes

    return format_bytes(n)


def _original_size(rows: list[Row], source: str) -> int | None:
    """The original's size: its own row, a full-precision output of the same source, else the source on disk."""
    import os

    real = os.path.realpath(source) if source else ""
    for r in rows:
        if real and os.path.realpath(r.path) == real:
            return r.size_bytes
    for r in rows:
        if r.format in _FULL_PRECISION and r.source == source:
            return r.size_bytes
    if source and Path(source).exists():
        from engine.artifacts import size_on_disk

        try:
            return size_on_disk(Path(source)) or None
        except OSError:
            return None
    return None


def _text(ev: dict[str, Any], key: str) -> str | None:
    value = ev.get(key)
    return value if isinstance(value, str) and value else None


def _number(ev: dict[str, Any] | None, key: str) -> float | None:
    """A measured number from a sidecar's evaluation; None when absent or not a number."""
    value = (ev or {}).get(key)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _numbers(ev: dict[str, Any] | None) -> dict[str, Any]:
    """The evaluation with every measurement that is not a number dropped (text and n_ctx kept hashable)."""
    ev = ev if isinstance(ev, dict) else {}
    out: dict[str, Any] = {k: _number(ev, k) for k in ("ppl", "base_ppl", "kld_mean", "gen_tps", "prompt_tps")}
    for key in ("text", "n_ctx"):
        value = ev.get(key)
        out[key] = value if isinstance(value, (str, int, float)) else None
    return {k: v for k, v in out.items() if v is not None}


def _text_key(ev: dict[str, Any]) -> tuple[Any, Any]:
    return ev.get("text"), ev.get("n_ctx")


def _reference_ppl(artifacts: list[Artifact]) -> dict[tuple[Any, Any], float]:
    """The full-precision artifact's PPL for each (text, context) it was measured on."""
    ref: dict[tuple[Any, Any], float] = {}
    for art in artifacts:
        ev = _numbers(art.evaluation)
        if art.format in _FULL_PRECISION and ev.get("ppl") is not None:
            ref.setdefault(_text_key(ev), ev["ppl"])
    return ref


def format_table(rows: list[Row]) -> str:
    from engine.units import format_bytes

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    header = ("artifact", "format", "size", "bpw", "PPL", "ΔPPL", "KLD", "tok/s", "verdict")
    body = [
        (
            r.name,
            r.format or "?",
            format_bytes(r.size_bytes),
            num(r.bits_per_weight, ".2f"),
            num(r.ppl, ".4f"),
            num(r.delta_ppl, "+.4f"),
            num(r.kld_mean, ".5f"),
            num(r.gen_tps, ".1f"),
            r.verdict or "-",
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=True)]
    lines = []
    for i, line in enumerate([header, *body]):
        cells = [str(c).ljust(w) if j < 2 or j == len(widths) - 1 else str(c).rjust(w)
                 for j, (c, w) in enumerate(zip(line, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
