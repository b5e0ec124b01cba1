"""The registry's entry for FP8: a cheap environment check, an Fp8Plan, and its job."""

from __future__ import annotations

from engine.backends.base import Backend, OutputRecord, QuantizeRequest
from engine.backends.fp8.plan import Fp8Plan, plan_job
from engine.errors import QuantDeskError
from engine.formats import Format
from engine.jobs import CancelToken, JobGen


class Fp8Backend(Backend[Fp8Plan]):
    name = "fp8"
    required_packages = (
        ("torch", "torch"),
        ("transformers", "transformers>=5"),
        ("safetensors", "safetensors"),
        ("compressed_tensors", "compressed-tensors>=0.20"),
    )

    def validate_environment(self, request: QuantizeRequest | None = None) -> None:
        """The packages it imports; cheap on purpose (no torch import)."""
        missing = self.missing_packages()
        if missing:
            quoted = " ".join(f'"{req}"' if ">" in req else req for req in missing)
            raise QuantDeskError(f"FP8 needs {', '.join(missing)}; install with: pip install -U {quoted}")

    def preflight(self, request: QuantizeRequest, targets: list[Format]) -> Fp8Plan:
        return plan_job(request, targets)

    def run(self, plan: Fp8Plan, cancel: CancelToken) -> JobGen[list[OutputRecord]]:
        from engine.backends.fp8.job import run_plan

        return (yield from run_plan(plan, cancel))
