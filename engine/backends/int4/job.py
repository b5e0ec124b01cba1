"""GPTQ's and AWQ's job: run the worker on the plan's targets in a child, then describe and rename."""

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
from engine.backends.int4.plan import (
    GPTQMODEL_REQUIREMENT,
    METHOD_NAMES,
    Int4Plan,
    Int4Target,
    describe_estimate,
)
from engine.inspect import model_name
from engine.jobs import CancelToken, JobGen, Progress, relay, run_in_child


def run_plan(plan: Int4Plan, cancel: CancelToken) -> JobGen[list[OutputRecord]]:
    """Calibrate and quantize every target into its temporary folder, verify in the child, then rename.

    Every folder is recorded in the job's transaction before the child writes
    it; a cancel or a failure removes it, and an earlier QuantDesk folder of the
    same name comes back.
    """
    source = plan.source
    finals, parts = plan.finals, plan.parts
    method = METHOD_NAMES[plan.method]
    for warning in plan.warnings:
        yield Progress(step="warning", fraction=0.0, message=warning)
    yield Progress(step="loading", fraction=0.0,
                   message=f"{method} on the {'GPU' if plan.device == 'cuda' else 'CPU'}: "
                           f"about {describe_estimate(plan.estimate_s)} (a rough estimate)",
                   extra={"estimate_s": round(plan.estimate_s)})
    per_layer = _modules_per_layer(plan)
    jobs = [
        {"format": t.format.id, "label": t.format.label, "method": t.method, "settings": t.settings,
         "part": str(p), "name": f.name, "modules_per_layer": per_layer}
        for t, p, f in zip(plan.int4_targets, parts, finals, strict=True)
    ]
    calib = plan.request.calibration
    calibration = {"data": calib.data, "samples": calib.samples, "seq_len": calib.seq_len}
    reached = [0.0]  # the bar never goes back (the calibration texts are read before the libraries load)
    txn, own_txn = plan_transaction(plan)
    for final in finals:
        txn.part(final)
    try:
        child = run_in_child(_worker_entry, str(source.folder), jobs, plan.asked_device, plan.request.threads,
                             calibration, plan.compute_dtype, source.dtype, name=f"{method} worker",
                             cancel=cancel)
    except BaseException:
        if own_txn:
            txn.rollback()
        raise
    try:
        results: list[dict[str, Any]] = yield from relay(
            child, lambda msg: _progress(msg[1], len(jobs), reached) if msg[0] == "progress" else None)
        cancel.raise_if_cancelled()
        outputs: list[OutputRecord] = []
        yield Progress(step="finishing", fraction=1.0, message="Writing model cards and library records")
        for target, part, final, result in zip(plan.int4_targets, parts, finals, results, strict=True):
            record = _record(final, plan, target, result, size_on_disk(part))
            _write_card(part, record)
            txn.promote(part, final, made_by_quantdesk)
            txn.claim(sidecar_path(final), is_sidecar)
            record = write_sidecar(
                final, format=record.format, source=source.folder, options=record.options,
                versions=record.versions, source_name=record.source_name, source_params=source.params,
            )
            outputs.append(OutputRecord(final, target.format.id, record.size_bytes))
        from engine.modelcard import write_model_card

        write_model_card(plan.request.out_dir, source=source.folder.resolve(), txn=txn)
        if own_txn:
            txn.commit()
        return outputs
    except BaseException:
        child.close()  # ends the child before its folders are removed
        if own_txn:  # else the job's owner undoes it
            txn.rollback()
        raise


def _modules_per_layer(plan: Int4Plan) -> int:
    layers = int(plan.source.text_config.get("num_hidden_layers") or 0)
    return max(1, round(len(plan.source.linear_shapes) / layers)) if layers else 7


