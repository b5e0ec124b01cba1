"""GPTQ's and AWQ's job: run the worker on the plan's targets in a child, then describe and rename."""

from __future__ import annotations

from typing import Any

from engine.artifacts import Artifact
from engine.backends.base import OutputRecord
from engine.backends.folder_job import folder_artifact, run_folder_job, target_progress
from engine.backends.int4.plan import (
    GPTQMODEL_REQUIREMENT,
    METHOD_NAMES,
    Int4Plan,
    describe_estimate,
)
from engine.jobs import CancelToken, JobGen, Progress, run_in_child


def run_plan(plan: Int4Plan, cancel: CancelToken) -> JobGen[list[OutputRecord]]:
    """Calibrate and quantize every target into its temporary folder, verify in the child, then rename.

    Every folder is recorded in the job's transaction before the child writes
    it; a cancel or a failure removes it, and an earlier QuantDesk folder of the
    same name comes back.
    """
    source = plan.source
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
        for t, p, f in zip(plan.int4_targets, plan.parts, plan.finals, strict=True)
    ]
    calib = plan.request.calibration
    calibration = {"data": calib.data, "samples": calib.samples, "seq_len": calib.seq_len}

    def describe(index: int, result: dict[str, Any], size: int) -> Artifact:
        target = plan.int4_targets[index]
        options: dict[str, Any] = {
            **target.options, "library": f"gptqmodel {result['versions'].get('gptqmodel', '?')}",
            "device": result["device"], "dtype": result["dtype"], "compute_dtype": result["compute_dtype"],
            "quantized_modules": result["quantized_modules"], "calibration": result["calibration"],
        }
        if result.get("awq_search"):
            options["awq_search"] = result["awq_search"]
        return folder_artifact(plan.finals[index], target.format.id, source.folder, source.params, size, options,
                               result["versions"], "optimum")

    return (yield from run_folder_job(
        plan, cancel, source=source.folder, finals=plan.finals, parts=plan.parts,
        start=lambda: run_in_child(_worker_entry, str(source.folder), jobs, plan.asked_device, plan.request.threads,
                                   calibration, plan.compute_dtype, source.dtype, name=f"{method} worker",
                                   cancel=cancel),
        progress=lambda payload: target_progress(payload, len(jobs), _SPANS), describe=describe,
        card_section=_card_section))


def _modules_per_layer(plan: Int4Plan) -> int:
    layers = int(plan.source.text_config.get("num_hidden_layers") or 0)
    return max(1, round(len(plan.source.linear_shapes) / layers)) if layers else 7


def _worker_entry(reporter: Any, source: str, jobs: list[dict[str, Any]], device: str, threads: int | None,
                  calibration: dict[str, Any], compute_dtype: str, source_dtype: str) -> list[dict[str, Any]]:
    # Imported in the child only: keeps torch, transformers and gptqmodel out of the caller.
    from engine.backends.int4.worker import quantize_all

    return quantize_all(reporter, source, jobs, device, threads, calibration, compute_dtype, source_dtype)


# Within one target, how far each step has got.
_SPANS = {"warning": (0.0, 0.0), "loading": (0.0, 0.05), "calibrating": (0.05, 0.1), "quantizing": (0.1, 0.85),
          "saving": (0.85, 0.9), "verifying": (0.9, 1.0)}


# vLLM's kernels and the compute capability each needs (vllm/model_executor/layers/quantization).
_VLLM = {
    "gptq": ("gptq_marlin", "gptq", "6.0 (Pascal)"),
    "awq": ("awq_marlin", "awq", "7.5 (Turing)"),
}


def _card_section(record: Artifact) -> str:
    """What GPTQ/AWQ add to the folder's card: the settings, the calibration, how to serve and load it."""
    import shlex

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
    folder_arg = shlex.quote(record.path.name)
    return (
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
