"""bitsandbytes' preflight: everything checkable before a model loads, and the plan the job then follows.

Options come from ``QuantizeRequest.bnb`` (engine.backends.options.BnbOptions):
double quantization, the 4-bit compute dtype and quant type, and LLM.int8's
outlier threshold.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from engine.artifacts import made_by_quantdesk
from engine.backends import hf_source
from engine.backends.base import Plan, QuantizeRequest
from engine.backends.hf_source import open_checkpoint
from engine.backends.options import BnbOptions
from engine.errors import QuantDeskError
from engine.formats import Format
from engine.fsutil import check_not_foreign, check_output_folder, part_path, require_free_space
from engine.hardware import has_avx2
from engine.inspect import model_name, safetensors_tensors
from engine.units import format_bytes

MIN_BNB_VERSION = "0.47"
INSTALL_BNB = f'pip install -U "bitsandbytes>={MIN_BNB_VERSION}"'
CPU_SLOW_NOTE = (
    "bitsandbytes runs on this CPU, but chatting with the result will be slow; "
    "GGUF (e.g. Q4_K_M) is the fast choice without a GPU."
)
_RUNTIME_RAM = 1024**3  # torch + transformers + bitsandbytes in the child
_CUDA_RESERVE = 512 * 1024**2


@dataclass
class BnbTarget:
    """One output this backend will write, with the settings handed to the child."""

    format: Format
    suffix: str  # "bnb-int8", "bnb-nf4" or "bnb-fp4"
    bnb_config: dict[str, Any]  # BitsAndBytesConfig keywords (dtype names as strings)
    options: dict[str, Any] = field(default_factory=dict)  # what the sidecar records

    def folder_name(self, source: Path) -> str:
        return f"{model_name(source)}-{self.suffix}"


def target_for(fmt: Format, options: BnbOptions | None = None) -> BnbTarget:
    """Turn a format and the user's (already validated) options into BitsAndBytesConfig settings."""
    opts = options or BnbOptions()
    if fmt.id == "hf:bnb-int8":
        threshold = opts.int8_threshold
        return BnbTarget(fmt, "bnb-int8", {"load_in_8bit": True, "llm_int8_threshold": threshold},
                         {"method": "LLM.int8", "int8_threshold": threshold})
    if fmt.id == "hf:bnb-nf4":
        quant_type, compute, double = opts.quant_type, opts.torch_compute_dtype, bool(opts.double_quant)
        return BnbTarget(
            fmt,
            f"bnb-{quant_type}",
            {"load_in_4bit": True, "bnb_4bit_quant_type": quant_type,
             "bnb_4bit_use_double_quant": double, "bnb_4bit_compute_dtype": compute},
            {"quant_type": quant_type, "double_quant": double, "compute_dtype": compute},
        )
    raise QuantDeskError(f"The bitsandbytes backend cannot produce {fmt.label}.")


@dataclass
class BnbPlan(Plan):
    """The source read once, each target's settings and folder names, and the device chosen once."""

    source: SourceInfo
    bnb_targets: list[BnbTarget]
    device: str  # "cpu" or "cuda"
    asked_device: str  # what the child is told: "auto" lets it fall back to the CPU

    @property
    def finals(self) -> list[Path]:
        return [self.request.out_dir / t.folder_name(self.source.folder) for t in self.bnb_targets]

    @property
    def parts(self) -> list[Path]:
        return [part_path(f) for f in self.finals]


def plan_job(request: QuantizeRequest, targets: list[Format]) -> BnbPlan:
    """Every check that needs no model loaded: source, options, names, folder, disk, memory."""
    source = read_source(request.source)
    bnb_targets = [target_for(fmt, request.bnb) for fmt in targets]
    names = [t.folder_name(source.folder) for t in bnb_targets]
    if len(set(names)) != len(names):
        raise QuantDeskError("Two targets would write the same folder; ask for each bitsandbytes type once.")
    out_dir = request.out_dir
    for name in names:
        final = out_dir / name
        if final.resolve() == source.folder.resolve():
            raise QuantDeskError(f"The output {final} would replace the source; choose another --out folder.")
        check_not_foreign(final, made_by_quantdesk, request.overwrite)
    device = plan_device(request)
    if device == "cpu":
        problem = cpu_problem()
        if problem:
            raise QuantDeskError(problem)
    for target, name in zip(bnb_targets, names, strict=True):
        source.estimates[name] = estimate_output_bytes(source, target)
    extra = _support_files_bytes(source.folder)
    need_disk = sum(source.estimates.values()) + extra * len(bnb_targets) + 16 * 1024**2
    require_free_space(out_dir, need_disk, "the bitsandbytes outputs")
    _check_memory(device, max(source.estimates.values()), source.largest_tensor_bytes)
    check_output_folder(out_dir)
    # "auto" on a machine with a GPU lets the child fall back to the CPU when torch has no CUDA.
    asked = "auto" if device == "cuda" and str(request.device).lower() == "auto" else device
    return BnbPlan(request=request, targets=list(targets), source=source, bnb_targets=bnb_targets,
                   device=device, asked_device=asked)


