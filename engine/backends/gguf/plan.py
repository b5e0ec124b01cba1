"""Everything a GGUF job can check before a byte is written, and the plan it then follows."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.artifacts import made_by_quantdesk
from engine.backends.base import Plan, QuantizeRequest
from engine.backends.options import GgufOptions
from engine.errors import QuantDeskError
from engine.formats import FORMATS, Format
from engine.fsutil import check_not_foreign, check_output_folder, part_path, require_free_space
from engine.inspect import ModelInfo, inspect_model, model_name, safetensors_tensors
from engine.units import format_bytes

FULL_PRECISION = ("F32", "F16", "BF16")
UNWEIGHTED = FULL_PRECISION + ("Q8_0",)  # types llama.cpp makes the same with or without an importance matrix
_MIB = 1024**2
_CONVERTER_BASE_RAM = 700 * _MIB  # python + torch + transformers, measured on the converter
_METADATA_BYTES = 16 * _MIB  # vocabulary and header per file, generously


@dataclass
class Output:
    """One GGUF file the job writes: first under QuantDesk's temporary name, renamed to ``final`` once verified."""

    format: Format
    final: Path
    variant: str = ""  # a mix's suffix to the type name, e.g. "-O8" (engine.autopick)
    options: dict[str, Any] = field(default_factory=dict)  # this output's own quantizer options
    imatrix: bool = False  # quantized with the job's importance matrix

    @property
    def part(self) -> Path:
        return part_path(self.final)

    @property
    def type(self) -> str:
        return self.format.name + self.variant


@dataclass
class GgufPlan(Plan):
    source: Path
    kind: str  # "hf" (convert first) or "gguf" (quantize directly)
    model_name: str
    info: ModelInfo
    out_dir: Path
    input_type: str  # the intermediate's type for "hf", the input file's type for "gguf"
    intermediate: Output | None  # the conversion output, for "hf" sources
    keep_intermediate: bool
    quantize: list[Output]  # outputs made by llama_model_quantize
    converter: Path | None
    requantize: bool
    threads: int
    quant_options: dict[str, Any] = field(default_factory=dict)
    needed_bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    input_file: Path | None = None  # quantize from this GGUF instead of the source (an earlier conversion)
    # The importance matrix: "computed" (or found again) at ``imatrix_file``, "file" (the user's), or None.
    imatrix: str | None = None
    imatrix_file: Path | None = None

    @property
    def outputs(self) -> list[Output]:
        """What the user gets, in order: the intermediate first when it is kept."""
        keep = [self.intermediate] if self.intermediate is not None and self.keep_intermediate else []
        return keep + self.quantize


def available_ram_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def output_name(model_name: str, type_name: str) -> str:
    return f"{model_name}-{type_name}.gguf"


def model_name_of(source: Path) -> str:
    """The name the outputs are called after (see engine.inspect.model_name)."""
    return model_name(source)


def plan_job(request: QuantizeRequest, targets: list[Format]) -> GgufPlan:
    """Check the request and work out every file; raises QuantDeskError, writes nothing."""
    opts = request.gguf
    needy = [fmt for fmt in targets if fmt.needs_imatrix]
    if needy and opts.imatrix == "none":
        raise QuantDeskError(
            f"{needy[0].label} cannot be made without an importance matrix; drop --imatrix none (QuantDesk then "
            "computes one from the calibration data) or give one with --imatrix FILE."
        )
    source = Path(request.source).expanduser()
    info = inspect_model(source)
    out_dir = Path(request.out_dir).expanduser()
    name = model_name_of(source)
    converter: Path | None = None
    warnings: list[str] = []
    requantize = opts.requantize
    if info.kind == "gguf":
        kind = "gguf"
        input_type = (info.dtype or "?").upper()
        if input_type not in FULL_PRECISION:
            if not requantize:
                raise QuantDeskError(
                    f"{source.name} is already quantized ({input_type}); quantizing it again loses quality, "
                    "so start from the F16/BF16 GGUF or the Hugging Face model, or pass --requantize to do it anyway."
                )
            warnings.append(
                f"Requantizing {input_type} to another type stacks two losses of quality; "
                "the result is worse than quantizing the original model."
            )
        intermediate = None
    else:
        kind = "hf"
        converter = _check_convertible(source, info, opts.converter)
        from engine.trust import check_pickle

        check_pickle(source)  # the converter would torch.load() them: refuse now, not in the child
        input_type = "BF16" if (info.dtype or "").lower() == "bf16" else "F16"
        intermediate = Output(FORMATS[f"gguf:{input_type}"], out_dir / output_name(name, input_type))
    keep = opts.keep_intermediate
    quantize: list[Output] = []
    imatrix, imatrix_file = _imatrix_source(opts.imatrix, needy, kind, source, out_dir, name, request.overwrite)
    for fmt in targets:
        if intermediate is not None and fmt.name == input_type:
            keep = True  # the intermediate is itself a requested output
            continue
        used = imatrix is not None and fmt.name not in UNWEIGHTED and (opts.imatrix is not None or fmt.needs_imatrix)
        quantize.append(Output(fmt, out_dir / output_name(name, fmt.name), imatrix=used))
    if imatrix is not None and not any(out.imatrix for out in quantize):
        imatrix = imatrix_file = None  # nothing here is quantized with it
    for out in quantize + ([intermediate] if intermediate else []):
        if out.final.resolve() == source.resolve():
            raise QuantDeskError(
                f"The output {out.final.name} would overwrite the source; choose another output folder."
            )
        if out is not intermediate or keep:
            check_not_foreign(out.final, made_by_quantdesk, request.overwrite)
    plan = GgufPlan(
        request=request, targets=list(targets), source=source, kind=kind, model_name=name, info=info, out_dir=out_dir, input_type=input_type,
        intermediate=intermediate, keep_intermediate=keep, quantize=quantize, converter=converter,
        requantize=requantize, threads=int(request.threads or 0), quant_options=_quant_options(opts),
        warnings=warnings, imatrix=imatrix, imatrix_file=imatrix_file,
    )
    check_output_folder(out_dir)
    plan.needed_bytes = _needed_bytes(plan)
    require_free_space(out_dir, plan.needed_bytes, "the GGUF files")
    if kind == "hf":
        need_ram = _conversion_ram(source, info)
        if imatrix == "computed":  # transformers holds the whole model (bf16 at least) to compute the matrix
            need_ram = max(need_ram, _CONVERTER_BASE_RAM + 2 * max(1, info.parameters))
        have_ram = available_ram_bytes()
        if need_ram > have_ram:
            raise QuantDeskError(
                f"Converting {name} needs about {format_bytes(need_ram)} of free memory but only "
                f"{format_bytes(have_ram)} is available; close other programs and try again."
            )
    return plan


