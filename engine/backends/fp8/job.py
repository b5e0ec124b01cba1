"""FP8's job: run the worker in a child, then describe the folder and rename it into place."""

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
from engine.backends.fp8.plan import SCHEME, Fp8Plan
from engine.inspect import model_name
from engine.jobs import CancelToken, JobGen, Progress, relay, run_in_child
from engine.units import format_bytes


def run_plan(plan: Fp8Plan, cancel: CancelToken) -> JobGen[list[OutputRecord]]:
    """Write the FP8 folder under its temporary name, verify it in the child, then rename it into place.

    The folder is recorded in the job's transaction before the child writes it;
    an earlier QuantDesk folder of the same name is kept aside until the job
    succeeds, and comes back if it does not.
    """
    source, final, part = plan.source, plan.final, plan.part
    yield Progress(step="loading", fraction=0.0,
                   message=f"FP8 E4M3 of {source.folder.name}: about {format_bytes(plan.estimate_bytes)}, "
                           f"{format_bytes(plan.ram_bytes)} of memory, roughly {plan.estimated_s:.0f} s")
    txn, own_txn = plan_transaction(plan)
    txn.part(final)
    try:
        child = run_in_child(_worker_entry, str(source.folder), str(part), final.name, plan.request.threads,
                             name="FP8 worker", cancel=cancel)
    except BaseException:
        if own_txn:
            txn.rollback()
        raise
    try:
        result: dict[str, Any] = yield from relay(
            child, lambda msg: _progress(msg[1], plan.format.id) if msg[0] == "progress" else None)
        cancel.raise_if_cancelled()
        yield Progress(step="finishing", fraction=1.0, message="Writing the model card and library record")
        record = _record(plan, result, size_on_disk(part))
        _write_card(part, record)
        txn.promote(part, final, made_by_quantdesk)
        txn.claim(sidecar_path(final), is_sidecar)
        record = write_sidecar(final, format=record.format, source=source.folder, options=record.options,
                               versions=record.versions, source_name=record.source_name,
                               source_params=source.params)
        from engine.modelcard import write_model_card

        write_model_card(plan.request.out_dir, source=source.folder.resolve(), txn=txn)
        if own_txn:
            txn.commit()
        return [OutputRecord(final, plan.format.id, record.size_bytes)]
    except BaseException:
        child.close()  # ends the child before its folder is removed
        if own_txn:  # else the job's owner undoes it
            txn.rollback()
        raise


def _record(plan: Fp8Plan, result: dict[str, Any], size: int) -> Artifact:
    """What the sidecar and the card say about the finished folder."""
    source = plan.source
    options: dict[str, Any] = {
        "scheme": SCHEME, "weights": "FP8 E4M3, one scale per output channel, round-to-nearest",
        "activations": "FP8 E4M3, dynamic per token", "layout": "compressed-tensors (float-quantized)",
        "quantized_modules": result["quantized_modules"], "unquantized_linear": result["ignored_modules"],
    }
    if source.params:
        options["bits_per_weight"] = round(size * 8 / source.params, 3)
    return Artifact(path=plan.final, format=plan.format.id, source=str(source.folder.resolve()), size_bytes=size,
                    options=options, versions={**package_versions(), **result["versions"]},
                    source_name=model_name(source.folder), source_params=source.params,
                    created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def _worker_entry(reporter: Any, source: str, part: str, name: str, threads: int | None) -> dict[str, Any]:
    # Imported in the child only: keeps torch and transformers out of the caller.
    from engine.backends.fp8.worker import quantize_checkpoint

    return quantize_checkpoint(reporter, source, part, name, threads)


# How far the job has got when each step starts and ends.
_SPANS = {"loading": (0.0, 0.1), "quantizing": (0.1, 0.6), "saving": (0.6, 0.65), "verifying": (0.65, 1.0)}


def _progress(payload: dict[str, Any], fmt: str) -> Progress:
    step = payload.get("step", "quantizing")
    lo, hi = _SPANS.get(step, (0.0, 1.0))
    within = max(0.0, min(1.0, float(payload.get("within", 0.0))))
    return Progress(
        step=step, fraction=lo + (hi - lo) * within, message=payload.get("message", ""),
        tensor_index=payload.get("tensor_index"), tensor_count=payload.get("tensor_count"),
        tensor_name=payload.get("tensor_name"), extra={"format": fmt},
    )


def _write_card(folder: Path, record: Artifact) -> None:
    """README.md inside the folder: the shared model card plus where FP8 runs and how to serve it."""
    from engine.modelcard import read_chat_template, render_card

    source = Path(record.source)
    text = render_card([record], source=source, chat_template=read_chat_template(source), modelfile=None)
    left = ", ".join(f"`{m}`" for m in record.options.get("unquantized_linear") or []) or "none"
    text += (
        "\n## FP8 E4M3 (compressed-tensors)\n\n"
        "Weights are FP8 E4M3, rounded to nearest with one scale per output channel; activations are quantized "
        "to FP8 per token while the model runs (the FP8_DYNAMIC scheme), so no calibration data was used. "
        f"Linear layers kept in 16 bits: {left}. The settings are stored in `config.json` "
        "(`quant_method: compressed-tensors`).\n\n"
        "It runs natively on NVIDIA Ada (RTX 40xx, L4, L40) and Hopper (H100/H200) GPUs with vLLM, which "
        "reads the format from `config.json` by itself:\n\n"
        f"```\nvllm serve {record.path.name}\n```\n\n"
        "On Turing and Ampere GPUs (RTX 20xx/30xx, A100) vLLM runs dense models as weight-only FP8 (Marlin "
        "kernels): half the memory, without FP8 arithmetic. With `pip install transformers \"compressed-tensors>=0.20\"` it also loads with plain "
        "`AutoModelForCausalLM.from_pretrained` on any GPU or CPU; transformers then expands the weights to "
        "16 bits at the first forward pass, so it needs the memory of the 16-bit model and runs slower than it.\n"
    )
    (folder / "README.md").write_text(text, encoding="utf-8")
