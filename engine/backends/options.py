"""Each backend's options as a small validated record: a mistyped name or value fails with one sentence."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from engine.calibration.options import CalibrationOptions
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
    # Importance matrix: "auto" computes one from the calibration data, a path reads llama.cpp's
    # GGUF or legacy .dat file, "none" quantizes without; None: "auto" only for the types that need one.
    imatrix: str | None = None

    def __post_init__(self) -> None:
        if self.imatrix is not None:
            value = str(self.imatrix).strip()
            if not value:
                raise QuantDeskError("--imatrix needs a value: auto, none or the path of an imatrix file.")
            object.__setattr__(self, "imatrix", value.lower() if value.lower() in ("auto", "none") else value)


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


GROUP_SIZES = (32, 64, 128)


@dataclass(frozen=True)
class Int4Options:
    """GPTQ's and AWQ's settings (4-bit weights in groups); damping and act-order are GPTQ's alone."""

    group_size: int = 128
    sym: bool = True  # symmetric (no zero point); asymmetric keeps a zero point per group
    desc_act: bool = False  # GPTQ act-order: quantize columns by decreasing activation size
    damp: float = 0.05  # GPTQ: fraction of the Hessian's mean diagonal added for stability

    def __post_init__(self) -> None:
        try:
            group = int(self.group_size)
        except (TypeError, ValueError):
            group = 0
        if group not in GROUP_SIZES:
            raise QuantDeskError(f"The group size must be 32, 64 or 128, not {self.group_size!r}; "
                                 "128 is the usual choice, 64 or 32 keep more precision.")
        try:
            damp = float(self.damp)
        except (TypeError, ValueError):
            damp = -1.0
        if not 0.0 < damp < 1.0:
            raise QuantDeskError(f"GPTQ's damping must be a number between 0 and 1, not {self.damp!r}; "
                                 "0.05 is the usual choice, 0.1 when quantization fails as unstable.")
        object.__setattr__(self, "group_size", group)
        object.__setattr__(self, "damp", damp)
        object.__setattr__(self, "sym", _as_bool(self.sym))
        object.__setattr__(self, "desc_act", _as_bool(self.desc_act))


@dataclass(frozen=True)
class Options:
    """Every backend's options, each record validated on its own."""

    gguf: GgufOptions
    bnb: BnbOptions
    int4: Int4Options
    calibration: CalibrationOptions


def split_options(options: dict[str, Any] | None) -> Options:
    """Turn a flat ``{name: value}`` dict (the window's advanced options) into each backend's options.

    bitsandbytes settings carry a ``bnb_`` prefix there, GPTQ/AWQ ones ``int4_`` and the calibration
    data's ``calibration_``; an unknown name is refused.
    """
    records: dict[str, tuple[str, type]] = {"bnb_": ("bnb", BnbOptions), "int4_": ("int4", Int4Options),
                                            "calibration_": ("calibration", CalibrationOptions)}
    gguf_names = {f.name for f in fields(GgufOptions)}
    values: dict[str, dict[str, Any]] = {"gguf": {}, "bnb": {}, "int4": {}, "calibration": {}}
    for key, value in (options or {}).items():
        if value is None:
            continue
        if key in gguf_names:
            values["gguf"][key] = value
            continue
        for prefix, (name, record) in records.items():
            if key.startswith(prefix) and key[len(prefix):] in {f.name for f in fields(record)}:
                values[name][key[len(prefix):]] = _as_bool(value) if key == "bnb_double_quant" else value
                break
        else:
            known = sorted(gguf_names | {f"{p}{f.name}" for p, (_, r) in records.items() for f in fields(r)})
            raise QuantDeskError(f"Unknown option {key!r}; known options are {', '.join(known)}.")
    return Options(GgufOptions(**values["gguf"]), BnbOptions(**values["bnb"]), Int4Options(**values["int4"]),
                   CalibrationOptions(**values["calibration"]))


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)
