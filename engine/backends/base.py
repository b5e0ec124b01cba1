"""The one small interface every quantization backend implements."""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from engine.backends.options import BnbOptions, GgufOptions, Int4Options, split_options
from engine.calibration.options import CalibrationOptions
from engine.errors import QuantDeskError
from engine.formats import FORMATS, Format
from engine.fsutil import Transaction, check_out_text
from engine.jobs import CancelToken, JobGen


@dataclass
class QuantizeRequest:
    """What the user asked for: one source, several targets, one output folder.

    ``options`` is a flat dict of settings (as the window collects them), split
    into ``gguf``, ``bnb``, ``int4`` and ``calibration`` on creation; pass those
    records directly instead when it is simpler.
    """

    source: Path
    targets: list[Format]
    out_dir: Path
    threads: int | None = None
    device: str = "auto"  # "cpu", "cuda" or "auto"
    options: InitVar[dict[str, Any] | None] = None
    gguf: GgufOptions = field(default_factory=GgufOptions)
    bnb: BnbOptions = field(default_factory=BnbOptions)
    int4: Int4Options = field(default_factory=Int4Options)  # GPTQ and AWQ
    calibration: CalibrationOptions = field(default_factory=CalibrationOptions)  # GPTQ, AWQ, the imatrix
    overwrite: bool = False  # replace same-name files and folders QuantDesk did not make
    check: bool = True  # the quick check (engine.evaluate.quick_check) on every output once it is finished

    def __post_init__(self, options: dict[str, Any] | None) -> None:
        check_out_text(self.out_dir)
        self.out_dir = Path(self.out_dir)
        if options:
            split = split_options(options)
            self.gguf, self.bnb, self.int4, self.calibration = split.gguf, split.bnb, split.int4, split.calibration


@dataclass
class OutputRecord:
    """One finished output: a GGUF file or a Hugging Face folder."""

    path: Path
    format: str  # format id, e.g. "gguf:Q4_K_M"
    size_bytes: int
    verdict: str | None = None  # the quick check's verdict, when it ran and finished
    verdict_evidence: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "type": self.format.split(":", 1)[1], "format": self.format,
                "size_bytes": self.size_bytes, "verdict": self.verdict, "verdict_evidence": self.verdict_evidence}


@dataclass
class Plan:
    """What a backend's preflight worked out; its run() carries out exactly this."""

    request: QuantizeRequest
    targets: list[Format]
    # The job's record of what it writes into the output folder (engine.fsutil.Transaction);
    # set by engine.quantize before run(), else the backend opens its own.
    txn: Transaction | None = field(default=None, kw_only=True, repr=False, compare=False)


P = TypeVar("P", bound=Plan)


def plan_transaction(plan: Plan) -> tuple[Transaction, bool]:
    """The job's transaction for ``plan``; else a new, begun one that the caller owns and must end."""
    if plan.txn is not None:
        return plan.txn, False
    return Transaction(plan.request.out_dir, overwrite=plan.request.overwrite).begin(), True


class Backend(ABC, Generic[P]):
    """A way to produce some formats; found through the registry by ``Format.backend``."""

    name: ClassVar[str]
    required_packages: ClassVar[tuple[tuple[str, str], ...]] = ()  # (import name, pip requirement)
    requires_calibration: ClassVar[bool] = False

    @classmethod
    def formats(cls) -> tuple[str, ...]:
        """The format ids this backend produces: the catalogue's formats naming it."""
        return tuple(f.id for f in FORMATS.values() if f.backend == cls.name and not f.needs_imatrix)

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
    def preflight(self, request: QuantizeRequest, targets: list[Format]) -> P:
        """Check everything that can be checked before writing anything and return the plan.

        Raises QuantDeskError; writes nothing.
        """

    @abstractmethod
    def run(self, plan: P, cancel: CancelToken) -> JobGen[list[OutputRecord]]:
        """Carry out ``plan``; yields Progress with fraction 0..1 of this backend's share."""
