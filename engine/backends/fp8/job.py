"""FP8's job: run the worker in a child, then describe the folder and rename it into place."""

from __future__ import annotations

from typing import Any

from engine.artifacts import Artifact
from engine.backends.base import OutputRecord
from engine.backends.folder_job import folder_artifact, run_folder_job, target_progress
from engine.backends.fp8.plan import SCHEME, Fp8Plan
from engine.jobs import CancelToken, JobGen, Progress, run_in_child
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

    def describe(_index: int, result: dict[str, Any], size: int) -> Artifact:
        options: dict[str, Any] = {
            "scheme": SCHEME, "weights": "FP8 E4M3, one scale per output channel, round-to-nearest",
            "activations": "FP8 E4M3, dynamic per token", "layout": "compressed-tensors (float-quantized)",
            "quantized_modules": result["quantized_modules"], "unquantized_linear": result["ignored_modules"],
        }
        return folder_artifact(final, plan.format.id, source.folder, source.params, size, options,
                               result["versions"])

    return (yield from run_folder_job(
        plan, cancel, source=source.folder, finals=[final], parts=[part],
        start=lambda: run_in_child(_worker_entry, str(source.folder), str(part), final.name, plan.request.threads,
                                   name="FP8 worker", cancel=cancel),
        progress=lambda payload: target_progress({**payload, "format": plan.format.id}, 1, _SPANS),
        describe=describe, card_section=_card_section))


def _worker_entry(reporter: Any, source: str, part: str, name: str, threads: int | None) -> dict[str, Any]:
    # Imported in the child only: keeps torch and transformers out of the caller.
    from engine.backends.fp8.worker import quantize_checkpoint

    return quantize_checkpoint(reporter, source, part, name, threads)


# How far the job has got when each step starts and ends.
_SPANS = {"loading": (0.0, 0.1), "quantizing": (0.1, 0.6), "saving": (0.6, 0.65), "verifying": (0.65, 1.0)}


def _card_section(record: Artifact) -> str:
    """What FP8 adds to the folder's card: where it runs and how to serve it."""
    left = ", ".join(f"`{m}`" for m in record.options.get("unquantized_linear") or []) or "none"
    return (
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
