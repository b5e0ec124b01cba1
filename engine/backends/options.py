"""Each backend's options as a small validated record: a mistyped name or value fails with one sentence."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from engine.errors import QuantDeskError

_COMPUTE_DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
                   "half": "float16", "fp32": "float32", "float32": "float32"}


@dataclass(frozen=True)
class GgufOptions:
    """llama.cpp's converter and quantizer settings."""

    keep_intermediate: bool = False  # keep the BF16/F16 GGUF made on the way from a Hugging Face model
    converter: str | None = None  # convert_hf_to_gguf.py of a newer llama.cpp checkout
    requantize: bool = False  # allow an already-quantized GGUF as input
    output_tensor_type: str | None = None  # ggml type name for output.weight
    token_embedding_type: str | None = None  # ggml type name for token_embd.weight
    pure: bool = False  # every tensor in the chosen type, no mixes


@dataclass(frozen=True)
class BnbOptions:
    """bitsandbytes' settings: LLM.int8's outlier threshold and the 4-bit type."""

    double_quant: bool = True
    compute_dtype: str = "bf16"  # bf16, fp16 or fp32
    quant_type: str = "nf4"  # nf4 or fp4
    int8_threshold: float = 6.0

    def __post_init__(self) -> None:
        if self.quant_type.lower() not in ("nf4", "fp4"):
            raise QuantDeskError(f"Unknown 4-bit quant type {self.quant_type!r}; choose nf4 or fp4.")
        if str(self.compute_dtype).lower() not in _COMPUTE_DTYPES:
            raise QuantDeskError(f"Unknown compute dtype {self.compute_dtype!r}; choose bf16, fp16 or fp32.")
        try:
            threshold = float(self.int8_threshold)
        except (TypeError, ValueError):
            threshold = -1.0
        if not threshold > 0:
            raise QuantDeskError(
                f"The INT8 outlier threshold must be a positive number, not {self.int8_threshold!r}; "
                "leave it at 6.0 unless you know you need another."
            )
        object.__setattr__(self, "int8_threshold", threshold)
        object.__setattr__(self, "quant_type", self.quant_type.lower())

    @property
    def torch_compute_dtype(self) -> str:
        return _COMPUTE_DTYPES[str(self.compute_dtype).lower()]


def split_options(options: dict[str, Any] | None) -> tuple[GgufOptions, BnbOptions]:
    """Turn a flat ``{name: value}`` dict (the window's advanced options) into each backend's options.

    bitsandbytes settings carry a ``bnb_`` prefix there; an unknown name is refused.
    """
    gguf_names = {f.name for f in fields(GgufOptions)}
    bnb_names = {f.name for f in fields(BnbOptions)}
    gguf: dict[str, Any] = {}
    bnb: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if value is None:
            continue
        if key in gguf_names:
            gguf[key] = value
        elif key.startswith("bnb_") and key[4:] in bnb_names:
            bnb[key[4:]] = _as_bool(value) if key == "bnb_double_quant" else value
        else:
            known = sorted(gguf_names | {f"bnb_{n}" for n in bnb_names})
            raise QuantDeskError(f"Unknown option {key!r}; known options are {', '.join(known)}.")
    return GgufOptions(**gguf), BnbOptions(**bnb)


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)
