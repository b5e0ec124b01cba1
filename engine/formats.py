"""The catalogue of output formats QuantDesk knows, with their sizes.

Format ids are ``gguf:<llama.cpp type>`` or ``hf:<method>``. Bits per weight
for k-quants are llama.cpp's published figures for Llama-3-8B without an
importance matrix; the others follow from their block layout. ``needs_imatrix``
follows llama.cpp's rule (llama-quant.cpp): it refuses IQ1/IQ2 and IQ3_XXS
tensors without one; the GGUF backend then computes one (or reads --imatrix FILE).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import QuantDeskError


@dataclass(frozen=True)
class Format:
    id: str
    family: str  # "gguf" or "hf"
    name: str  # llama.cpp type name, or the hf method
    bits_per_weight: float
    backend: str  # registry name of the backend that produces it
    label: str
    quality_note: str = ""
    needs_imatrix: bool = False
    gguf_ftype: int | None = None  # llama_ftype value for llama_model_quantize
    delta_ppl: float | None = None  # reference ΔPPL on Llama-3-8B, no imatrix


def _gguf(name: str, bpw: float, ftype: int, label: str, note: str = "", dppl: float | None = None,
          imatrix: bool = False) -> Format:
    return Format(f"gguf:{name}", "gguf", name, bpw, "gguf", label, note, imatrix, ftype, dppl)


# llama_ftype values are llama.cpp's LLAMA_FTYPE_MOSTLY_* constants.
FORMATS: dict[str, Format] = {
    f.id: f
    for f in [
        _gguf("F32", 32.0, 0, "GGUF F32", "lossless, largest"),
        _gguf("F16", 16.0, 1, "GGUF F16", "lossless for fp16 weights", 0.0),
        _gguf("BF16", 16.0, 32, "GGUF BF16", "lossless for bf16 weights", 0.0),
        _gguf("Q8_0", 8.50, 7, "GGUF Q8_0", "practically lossless", 0.003),
        _gguf("Q6_K", 6.56, 18, "GGUF Q6_K", "near-lossless", 0.02),
        _gguf("Q5_K_M", 5.70, 17, "GGUF Q5_K_M", "very small loss", 0.06),
        _gguf("Q5_K_S", 5.52, 16, "GGUF Q5_K_S", "small loss"),
        _gguf("Q4_K_M", 4.89, 15, "GGUF Q4_K_M", "best size/quality balance", 0.18),
        _gguf("Q4_K_S", 4.67, 14, "GGUF Q4_K_S", "a little smaller than Q4_K_M"),
        _gguf("IQ4_XS", 4.46, 30, "GGUF IQ4_XS", "small 4-bit, best with an importance matrix"),
        _gguf("IQ4_NL", 4.50, 25, "GGUF IQ4_NL", "4-bit non-linear, best with an importance matrix"),
        _gguf("Q4_0", 4.50, 2, "GGUF Q4_0", "legacy 4-bit, fast on some CPUs"),
        _gguf("Q3_K_M", 4.00, 12, "GGUF Q3_K_M", "noticeable loss"),
        _gguf("IQ3_M", 3.66, 27, "GGUF IQ3_M", "3-bit mix, best with an importance matrix"),
        _gguf("Q2_K", 3.16, 10, "GGUF Q2_K", "large loss; last resort"),
        _gguf("IQ3_XXS", 3.06, 23, "GGUF IQ3_XXS", "3-bit; needs an importance matrix", imatrix=True),
        _gguf("IQ2_XS", 2.31, 20, "GGUF IQ2_XS", "2-bit; needs an importance matrix", imatrix=True),
        _gguf("IQ2_XXS", 2.06, 19, "GGUF IQ2_XXS", "2-bit; needs an importance matrix", imatrix=True),
        _gguf("IQ1_S", 1.56, 24, "GGUF IQ1_S", "needs an importance matrix", imatrix=True),
        Format("hf:fp16", "hf", "fp16", 16.0, "none", "FP16 / BF16 (unchanged)", "lossless", delta_ppl=0.0),
        Format("hf:bnb-int8", "hf", "bnb-int8", 8.2, "bnb", "bitsandbytes INT8", "negligible loss"),
        Format("hf:bnb-nf4", "hf", "bnb-nf4", 4.13, "bnb", "bitsandbytes NF4", "4-bit, double quantization"),
        Format("hf:fp8", "hf", "fp8", 8.0, "fp8", "FP8 E4M3", "near-lossless on Hopper GPUs"),
        Format("hf:awq-4bit", "hf", "awq-4bit", 4.25, "awq", "AWQ 4-bit", "4-bit, calibrated"),
        Format("hf:gptq-4bit", "hf", "gptq-4bit", 4.25, "gptq", "GPTQ 4-bit", "4-bit, calibrated"),
    ]
}

# What a user may type: "Q4_K_M", "gguf:q4_k_m", "bnb-nf4", "hf:bnb-nf4", "nf4", "int8".
_ALIASES = {"nf4": "hf:bnb-nf4", "int8": "hf:bnb-int8", "fp16": "hf:fp16", "bf16-hf": "hf:fp16"}


def get_format(text: str) -> Format:
    """Resolve a user-typed format name; raises QuantDeskError with the valid names."""
    key = text.strip()
    low = key.lower()
    if low in _ALIASES:
        return FORMATS[_ALIASES[low]]
    candidates = [key, f"gguf:{key.upper()}", f"hf:{low}"]
    if low.startswith("gguf:"):
        candidates.append("gguf:" + key[5:].upper())
    if low.startswith("hf:"):
        candidates.append(low)
    for cand in candidates:
        if cand in FORMATS:
            return FORMATS[cand]
    names = ", ".join(f.name for f in FORMATS.values() if f.family == "gguf")
    raise QuantDeskError(
        f"Unknown format '{text}'; choose one of {names}, bnb-int8 or bnb-nf4."
    )


def parse_targets(text: str) -> list[Format]:
    """Parse a comma-separated list of targets, keeping order, dropping repeats."""
    seen: dict[str, Format] = {}
    for part in text.split(","):
        if part.strip():
            fmt = get_format(part)
            seen.setdefault(fmt.id, fmt)
    if not seen:
        raise QuantDeskError("No target format given; pass e.g. --to Q4_K_M,Q6_K.")
    return list(seen.values())
