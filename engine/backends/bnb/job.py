"""bitsandbytes' job: run the worker on the plan's targets in a child, then name, describe and rename."""

from __future__ import annotations

from typing import Any

from engine.artifacts import Artifact
from engine.backends.base import OutputRecord
from engine.backends.bnb.plan import CPU_SLOW_NOTE, MIN_BNB_VERSION, BnbPlan
from engine.backends.folder_job import folder_artifact, run_folder_job, target_progress
from engine.jobs import CancelToken, JobGen, Progress, run_in_child


def run_plan(plan: BnbPlan, cancel: CancelToken) -> JobGen[list[OutputRecord]]:
    """Quantize every target into its temporary folder, verify in the child, then rename into place.

    Every folder is recorded in the job's transaction before the child writes
    it; an earlier QuantDesk folder of the same name is kept aside until the
    job succeeds, and comes back if it does not.
    """
    source = plan.source
    if plan.device == "cpu":
        yield Progress(step="warning", fraction=0.0, message=CPU_SLOW_NOTE)
    jobs = [
        {"format": t.format.id, "label": t.format.label, "bnb_config": t.bnb_config, "part": str(p),
         "name": f.name}
        for t, p, f in zip(plan.bnb_targets, plan.parts, plan.finals, strict=True)
    ]

    def describe(index: int, result: dict[str, Any], size: int) -> Artifact:
        target = plan.bnb_targets[index]
        options = {**target.options, "device": result["device"], "dtype": result["dtype"],
                   "quantized_modules": result["quantized_modules"]}
        return folder_artifact(plan.finals[index], target.format.id, source.folder, source.params, size, options,
                               result["versions"])

    return (yield from run_folder_job(
        plan, cancel, source=source.folder, finals=plan.finals, parts=plan.parts,
        start=lambda: run_in_child(_worker_entry, str(source.folder), jobs, plan.asked_device, plan.request.threads,
                                   name="bitsandbytes worker", cancel=cancel),
        progress=lambda payload: target_progress(payload, len(jobs), _SPANS), describe=describe,
        card_section=_card_section))


def _worker_entry(reporter: Any, source: str, jobs: list[dict[str, Any]], device: str,
                  threads: int | None) -> list[dict[str, Any]]:
    # Imported in the child only: keeps torch and transformers out of the caller.
    from engine.backends.bnb.worker import quantize_all

    return quantize_all(reporter, source, jobs, device, threads)


# Within one target, how far each step has got.
_SPANS = {"warning": (0.0, 0.0), "loading": (0.0, 0.05), "quantizing": (0.05, 0.75),
          "saving": (0.75, 0.85), "verifying": (0.85, 1.0)}


def _card_section(record: Artifact) -> str:
    """What bitsandbytes adds to the folder's card: its settings and what loading it needs."""
    settings = ", ".join(f"{k} {v}" for k, v in record.options.items()
                         if k in ("method", "quant_type", "double_quant", "compute_dtype", "int8_threshold"))
    where = "a CPU" if record.options.get("device") == "cpu" else "an NVIDIA GPU"
    return (
        f"\n## bitsandbytes\n\n{record.format_label} ({settings}), quantized on {where}. The settings are "
        "stored in `config.json`, so `from_pretrained` needs no `quantization_config`; it needs "
        f'`pip install transformers accelerate "bitsandbytes>={MIN_BNB_VERSION}"`. It loads on an NVIDIA GPU '
        '(`device_map="cuda"`) or on a CPU with AVX2 (`device_map="cpu"`), where generation is much slower.\n'
    )