def _imatrix_source(option: str | None, needy: list[Format], kind: str, source: Path, out_dir: Path, name: str,
                    overwrite: bool) -> tuple[str | None, Path | None]:
    """("computed", where it goes) / ("file", the user's file) / (None, None); checks the file now."""
    if option == "none" or (option is None and not needy):
        return None, None
    if option not in (None, "auto"):
        from engine.backends.gguf.imatrix_file import read_imatrix

        path = Path(option).expanduser()
        read_imatrix(path)  # a missing, damaged or foreign file is one sentence before anything starts
        return "file", path
    if kind != "hf":
        what = needy[0].label if needy and option is None else "--imatrix auto"
        raise QuantDeskError(
            f"{what} needs an importance matrix, which QuantDesk computes only from a Hugging Face model, not "
            f"from a GGUF file like {source.name}; give one made by llama-imatrix with --imatrix FILE."
        )
    from engine.backends.gguf.imatrix import imatrix_path, is_ours

    path = imatrix_path(out_dir, name)
    check_not_foreign(path, is_ours, overwrite)
    return "computed", path


def _check_convertible(source: Path, info: ModelInfo, converter_opt: Any) -> Path:
    from engine.gguf_converter import is_supported, resolve_converter

    converter = resolve_converter(converter_opt) if converter_opt else None
    if info.kind == "config":
        raise QuantDeskError(
            f"{source} has a config.json but no weights; download the model's .safetensors files too."
        )
    if not info.architecture:
        raise QuantDeskError(
            f"{source / 'config.json'} names no architecture; download the model's original config.json."
        )
    if not is_supported(info.architecture, converter):
        raise QuantDeskError(
            f"llama.cpp's converter does not know the architecture {info.architecture}, so it cannot be "
            "converted to GGUF; point --converter at a newer llama.cpp checkout if it supports it."
        )
    if not info.has_tokenizer:
        raise QuantDeskError(
            f"{source} has no tokenizer (tokenizer.json or tokenizer.model); copy the tokenizer files "
            "from the original model into the folder and try again."
        )
    return resolve_converter(converter)


def _quant_options(opts: GgufOptions) -> dict[str, Any]:
    out: dict[str, Any] = {"pure": bool(opts.pure)}
    for key in ("output_tensor_type", "token_embedding_type"):
        value = getattr(opts, key)
        if value:
            out[key] = ggml_type_id(str(value))
    return out


def ggml_type_id(name: str) -> int:
    """'q8_0' / 'Q6_K' / 'f16' -> the ggml type number llama.cpp expects."""
    from gguf import GGMLQuantizationType

    try:
        return int(GGMLQuantizationType[name.strip().upper()])
    except KeyError:
        valid = ", ".join(t.name.lower() for t in GGMLQuantizationType if not t.name.startswith("IQ"))
        raise QuantDeskError(f"Unknown tensor type '{name}'; use one of {valid}.") from None


def _needed_bytes(plan: GgufPlan) -> int:
    params = max(1, plan.info.parameters)
    total = 0
    if plan.intermediate is not None:
        total += params * 2 + _METADATA_BYTES
    for out in plan.quantize:
        total += int(params * out.format.bits_per_weight / 8 * 1.05) + _METADATA_BYTES
    return total


def _conversion_ram(source: Path, info: ModelInfo) -> int:
    """Lazy conversion holds a few tensors at a time, in float32, beside the libraries."""
    largest = 0
    for name in info.weight_files:
        path = source / name
        if path.suffix != ".safetensors":
            continue
        for _name, _dtype, numel, _nbytes in safetensors_tensors(path):
            largest = max(largest, numel)
    if not largest:
        largest = info.parameters // max(1, (info.layers or 1) * 4)
    return _CONVERTER_BASE_RAM + 4 * largest * 4
