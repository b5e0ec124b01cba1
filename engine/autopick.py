"""``--to auto --max-size 4GB``: the best GGUF that fits a size budget, chosen by measuring.

Converts once (the usual intermediate), asks llama.cpp for each candidate's
exact size with ``dry_run`` (nothing is written), quantizes the largest
``max_candidates`` that fit, runs the quick check on each and keeps the one with
the lowest KLD. The rest are this job's own files and go back through the job's
transaction (an earlier file of the same name comes back), unless the caller
keeps them. Every candidate's size and numbers go into the kept file's sidecar
(``evaluation["autopick"]``) and from there into the model card.

The search is bounded by count: the candidate list is fixed (CANDIDATES) and
at most ``max_candidates`` (default 3) of them are made and checked. With
``max_minutes`` it is bounded in time as well: the candidates are then made one
at a time, and a candidate is started only while the search (the conversion
included) has run less than that; the first is always made, and those made are
all checked (the choice needs them). Candidates that fit but were not made are
marked ``skipped`` with the reason, in the sidecar and the model card.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.backends.base import OutputRecord, QuantizeRequest
from engine.errors import QuantDeskError
from engine.fsutil import Transaction, check_out_text, require_free_space
from engine.jobs import CancelToken, JobGen, Progress, relay, run_in_child
from engine.units import format_bytes

DEFAULT_CANDIDATES = 3
_SIZE_SLACK = 16 * 1024  # llama.cpp reports sizes to 0.01 MiB: a candidate must fit with this to spare
_Q8_0, _Q6_K = 8, 14  # ggml type numbers
_OUT_EMB_Q8 = {"output_tensor_type": _Q8_0, "token_embedding_type": _Q8_0}
_ATTN_FFN_Q6 = {"tensor_types": [["attn_v", _Q6_K], ["ffn_down", _Q6_K]]}


@dataclass(frozen=True)
class Candidate:
    """One thing to try: a llama.cpp type, optionally with some tensors one step higher."""

    type: str  # the llama.cpp type name, e.g. Q4_K_M
    variant: str = ""  # suffix of the file's type name, e.g. "-O8"
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    about: str = ""

    @property
    def name(self) -> str:
        return self.type + self.variant


# The standard k-quants and the mixes people ask llama.cpp for by hand, largest first.
CANDIDATES: tuple[Candidate, ...] = (
    Candidate("Q8_0"),
    Candidate("Q6_K"),
    Candidate("Q5_K_M", "-O8", _OUT_EMB_Q8, "output and embeddings Q8_0"),
    Candidate("Q5_K_M"),
    Candidate("Q4_K_M", "-AF6", _ATTN_FFN_Q6, "attn_v and ffn_down Q6_K"),
    Candidate("Q4_K_M", "-O8", _OUT_EMB_Q8, "output and embeddings Q8_0"),
    Candidate("Q4_K_M"),
    Candidate("Q3_K_M"),
)


def auto_quantize(request: QuantizeRequest, max_bytes: int, *, max_candidates: int = DEFAULT_CANDIDATES,
                  keep_candidates: bool = False, candidates: tuple[Candidate, ...] = CANDIDATES,
                  max_minutes: float | None = None, cancel: CancelToken | None = None
                  ) -> JobGen[list[OutputRecord]]:
    """The whole search: yields Progress, returns the chosen output first (then the kept candidates)."""
    from engine.backends.gguf.plan import plan_job
    from engine.formats import FORMATS

    cancel = cancel or CancelToken()
    check_out_text(request.out_dir)
    if not Path(request.source).exists():
        raise QuantDeskError(f"{request.source} does not exist; check the path.")
    if max_candidates < 1:
        raise QuantDeskError("The number of candidates must be at least 1; try 3.")
    if max_minutes is not None and not max_minutes > 0:
        raise QuantDeskError("The time limit must be more than 0 minutes; try 10.")
    started = time.monotonic()
    first = FORMATS[f"gguf:{candidates[-1].type}"]
    plan = plan_job(request, [first])  # every check before a byte is written, the conversion's included
    txn = Transaction(Path(request.out_dir).expanduser(), overwrite=request.overwrite).begin()
    try:
        deadline = None if max_minutes is None else started + 60.0 * max_minutes
        result = yield from _search(request, plan, txn, max_bytes, max_candidates, keep_candidates, candidates,
                                    cancel, deadline, max_minutes)
        txn.commit()
    except BaseException:
        txn.rollback()
        raise
    yield Progress(step="done", fraction=1.0, message=f"{Path(result[0].path).name} chosen")
    return result


def _search(request: QuantizeRequest, plan: Any, txn: Transaction, max_bytes: int, max_candidates: int,
            keep_candidates: bool, candidates: tuple[Candidate, ...], cancel: CancelToken,
            deadline: float | None = None, max_minutes: float | None = None) -> JobGen[list[OutputRecord]]:
    from engine.artifacts import sidecar_path, update_evaluation
    from engine.backends.gguf.job import run_plan
    from engine.backends.gguf.plan import Output, output_name
    from engine.backends.gguf.quantize import dry_run_worker
    from engine.formats import FORMATS
    from engine.modelcard import write_model_card

    inter_path: Path | None = None
    if plan.intermediate is not None:  # convert once; every candidate is made from this file
        convert = dataclasses.replace(plan, quantize=[], keep_intermediate=True, warnings=[])
        convert.txn = txn
        yield from relay(run_plan(convert, cancel), _span(0.0, 0.3))
        inter_path = plan.intermediate.final
    input_file = inter_path or plan.source

    yield Progress(step="quantize", fraction=0.3, message="Measuring each candidate's exact size")
    jobs = [{"type": c.name, "ftype": int(FORMATS[f"gguf:{c.type}"].gguf_ftype or 0), "options": c.options,
             "requantize": plan.requantize} for c in candidates]
    sizes = yield from relay(run_in_child(dry_run_worker, str(input_file), jobs, plan.threads, cancel=cancel,
                                          name="quantizer"), lambda _msg: None)
    table = [{"type": c.name, "about": c.about or "standard mix", "size_bytes": size,
              "fits": size + _SIZE_SLACK <= max_bytes} for c, size in zip(candidates, sizes, strict=True)]
    plain = {c.type: size for c, size in zip(candidates, sizes, strict=True) if not c.variant}
    for c, row in zip(candidates, table, strict=True):
        if c.variant and plain.get(c.type) == row["size_bytes"]:  # llama.cpp already chose those types
            row.update(fits=False, about=f"{row['about']}: the same as {c.type} for this model")
    fitting = sorted((i for i, row in enumerate(table) if row["fits"]), key=lambda i: -table[i]["size_bytes"])
    if not fitting:
        smallest = min(table, key=lambda row: row["size_bytes"])
        raise QuantDeskError(
            f"The smallest candidate, {smallest['type']}, is {format_bytes(smallest['size_bytes'])}, more than "
            f"the budget of {format_bytes(max_bytes)}; raise --max-size or choose a smaller model.")
    tried = fitting[:max_candidates]
    for i in fitting[max_candidates:]:
        table[i]["skipped"] = f"only the largest {max_candidates} that fit are tried"
    require_free_space(plan.out_dir, sum(table[i]["size_bytes"] for i in tried), "the candidate GGUF files")
    outputs = [Output(FORMATS[f"gguf:{candidates[i].type}"],
                      plan.out_dir / output_name(plan.model_name, candidates[i].name),
                      candidates[i].variant, dict(candidates[i].options)) for i in tried]

    def make(some: list[Any]) -> Any:
        made = dataclasses.replace(plan, intermediate=None, keep_intermediate=False, quantize=some,
                                   input_file=inter_path, warnings=[])
        made.txn = txn
        return made

    if deadline is None:  # all in one quantizer process
        records = yield from relay(run_plan(make(outputs), cancel), _span(0.3, 0.6))
    else:  # one at a time, each started only before the deadline
        records = []
        for n, output in enumerate(outputs):
            if n and time.monotonic() >= deadline:
                for i in tried[n:]:
                    table[i]["skipped"] = f"not reached within the time limit of {max_minutes:g} min"
                yield Progress(step="warning", fraction=0.3 + 0.3 * n / len(outputs),
                               message=f"Time limit reached: {len(outputs) - n} candidate(s) skipped.")
                break
            records.extend((yield from relay(run_plan(make([output]), cancel),
                                             _span(0.3 + 0.3 * n / len(outputs), 0.3 + 0.3 * (n + 1) / len(outputs)))))
        tried = tried[:len(records)]

    for i in tried:
        table[i]["made"] = True
    klds = yield from _check(records, request, [table[i] for i in tried], cancel, _span(0.6, 1.0))
    scores = {i: kld for i, kld in zip(tried, klds, strict=True) if kld is not None}
    best = min(scores, key=lambda i: scores[i]) if scores else tried[0]
    if not scores:
        yield Progress(step="warning", fraction=1.0,
                       message="No candidate could be checked; the largest that fits is kept unjudged.")
    chosen = records[tried.index(best)]
    for row in table:
        row["chosen"] = row["type"] == candidates[best].name
    summary = {"max_bytes": max_bytes, "chosen": candidates[best].name, "by": "lowest KLD of those that fit",
               "max_candidates": max_candidates, "max_minutes": max_minutes, "candidates": table}
    update_evaluation(Path(chosen.path), {"autopick": summary})
    kept = [chosen]
    for i, record in zip(tried, records, strict=True):
        if i == best:
            continue
        if keep_candidates:
            kept.append(record)
        else:
            txn.take_back(Path(record.path))
            txn.take_back(sidecar_path(Path(record.path)))
    if inter_path is not None and not request.gguf.keep_intermediate:
        txn.take_back(inter_path)
        txn.take_back(sidecar_path(inter_path))
    try:
        write_model_card(plan.out_dir, source=Path(plan.source).resolve(), txn=txn)
    except (OSError, QuantDeskError) as err:
        yield Progress(step="warning", fraction=1.0, message=f"The model card was not written ({err}).")
    return kept


def _check(records: list[OutputRecord], request: QuantizeRequest, rows: list[dict[str, Any]], cancel: CancelToken,
           scale: Callable[[Progress], Progress | None]) -> JobGen[list[float | None]]:
    """The quick check of every candidate in one child (the source scored once); numbers go into ``rows``.

    Returns each candidate's mean KLD, None for one that could not be checked (a warning).
    """
    from engine.errors import JobCancelled
    from engine.evaluate.quick_check import quick_check_all
    from engine.terminal import one_line

    try:
        results = yield from relay(quick_check_all([Path(r.path) for r in records], Path(request.source),
                                                   device="cpu", threads=request.threads, cancel=cancel,
                                                   names=[row["type"] for row in rows], keep_going=True), scale)
    except JobCancelled:
        raise
    except Exception as err:  # noqa: BLE001 - candidates that cannot be judged are not chosen
        yield Progress(step="warning", fraction=0.0, message=f"Could not check the candidates ({one_line(str(err), 300)}).")
        return [None] * len(records)
    klds: list[float | None] = []
    for record, row, result in zip(records, rows, results, strict=True):
        if "error" in result:
            yield Progress(step="warning", fraction=0.0,
                           message=f"Could not check {Path(record.path).name} ({result['error']}).")
            klds.append(None)
            continue
        record.verdict, record.verdict_evidence = result["verdict"], result["evidence"]
        row.update({k: result[k] for k in ("verdict", "kld_mean", "kld_p99", "same_top_pct", "delta_ppl_pct")})
        klds.append(float(result["kld_mean"]))
    return klds


def _span(start: float, end: float) -> Callable[[Progress], Progress | None]:
    """Maps a step's own 0..1 progress onto [start, end] of the search; its "done" event is dropped."""

    def scale(event: Progress) -> Progress | None:
        if event.step == "done":
            return None
        event.fraction = start + (end - start) * max(0.0, min(1.0, event.fraction))
        event.eta_s = None
        return event

    return scale
