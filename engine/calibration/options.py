"""What a calibrated job is calibrated on: which texts, how many samples, how long each."""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import QuantDeskError

DEFAULT_SAMPLES = 128  # the usual GPTQ/AWQ setting: 128 samples of 512 tokens
DEFAULT_SEQ_LEN = 512
MAX_SAMPLES = 4096
MIN_SEQ_LEN, MAX_SEQ_LEN = 32, 8192
BUILTIN = "builtin"


@dataclass(frozen=True)
class CalibrationOptions:
    """``data`` is ``builtin`` (the project's texts), a ``.txt`` / ``.jsonl`` file, or ``builtin+FILE`` (a mix)."""

    data: str = BUILTIN
    samples: int = DEFAULT_SAMPLES
    seq_len: int = DEFAULT_SEQ_LEN

    def __post_init__(self) -> None:
        data = str(self.data or BUILTIN).strip() or BUILTIN
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "samples", _whole(self.samples, "number of calibration samples", 1, MAX_SAMPLES))
        object.__setattr__(self, "seq_len", _whole(self.seq_len, "calibration sequence length", MIN_SEQ_LEN,
                                                   MAX_SEQ_LEN))

    @property
    def user_file(self) -> str | None:
        """The user's file, when there is one (alone or mixed with the built-in texts)."""
        if self.data == BUILTIN:
            return None
        return self.data[len(BUILTIN) + 1:] if self.data.startswith(BUILTIN + "+") else self.data

    @property
    def uses_builtin(self) -> bool:
        return self.data == BUILTIN or self.data.startswith(BUILTIN + "+")


def _whole(value: object, what: str, low: int, high: int) -> int:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        number = None
    if number is None or not low <= number <= high:
        raise QuantDeskError(f"The {what} must be a whole number from {low} to {high}, not {value!r}.")
    return number