def _record(final: Path, plan: Int4Plan, target: Int4Target, result: dict[str, Any], size: int) -> Artifact:
    """What the sidecar and the card say about one finished folder."""
    source = plan.source
    options: dict[str, Any] = {
        **target.options, "library": f"gptqmodel {result['versions'].get('gptqmodel', '?')}",
        "device": result["device"], "dtype": result["dtype"], "compute_dtype": result["compute_dtype"],
        "quantized_modules": result["quantized_modules"], "calibration": result["calibration"],
    }
    if result.get("awq_search"):
        options["awq_search"] = result["awq_search"]
    if source.params:
        options["bits_per_weight"] = round(size * 8 / source.params, 3)
    return Artifact(path=final, format=target.format.id, source=str(source.folder.resolve()), size_bytes=size,
                    options=options, versions={**package_versions("optimum"), **result["versions"]},
                    source_name=model_name(source.folder), source_params=source.params,
                    created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def _worker_entry(reporter: Any, source: str, jobs: list[dict[str, Any]], device: str, threads: int | None,
                  calibration: dict[str, Any], compute_dtype: str, source_dtype: str) -> list[dict[str, Any]]:
    # Imported in the child only: keeps torch, transformers and gptqmodel out of the caller.
    from engine.backends.int4.worker import quantize_all

    return quantize_all(reporter, source, jobs, device, threads, calibration, compute_dtype, source_dtype)


# Within one target, how far each step has got.
_SPANS = {"warning": (0.0, 0.0), "loading": (0.0, 0.05), "calibrating": (0.05, 0.1), "quantizing": (0.1, 0.85),
          "saving": (0.85, 0.9), "verifying": (0.9, 1.0)}


def _progress(payload: dict[str, Any], n_jobs: int, reached: list[float]) -> Progress:
    step = payload.get("step", "quantizing")
    lo, hi = _SPANS.get(step, (0.0, 1.0))
    within = lo + (hi - lo) * max(0.0, min(1.0, float(payload.get("within", 0.0))))
    index = int(payload.get("target_index", 0))
    reached[0] = max(reached[0], min(1.0, (index + within) / max(1, n_jobs)))
    extra = {"format": payload["format"]} if payload.get("format") else {}
    for key in ("layer_index", "layer_count"):
        if payload.get(key) is not None:
            extra[key] = payload[key]
    return Progress(
        step=step,
        fraction=reached[0],
        message=payload.get("message", ""),
        tensor_index=payload.get("tensor_index"),
        tensor_count=payload.get("tensor_count"),
        tensor_name=payload.get("tensor_name"),
        extra=extra,
    )


# vLLM's kernels and the compute capability each needs (vllm/model_executor/layers/quantization).
_VLLM = {
    "gptq": ("gptq_marlin", "gptq", "6.0 (Pascal)"),
    "awq": ("awq_marlin", "awq", "7.5 (Turing)"),
}


def _write_card(folder: Path, record: Artifact) -> None:
    """README.md inside the folder: the shared model card plus how to serve and load this format."""
    import shlex

    from engine.modelcard import read_chat_template, render_card

    source = Path(record.source)
    text = render_card([record], source=source, chat_template=read_chat_template(source), modelfile=None)
    opts = record.options
    method = str(opts.get("method", "GPTQ"))
    key = method.lower()
    marlin, plain, oldest = _VLLM.get(key, _VLLM["gptq"])
    calib = opts.get("calibration") or {}
    settings = [f"{opts.get('bits', 4)}-bit", f"group size {opts.get('group_size')}",
                "symmetric" if opts.get("sym") else "asymmetric (zero points)"]
    if key == "gptq":
        settings += [f"act-order {'on' if opts.get('desc_act') else 'off'}", f"damping {opts.get('damp')}"]
    else:
        settings.append("GEMM layout")
    where = "an NVIDIA GPU" if opts.get("device") == "cuda" else "the CPU"
    overlap = " (the texts were shorter than that, so samples overlap)" if calib.get("overlapping") else ""
    folder_arg = shlex.quote(folder.name.split(".")[0] if folder.name.endswith(".quantdesk-part") else folder.name)
    text += (
        f"\n## {method}\n\n{record.format_label}: {', '.join(settings)}; made with {opts.get('library')} on "
        f"{where}. Calibrated on {calib.get('samples', '?')} samples of {calib.get('seq_len', '?')} tokens from "
        f"{calib.get('data', '?')}{overlap}"
        f"{', conversations rendered with the model' + chr(39) + 's chat template' if calib.get('chat_template') else ''}."
        "\n\n### Serve it with vLLM\n\n```sh\n"
        f"vllm serve {folder_arg}\n```\n\n"
        f"vLLM reads the method from `config.json` and uses its Marlin kernel (`{marlin}`) on NVIDIA GPUs of compute "
        f"capability 8.0 or newer (Ampere, Ada, Hopper, Blackwell: A100, RTX 30xx/40xx/50xx, L4, H100). Older GPUs "
        f"down to compute capability {oldest} need `--quantization {plain}`, which is slower. "
        "vLLM does not run it on a CPU.\n\n"
        "### Load it with transformers\n\n"
        f'`pip install transformers optimum "{GPTQMODEL_REQUIREMENT}"`, then `from_pretrained` as shown above '
        '(`device_map="cuda"` on a GPU; `device_map="cpu"` works too, slowly). The settings are stored in '
        "`config.json`, so no `quantization_config` is needed.\n"
    )
    (folder / "README.md").write_text(text, encoding="utf-8")
