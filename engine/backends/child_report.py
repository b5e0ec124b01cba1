"""The child side of a folder-writing backend: progress for one target, throttled, and the probe text."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

# A sentence whose next word every output must still predict sensibly: the reload check's input.
PROBE_TEXT = "The capital of France is Paris. The capital of Italy is Rome. The capital of Spain is"
REPORT_EVERY_S = 0.1


class TargetReporter:
    """Sends ``progress`` for one target (its index and format, when there are several), at most every 0.1 s
    unless forced; ``cancelled`` says whether the parent asked the child to stop."""

    def __init__(self, reporter: Any, index: int | None = None, fmt: str | None = None) -> None:
        self._reporter = reporter
        self._tags = {} if index is None else {"target_index": index, "format": fmt}
        self._last = 0.0

    @property
    def cancelled(self) -> bool:
        return bool(getattr(self._reporter, "cancelled", False))

    def send(self, step: str, within: float, message: str, force: bool = True, **extra: Any) -> None:
        now = time.monotonic()
        if not force and now - self._last < REPORT_EVERY_S:
            return
        self._last = now
        self._reporter.send("progress", step=step, within=within, message=message, **self._tags, **extra)


def child_device(torch: Any, device: str, report: TargetReporter, cpu_note: str) -> str:
    """The device the child really uses: CUDA refused when this torch cannot use it, "auto" settled (with
    ``cpu_note`` as a warning when it falls back to the CPU)."""
    from engine.errors import QuantDeskError

    if device == "cuda" and not torch.cuda.is_available():
        raise QuantDeskError(
            "CUDA was asked for, but this PyTorch build cannot use the GPU; install a CUDA build of PyTorch "
            "(pip install torch --index-url https://download.pytorch.org/whl/cu128) or choose --device cpu."
        )
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            report.send("warning", 0.0, cpu_note)
    return device


def raise_if_disk_full(err: BaseException, name: str, folder: Path) -> None:
    """A write that failed because the disk is full becomes one sentence naming the output and its folder."""
    from engine.errors import QuantDeskError
    from engine.failures import is_disk_full

    if is_disk_full(err):
        raise QuantDeskError(f"disk full while writing {name}: free some space in {folder} "
                             "(or choose another output folder) and try again.") from None
