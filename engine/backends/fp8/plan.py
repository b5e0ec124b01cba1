"""FP8's preflight: everything checkable before a tensor is read, and the plan the job then follows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.artifacts import made_by_quantdesk
from engine.backends.base import Plan, QuantizeRequest
from engine.backends.hf_source import open_checkpoint
from engine.errors import QuantDeskError
from engine.formats import Format
from engine.fsutil import check_not_foreign, check_output_folder, part_path, require_free_space
from engine.inspect import model_name, safetensors_tensors
from engine.units import format_bytes

SUFFIX = "fp8-dynamic"
SCHEME = "FP8_DYNAMIC"  # compressed-tensors' preset: E4M3 weights per channel, activations per token at run time
INSTALL_FP8 = 'pip install -U "compressed-tensors>=0.20"'
_RUNTIME_RAM = 1024**3  # torch + transformers + compressed-tensors in the child
_FLOAT_DTYPES = {"BF16": 2, "F16": 2, "F32": 4}
# Rough rates on one desktop core pair, for the estimate shown before the job starts.
_QUANTIZE_BYTES_PER_S = 150 * 1024**2
_RELOAD_BYTES_PER_S = 60 * 1024**2
_STARTUP_S = 15.0


@dataclass
class SourceInfo:
    folder: Path
    config: dict[str, Any]
    shards: list[Path]
    params: int
    weight_bytes: int  # on disk
    largest_tensor_bytes: int


@dataclass
class Fp8Plan(Plan):
    """The source read once, the output folder's name, and what the job is expected to cost."""

    source: SourceInfo
    format: Format
    estimate_bytes: int  # the output folder
    ram_bytes: int  # peak of the child while it reloads the output to check it
    estimated_s: float

    @property
    def final(self) -> Path:
        return self.request.out_dir / f"{model_name(self.source.folder)}-{SUFFIX}"

    @property
    def part(self) -> Path:
        return part_path(self.final)


def plan_job(request: QuantizeRequest, targets: list[Format]) -> Fp8Plan:
    """Every check that needs no tensor read: source, name, folder, disk, memory; and a time estimate."""
    if len(targets) != 1:
        raise QuantDeskError("Ask for fp8 once; it has a single setting (FP8 E4M3, dynamic activations).")
    source = read_source(request.source)
    final = request.out_dir / f"{model_name(source.folder)}-{SUFFIX}"
    if final.resolve() == source.folder.resolve():
        raise QuantDeskError(f"The output {final} would replace the source; choose another --out folder.")
    check_not_foreign(final, made_by_quantdesk, request.overwrite)
    estimate = estimate_output_bytes(source)
    require_free_space(request.out_dir, estimate + 16 * 1024**2, "the FP8 output")
    ram = check_memory(source)
    check_output_folder(request.out_dir)
    seconds = _STARTUP_S + source.weight_bytes / _QUANTIZE_BYTES_PER_S + source.weight_bytes / _RELOAD_BYTES_PER_S
    return Fp8Plan(request=request, targets=list(targets), source=source, format=targets[0],
                   estimate_bytes=estimate, ram_bytes=ram, estimated_s=round(seconds, 1))


def read_source(source: Path) -> SourceInfo:
    """Check that ``source`` is an unquantized Hugging Face checkpoint in safetensors; writes nothing."""
    checkpoint = open_checkpoint(source, "FP8")
    folder, config, shards = checkpoint.folder, checkpoint.config, checkpoint.shards
    params = weight_bytes = largest = 0
    for shard in shards:
        weight_bytes += shard.stat().st_size
        for _name, _dtype, numel, nbytes in safetensors_tensors(shard):
            params += numel
            largest = max(largest, nbytes)
    return SourceInfo(folder, config, shards, params, weight_bytes, largest)


def estimate_output_bytes(source: SourceInfo) -> int:
    """2-D projection weights at one byte each plus a scale per row; everything else as it is."""
    total = 0
    for shard in source.shards:
        for name, dtype, numel, nbytes in safetensors_tensors(shard):
            if is_candidate(name) and dtype in _FLOAT_DTYPES:
                total += numel + numel // 128  # one byte a weight; one 16-bit scale per row (rows >= 256)
            else:
                total += nbytes
    support = sum(p.stat().st_size for p in source.folder.iterdir()
                  if p.is_file() and p.suffix in (".json", ".jinja", ".model", ".txt", ".tiktoken"))
    return total + support + 64 * 1024


def is_candidate(name: str) -> bool:
    """A tensor the child may quantize (it decides from the model's real linear layers)."""
    return name.endswith(".weight") and not any(part in name for part in ("embed", "lm_head", "norm"))


def check_memory(source: SourceInfo) -> int:
    """The child's peak: the reloaded model in its 16-bit type plus the runtime; refused when it cannot fit."""
    import psutil

    need = source.weight_bytes + _RUNTIME_RAM + 4 * source.largest_tensor_bytes
    available = psutil.virtual_memory().available
    if available < need:
        raise QuantDeskError(
            f"Making and checking the FP8 model needs about {format_bytes(need)} of free memory but "
            f"{format_bytes(available)} is available; close other programs or choose a smaller model."
        )
    return need
