"""The registry's entries for GPTQ and AWQ: one small class per method over the same plan, job and worker."""

from __future__ import annotations

from typing import ClassVar

from engine.backends.base import Backend, OutputRecord, QuantizeRequest
from engine.backends.int4.plan import GPTQMODEL_REQUIREMENT, METHOD_NAMES, Int4Plan, plan_job
from engine.errors import QuantDeskError
from engine.formats import Format
from engine.jobs import CancelToken, JobGen


class _Int4Backend(Backend[Int4Plan]):
    method: ClassVar[str]
    requires_calibration = True
    required_packages = (
        ("torch", "torch"),
        ("transformers", "transformers>=5"),
        ("optimum", "optimum>=2"),
        ("gptqmodel", GPTQMODEL_REQUIREMENT),
    )

    def validate_environment(self, request: QuantizeRequest | None = None) -> None:
        """The packages, by their import names; cheap on purpose (no torch or gptqmodel import)."""
        missing = self.missing_packages()
        if missing:
            quoted = " ".join(f'"{req}"' if any(c in req for c in "<>=") else req for req in missing)
            raise QuantDeskError(
                f"{METHOD_NAMES[self.method]} 4-bit needs {', '.join(missing)}; install with: pip install {quoted}"
            )

    def preflight(self, request: QuantizeRequest, targets: list[Format]) -> Int4Plan:
        return plan_job(request, targets, self.method)

    def run(self, plan: Int4Plan, cancel: CancelToken) -> JobGen[list[OutputRecord]]:
        from engine.backends.int4.job import run_plan

        return (yield from run_plan(plan, cancel))


class GptqBackend(_Int4Backend):
    name = "gptq"
    method = "gptq"


class AwqBackend(_Int4Backend):
    name = "awq"
    method = "awq"
