"""What every backend that writes Hugging Face folders does around its child process.

bitsandbytes, GPTQ/AWQ and FP8 each start one worker child that writes every
target into its temporary ``.part`` folder and verifies it; this module records
those folders in the job's transaction before the child starts, relays its
progress, and once it has finished writes each folder's card, renames it into
place, writes its sidecar and the folder's model card. A cancel or a failure
ends the child first, then undoes exactly what the job wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engine.artifacts import (
    Artifact,
    is_sidecar,
    made_by_quantdesk,
    package_versions,
    sidecar_path,
    size_on_disk,
    write_sidecar,
)
from engine.backends.base import OutputRecord, Plan, plan_transaction
from engine.inspect import model_name
from engine.jobs import CancelToken, JobGen, Progress, relay

# (index of the target, its result from the child, its size on disk) -> what the sidecar and card say
Describe = Callable[[int, dict[str, Any], int], Artifact]


def run_folder_job(plan: Plan, cancel: CancelToken, *, source: Path, finals: list[Path], parts: list[Path],
                   start: Callable[[], Any], progress: Callable[[dict[str, Any]], Progress | None],
                   describe: Describe, card_section: Callable[[Artifact], str]) -> JobGen[list[OutputRecord]]:
    """Run the child ``start()`` returns, then finish each of its folders; returns the outputs."""
    txn, own_txn = plan_transaction(plan)
    for final in finals:
        txn.part(final)
    try:
        child = start()
    except BaseException:
        if own_txn:
            txn.rollback()
        raise
    try:
        reached = [0.0]

        def forward(msg: tuple[str, Any]) -> Progress | None:
            """The child's progress as the job's; the bar never goes back (a child reads texts before loading)."""
            event = progress(msg[1]) if msg[0] == "progress" else None
            if event is not None:
                reached[0] = event.fraction = max(reached[0], event.fraction)
            return event

        results = yield from relay(child, forward)
        cancel.raise_if_cancelled()
        if isinstance(results, dict):
            results = [results]
        yield Progress(step="finishing", fraction=1.0, message="Writing model cards and library records")
        outputs: list[OutputRecord] = []
        for index, (part, final, result) in enumerate(zip(parts, finals, results, strict=True)):
            record = describe(index, result, size_on_disk(part))
            _write_card(part, record, card_section(record))
            txn.promote(part, final, made_by_quantdesk)
            txn.claim(sidecar_path(final), is_sidecar)
            record = write_sidecar(
                final, format=record.format, source=source, options=record.options, versions=record.versions,
                source_name=record.source_name, source_params=record.source_params,
            )
            outputs.append(OutputRecord(final, record.format, record.size_bytes))
        from engine.modelcard import write_model_card

        write_model_card(plan.request.out_dir, source=source.resolve(), txn=txn)
        if own_txn:
            txn.commit()
        return outputs
    except BaseException:
        child.close()  # ends the child before its folders are removed
        if own_txn:  # else the job's owner undoes it
            txn.rollback()
        raise


def folder_artifact(final: Path, fmt: str, source: Path, params: int | None, size: int, options: dict[str, Any],
                    versions: dict[str, str], *packages: str) -> Artifact:
    """The record of one finished folder, with its bits per weight when the source's size is known.

    ``versions`` are what the child imported; ``packages`` more names whose installed versions count.
    """
    if params:
        options = {**options, "bits_per_weight": round(size * 8 / params, 3)}
    return Artifact(path=final, format=fmt, source=str(source.resolve()), size_bytes=size, options=options,
                    versions={**package_versions(*packages), **versions}, source_name=model_name(source),
                    source_params=params, created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def _write_card(folder: Path, record: Artifact, section: str) -> None:
    """README.md inside the folder: the shared model card plus the backend's own section."""
    from engine.modelcard import read_chat_template, render_card

    source = Path(record.source)
    text = render_card([record], source=source, chat_template=read_chat_template(source), modelfile=None)
    (folder / "README.md").write_text(text + section, encoding="utf-8")


def target_progress(payload: dict[str, Any], n_targets: int, spans: dict[str, tuple[float, float]]) -> Progress:
    """A child's progress for one of ``n_targets`` targets as a fraction of the whole job."""
    step = payload.get("step", "quantizing")
    lo, hi = spans.get(step, (0.0, 1.0))
    within = lo + (hi - lo) * max(0.0, min(1.0, float(payload.get("within", 0.0))))
    index = int(payload.get("target_index", 0))
    extra = {k: payload[k] for k in ("layer_index", "layer_count") if payload.get(k) is not None}
    if payload.get("format"):
        extra["format"] = payload["format"]
    return Progress(
        step=step, fraction=min(1.0, (index + within) / max(1, n_targets)), message=payload.get("message", ""),
        tensor_index=payload.get("tensor_index"), tensor_count=payload.get("tensor_count"),
        tensor_name=payload.get("tensor_name"), extra=extra,
    )
