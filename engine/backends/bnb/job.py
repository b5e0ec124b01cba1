"""bitsandbytes' job: run the worker on the plan's targets in a child, then name, describe and rename."""

from __future__ import annotations

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
from engine.backends.base import OutputRecord, plan_transaction
from engine.backends.bnb.plan import CPU_SLOW_NOTE, MIN_BNB_VERSION, BnbPlan, BnbTarget, SourceInfo
from engine.inspect import model_name
from engine.jobs import CancelToken, JobGen, Progress, relay, run_in_child


def run_plan(plan: BnbPlan, cancel: CancelToken) -> JobGen[list[OutputRecord]]:
    """Quantize every target into its temporary folder, verify in the child, then rename into place.

    Every folder is recorded in the job's transaction before the child writes
    it; an earlier QuantDesk folder of the same name is kept aside until the
    job succeeds, and comes back if it does not.
    """
    source, out_dir = plan.source, plan.request.out_dir
    finals, parts = plan.finals, plan.parts
    if plan.device == "cpu":
        yield Progress(step="warning", fraction=0.0, message=CPU_SLOW_NOTE)
    jobs = [
        {"format": t.format.id, "label": t.format.label, "bnb_config": t.bnb_config, "part": str(p),
         "name": f.name}
        for t, p, f in zip(plan.bnb_targets, parts, finals, strict=True)
    ]
    txn, own_txn = plan_transaction(plan)
    for final in finals:
        txn.part(final)
    try:
        child = run_in_child(_worker_entry, str(source.folder), jobs, plan.asked_device, plan.request.threads,
                             name="bitsandbytes worker", cancel=cancel)
    except BaseException:
        if own_txn:
            txn.rollback()
        raise
    try:
        results: list[dict[str, Any]] = yield from relay(
            child, lambda msg: _progress(msg[1], len(jobs)) if msg[0] == "progress" else None)
        cancel.raise_if_cancelled()
        outputs: list[OutputRecord] = []
        yield Progress(step="finishing", fraction=1.0, message="Writing model cards and library records")
        for target, part, final, result in zip(plan.bnb_targets, parts, finals, results, strict=True):
            record = _record(final, source, target, result, size_on_disk(part))
            _write_card(part, record)
            txn.promote(part, final, made_by_quantdesk)
            txn.claim(sidecar_path(final), is_sidecar)
            record = write_sidecar(
                final, format=record.format, source=source.folder, options=record.options,
                versions=record.versions, source_name=record.source_name, source_params=source.params,
            )
            outputs.append(OutputRecord(final, target.format.id, record.size_bytes))
        from engine.modelcard import write_model_card

        write_model_card(out_dir, source=source.folder.resolve(), txn=txn)
        if own_txn:
            txn.commit()
        return outputs
    except BaseException:
        child.close()  # ends the child before its folders are removed
        if own_txn:  # else the job's owner undoes it
            txn.rollback()
        raise


def _record(final: Path, source: SourceInfo, plan: BnbTarget, result: dict[str, Any], size: int) -> Artifact:
    """What the sidecar and the card say about one finished folder."""
    options: dict[str, Any] = {**plan.options, "device": result["device"], "dtype": result["dtype"],
                               "quantized_modules": result["quantized_modules"]}
    if source.params:
        options["bits_per_weight"] = round(size * 8 / source.params, 3)
    return Artifact(path=final, format=plan.format.id, source=str(source.folder.resolve()), size_bytes=size,
                    options=options, versions={**package_versions(), **result["versions"]},
                    source_name=model_name(source.folder), source_params=source.params,
                    created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def _worker_entry(reporter: Any, source: str, jobs: list[dict[str, Any]], device: str,
                  threads: int | None) -> list[dict[str, Any]]:
    # Imported in the child only: keeps torch and transformers out of the caller.
    from engine.backends.bnb.worker import quantize_all

    return quantize_all(reporter, source, jobs, device, threads)


# Within one target, how far each step has got.
_SPANS = {"warning": (0.0, 0.0), "loading": (0.0, 0.05), "quantizing": (0.05, 0.75),
          "saving": (0.75, 0.85), "verifying": (0.85, 1.0)}


def _progress(payload: dict[str, Any], n_jobs: int) -> Progress:
    step = payload.get("step", "quantizing")
    lo, hi = _SPANS.get(step, (0.0, 1.0))
    within = lo + (hi - lo) * max(0.0, min(1.0, float(payload.get("within", 0.0))))
    index = int(payload.get("target_index", 0))
    return Progress(
        step=step,
        fraction=min(1.0, (index + within) / max(1, n_jobs)),
        message=payload.get("message", ""),
        tensor_index=payload.get("tensor_index"),
        tensor_count=payload.get("tensor_count"),
        tensor_name=payload.get("tensor_name"),
        extra={"format": payload["format"]} if payload.get("format") else {},
    )


def _write_card(folder: Path, record: Artifact) -> None:
    """README.md inside the folder: the shared model card plus what bitsandbytes needs to load it."""
    from engine.modelcard import read_chat_template, render_card

    source = Path(record.source)
    text = render_card([record], source=source, chat_template=read_chat_template(source), modelfile=None)
    settings = ", ".join(f"{k} {v}" for k, v in record.options.items()
                         if k in ("method", "quant_type", "double_quant", "compute_dtype", "int8_threshold"))
    where = "a CPU" if record.options.get("device") == "cpu" else "an NVIDIA GPU"
    text += (
        f"\n## bitsandbytes\n\n{record.format_label} ({settings}), quantized on {where}. The settings are "
        "stored in `config.json`, so `from_pretrained` needs no `quantization_config`; it needs "
        f'`pip install transformers accelerate "bitsandbytes>={MIN_BNB_VERSION}"`. It loads on an NVIDIA GPU '
        '(`device_map="cuda"`) or on a CPU with AVX2 (`device_map="cpu"`), where generation is much slower.\n'
    )
    (folder / "README.md").write_text(text, encoding="utf-8")
