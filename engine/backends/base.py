"""The one small interface every quantization backend implements."""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from engine.errors import QuantDeskError
from engine.formats import Format
from engine.jobs import CancelToken, JobGen


@dataclass
class QuantizeRequest:
    """What the user asked for: one source, several targets, one output folder."""

    source: Path
    targets: list[Format]
    out_dir: Path
    threads: int | None = None
    device: str = "auto"  # "cpu", "cuda" or "auto"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OutputRecord:
    """One finished output: a GGUF file or a Hugging Face folder."""

    path: Path
    format: str  # format id, e.g. "gguf:Q4_K_M"
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "type": self.format.split(":", 1)[1], "format": self.format,
                "size_bytes": self.size_bytes}


class Backend(ABC):
    """A way to produce some formats. Subclasses register themselves in the registry."""

    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]  # format ids this backend produces
    required_packages: ClassVar[tuple[tuple[str, str], ...]] = ()  # (import name, pip requirement)
    requires_calibration: ClassVar[bool] = False

    def missing_packages(self) -> list[str]:
        return [req for mod, req in self.required_packages if importlib.util.find_spec(mod) is None]

    def validate_environment(self, request: QuantizeRequest | None = None) -> None:
        """Raise QuantDeskError naming the exact install command when something is missing."""
        missing = self.missing_packages()
        if missing:
            raise QuantDeskError(
                f"The {self.name} backend needs {', '.join(missing)}; install it with: "
                f"pip install {' '.join(missing)}"
            )

    def install_hint(self) -> str | None:
        """One line saying how to make this backend usable, or None when it is."""
        try:
            self.validate_environment()
        except QuantDeskError as err:
            return str(err)
        return None

    @abstractmethod
    def preflight(self, request: QuantizeRequest, targets: list[Format]) -> None:
        """Check everything that can be checked before writing anything; raise QuantDeskError."""

    @abstractmethod
    def run(self, request: QuantizeRequest, targets: list[Format], cancel: CancelToken) -> JobGen[list[OutputRecord]]:
        """Produce ``targets``; yields Progress with fraction 0..1 of this backend's share."""
