"""The registry's entry for bitsandbytes: a cheap environment check, a BnbPlan, and its job."""

from __future__ import annotations

from engine.backends.base import Backend, OutputRecord, QuantizeRequest
from engine.backends.bnb.plan import (
    INSTALL_BNB,
    MIN_BNB_VERSION,
    BnbPlan,
    bnb_version,
    parse_version,
    plan_job,
)
from engine.errors import QuantDeskError
from engine.formats import Format
from engine.jobs import CancelToken, JobGen


class BnbBackend(Backend[BnbPlan]):
    name = "bnb"
    required_packages = (
        ("torch", "torch"),
        ("transformers", "transformers>=5"),
        ("accelerate", "accelerate"),
        ("bitsandbytes", f"bitsandbytes>={MIN_BNB_VERSION}"),
    )

    def validate_environment(self, request: QuantizeRequest | None = None) -> None:
        """Packages and bitsandbytes' version; cheap on purpose (no torch import, no GPU query).

        The device (CUDA asked without a GPU, a CPU bitsandbytes cannot use) is the plan's to check.
        """
        missing = self.missing_packages()
        if missing:
            quoted = " ".join(f'"{req}"' if ">" in req else req for req in missing)
            raise QuantDeskError(
                f"bitsandbytes INT8/NF4 needs {', '.join(missing)}; install with: pip install -U {quoted}"
            )
        version = bnb_version()
        if version is not None and version < parse_version(MIN_BNB_VERSION):
            raise QuantDeskError(
                f"bitsandbytes {version} is too old to run on CPU and with current transformers; "
                f"upgrade it with: {INSTALL_BNB}"
            )

    def preflight(self, request: QuantizeRequest, targets: list[Format]) -> BnbPlan:
        return plan_job(request, targets)

    def run(self, plan: BnbPlan, cancel: CancelToken) -> JobGen[list[OutputRecord]]:
        from engine.backends.bnb.job import run_plan

        return (yield from run_plan(plan, cancel))