def cpu_problem() -> str | None:
    """Why bitsandbytes cannot run on this CPU, or None when it can."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "x86", "i386", "i686"):
        if platform.system() == "Darwin":
            return ("bitsandbytes does not run on Intel Macs; choose a GGUF type (e.g. Q4_K_M) instead.")
        if has_avx2() is False:
            return ("This CPU lacks AVX2, which bitsandbytes needs on x86-64; choose a GGUF type "
                    "(e.g. Q4_K_M) instead, or use a machine with an NVIDIA GPU and --device cuda.")
    return None


def plan_device(request: QuantizeRequest | None) -> str:
    """"cpu" or "cuda" from what was asked and the GPUs NVML can see; refuses CUDA without a GPU."""
    return hf_source.plan_device(request, "bitsandbytes")


@dataclass
class SourceInfo:
    folder: Path
    config: dict[str, Any]
    params: int | None  # from the safetensors headers; None for .bin checkpoints
    weight_bytes: int  # on disk
    largest_tensor_bytes: int
    estimates: dict[str, int] = field(default_factory=dict)  # output folder name -> estimated bytes


def read_source(source: Path) -> SourceInfo:
    """Check that ``source`` is an unquantized Hugging Face checkpoint and read its size; writes nothing."""
    checkpoint = open_checkpoint(source, "bitsandbytes", allow_bin=True)
    folder, config, shards, bins = checkpoint.folder, checkpoint.config, checkpoint.shards, checkpoint.bins
    params: int | None = 0
    largest = 0
    weight_bytes = 0
    for shard in shards:
        weight_bytes += shard.stat().st_size
        for _name, _dtype, numel, nbytes in safetensors_tensors(shard):
            params = (params or 0) + numel
            largest = max(largest, nbytes)
    if not shards:
        params = None
        weight_bytes = sum(b.stat().st_size for b in bins)
        largest = max(b.stat().st_size for b in bins)
    return SourceInfo(folder, config, params, weight_bytes, largest)


def estimate_output_bytes(source: SourceInfo, target: BnbTarget) -> int:
    """Linear weights at the format's bits per weight; embeddings, norms and lm_head stay 16-bit."""
    shards = sorted(source.folder.glob("*.safetensors"))
    if not shards:
        return int(source.weight_bytes * target.format.bits_per_weight / 16) + 1
    total = 0
    for shard in shards:
        for name, _dtype, numel, nbytes in safetensors_tensors(shard):
            quantized = (name.endswith(".weight") and numel >= 4096
                         and not any(part in name for part in ("embed", "lm_head", "norm")))
            total += int(numel * target.format.bits_per_weight / 8) if quantized else min(nbytes, numel * 2)
    return total + 64 * 1024  # config, generation config


def _support_files_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir()
               if p.is_file() and p.suffix in (".json", ".jinja", ".model", ".txt"))


def _check_memory(device: str, model_bytes: int, largest_tensor: int) -> None:
    import psutil

    available = psutil.virtual_memory().available
    if device == "cuda":
        from engine.hardware import detect_gpus

        gpus = detect_gpus()
        free_vram = max((g.vram_free_bytes for g in gpus), default=0)
        need_vram = model_bytes + _CUDA_RESERVE
        if free_vram < need_vram:
            raise QuantDeskError(
                f"The quantized model needs about {format_bytes(need_vram)} of GPU memory but the GPU has "
                f"{format_bytes(free_vram)} free; close other GPU programs, choose --device cpu, or a GGUF type."
            )
        need_ram = _RUNTIME_RAM + 2 * largest_tensor
    else:
        need_ram = model_bytes + _RUNTIME_RAM + 2 * largest_tensor
    if available < need_ram:
        raise QuantDeskError(
            f"Quantizing needs about {format_bytes(need_ram)} of free memory but {format_bytes(available)} is "
            "available; close other programs or choose a smaller model."
        )


def parse_version(text: str) -> Any:
    from packaging.version import Version

    return Version(text)


def bnb_version() -> Any:
    try:
        return parse_version(metadata.version("bitsandbytes"))
    except (metadata.PackageNotFoundError, ValueError):
        return None
