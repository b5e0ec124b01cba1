"""GPTQ's and AWQ's preflight: everything checkable before a model loads, and the plan the job follows.

Options come from ``QuantizeRequest.int4`` (engine.backends.options.Int4Options:
group size, symmetric or not, act-order, damping) and ``QuantizeRequest.calibration``
(engine.calibration.CalibrationOptions: which texts, how many samples, how long).
"""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.artifacts import made_by_quantdesk
from engine.backends import hf_source
from engine.backends.base import Plan, QuantizeRequest
from engine.backends.hf_source import open_checkpoint
from engine.backends.options import GROUP_SIZES, Int4Options
from engine.errors import QuantDeskError
from engine.formats import Format
from engine.fsutil import check_not_foreign, check_output_folder, part_path, require_free_space
from engine.inspect import model_name, read_safetensors_header
from engine.units import format_bytes

LIBRARY = "gptqmodel"
GPTQMODEL_REQUIREMENT = "gptqmodel==7.6.0"  # 7.7 needs torch >= 2.14.1
INSTALL = f'pip install "{GPTQMODEL_REQUIREMENT}" "optimum>=2"'
METHOD_NAMES = {"gptq": "GPTQ", "awq": "AWQ"}
_RUNTIME_RAM = 3 * 1024**3 // 2  # torch, transformers and gptqmodel in the child
_CUDA_RESERVE = 1024**3
# Measured on SmolLM2-135M, one CPU core, float32 (tests/benchmarks/calibrated.py): seconds per
# quantized weight per calibration token (the forward passes) and per quantized weight (the solve).
_CPU_S_PER_WEIGHT_TOKEN = {"gptq": 1.7e-10, "awq": 3.0e-10}
_CPU_S_PER_WEIGHT = {"gptq": 7e-7, "awq": 4e-7}
_GPU_SPEEDUP = 40.0
_LONG_CPU_S = 3600.0
_EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
_LAYER_NAME = re.compile(r"\.(?:layers|h|blocks|block|decoder_layers)\.\d+\.")
_SKIP_PARTS = ("embed", "lm_head", "norm", "wte", "wpe", "router")


@dataclass
class Int4Target:
    """One output of this backend, with the gptqmodel settings handed to the child."""

    format: Format
    method: str  # "gptq" or "awq"
    settings: dict[str, Any]  # QuantizeConfig keywords
    options: dict[str, Any] = field(default_factory=dict)  # what the sidecar records

    def folder_name(self, source: Path) -> str:
        group = self.settings["group_size"]
        extra = ("" if group == 128 else f"-g{group}") + ("" if self.settings["sym"] else "-asym")
        return f"{model_name(source)}-{self.format.name}{extra}"


def target_for(fmt: Format, options: Int4Options | None = None) -> Int4Target:
    """The format and the user's (already validated) options as gptqmodel's QuantizeConfig settings."""
    opts = options or Int4Options()
    method = {"hf:gptq-4bit": "gptq", "hf:awq-4bit": "awq"}.get(fmt.id)
    if method is None:
        raise QuantDeskError(f"The GPTQ/AWQ backend cannot produce {fmt.label}.")
    settings: dict[str, Any] = {"bits": 4, "group_size": opts.group_size, "sym": opts.sym}
    record: dict[str, Any] = {"method": METHOD_NAMES[method], "bits": 4, "group_size": opts.group_size,
                              "sym": opts.sym}
    if method == "gptq":
        settings.update(desc_act=opts.desc_act, damp_percent=opts.damp)
        # gptqmodel's group-aware reordering cannot be combined with act-order; it is its default otherwise.
        settings["act_group_aware"] = not opts.desc_act
        record.update(desc_act=opts.desc_act, damp=opts.damp, act_group_aware=not opts.desc_act)
    else:
        settings["format"] = "gemm"
        record["format"] = "GEMM"
    return Int4Target(fmt, method, settings, record)


@dataclass
class Int4Source:
    folder: Path
    config: dict[str, Any]
    params: int | None
    weight_bytes: int
    dtype: str  # the checkpoint's 16-bit type: "bfloat16" or "float16"
    linear_shapes: dict[str, tuple[int, int]]  # decoder layers' 2-D weights: name -> (out, in)

    @property
    def text_config(self) -> dict[str, Any]:
        inner = self.config.get("text_config")
        return inner if isinstance(inner, dict) else self.config

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type") or "")

    @property
    def quantized_weights(self) -> int:
        return sum(o * i for o, i in self.linear_shapes.values())

    @property
    def experts(self) -> int:
        values = [self.text_config.get(k) or self.config.get(k) for k in _EXPERT_KEYS]
        return max((int(v) for v in values if isinstance(v, int)), default=0)


@dataclass
class Int4Plan(Plan):
    """The source read once, each target's settings and folder names, the device and the compute type."""

    source: Int4Source
    int4_targets: list[Int4Target]
    method: str  # "gptq" or "awq": one plan per method
    device: str  # "cpu" or "cuda"
    asked_device: str  # what the child is told: "auto" lets it fall back to the CPU
    compute_dtype: str  # what the model is held in while calibrating: "float32" on most CPUs
    estimate_s: float  # rough time for the whole job
    warnings: list[str] = field(default_factory=list)

    @property
    def finals(self) -> list[Path]:
        return [self.request.out_dir / t.folder_name(self.source.folder) for t in self.int4_targets]

    @property
    def parts(self) -> list[Path]:
        return [part_path(f) for f in self.finals]


def plan_job(request: QuantizeRequest, targets: list[Format], method: str) -> Int4Plan:
    """Every check that needs no model loaded: source, architecture, widths, names, folder, disk, memory."""
    source = read_source(request.source)
    check_architecture(source, method)
    int4_targets = [target_for(fmt, request.int4) for fmt in targets]
    check_group_size(source, request.int4.group_size, method)
    names = [t.folder_name(source.folder) for t in int4_targets]
    out_dir = request.out_dir
    for name in names:
        final = out_dir / name
        if final.resolve() == source.folder.resolve():
            raise QuantDeskError(f"The output {final} would replace the source; choose another --out folder.")
        check_not_foreign(final, made_by_quantdesk, request.overwrite)
    device = plan_device(request)
    need_disk = sum(estimate_output_bytes(source, t) for t in int4_targets) + 16 * 1024**2
    require_free_space(out_dir, need_disk, f"the {METHOD_NAMES[method]} outputs")
    warnings: list[str] = []
    compute = check_memory(source, request, device, method, warnings)
    check_output_folder(out_dir)
    estimate = estimate_seconds(source, request, method, device) * len(int4_targets)
    if device == "cpu" and estimate > _LONG_CPU_S:
        warnings.append(
            f"{METHOD_NAMES[method]} on this CPU will take roughly {_duration(estimate)} for {source.folder.name}; "
            "an NVIDIA GPU does it in minutes, and fewer calibration samples (--calib-samples) also help."
        )
    asked = "auto" if device == "cuda" and str(request.device).lower() == "auto" else device
    return Int4Plan(request=request, targets=list(targets), source=source, int4_targets=int4_targets,
                    method=method, device=device, asked_device=asked, compute_dtype=compute,
                    estimate_s=estimate, warnings=warnings)


def read_source(source: Path) -> Int4Source:
    """Check that ``source`` is an unquantized Hugging Face checkpoint and read its layers' shapes."""
    checkpoint = open_checkpoint(source, "GPTQ and AWQ")
    folder, config, shards = checkpoint.folder, checkpoint.config, checkpoint.shards
    params, weight_bytes = 0, 0
    shapes: dict[str, tuple[int, int]] = {}
    dtypes: dict[str, int] = {}
    for shard in shards:
        weight_bytes += shard.stat().st_size
        for name, info in read_safetensors_header(shard).items():
            if name == "__metadata__" or not isinstance(info, dict):
                continue
            shape = [int(d) for d in info.get("shape", [])]
            numel = 1
            for dim in shape:
                numel *= dim
            params += numel
            dtypes[str(info.get("dtype"))] = dtypes.get(str(info.get("dtype")), 0) + numel
            if (len(shape) == 2 and name.endswith(".weight") and _LAYER_NAME.search(name)
                    and not any(part in name for part in _SKIP_PARTS)):
                shapes[name] = (shape[0], shape[1])
    main = max(dtypes, key=lambda k: dtypes[k]) if dtypes else ""
    dtype = {"BF16": "bfloat16", "F16": "float16"}.get(main) or str(config.get("dtype") or config.get(
        "torch_dtype") or "bfloat16")
    if dtype not in ("bfloat16", "float16"):
        dtype = "bfloat16"
    return Int4Source(folder, config, params, weight_bytes, dtype, shapes)


@functools.lru_cache(maxsize=1)
def supported_model_types() -> frozenset[str] | None:
    """The ``model_type`` values gptqmodel has a definition for, read from its source without importing it.

    None when that cannot be read (another layout of the library): the child then finds out.
    """
    spec = importlib.util.find_spec(LIBRARY)
    if spec is None or not spec.submodule_search_locations:
        return None
    auto = Path(next(iter(spec.submodule_search_locations))) / "models" / "auto.py"
    try:
        text = auto.read_text(encoding="utf-8")
    except OSError:
        return None
    block = re.search(r"^MODEL_MAP\s*=\s*\{(.*?)^\}", text, re.S | re.M)
    names = frozenset(re.findall(r'^\s*"([\w.-]+)"\s*:', block.group(1), re.M)) if block else frozenset()
    return names or None


def check_architecture(source: Int4Source, method: str) -> None:
    """One sentence when gptqmodel (or QuantDesk's AWQ) cannot take this architecture."""
    name = source.folder.name
    known = supported_model_types()
    if known is not None and source.model_type and source.model_type not in known:
        raise QuantDeskError(
            f"gptqmodel does not support the {source.model_type!r} architecture of {name}, so QuantDesk cannot "
            "make GPTQ or AWQ from it; choose a GGUF type or bnb-nf4 instead."
        )
    if not source.linear_shapes:
        raise QuantDeskError(
            f"{name} has no decoder layers with linear weights that {METHOD_NAMES[method]} could quantize; "
            "choose a GGUF type instead."
        )
    if method == "awq" and source.experts > 1:
        raise QuantDeskError(
            f"{name} is a mixture-of-experts model ({source.experts} experts) and QuantDesk makes AWQ only for "
            "dense models; choose gptq-4bit, which handles it."
        )


def check_group_size(source: Int4Source, group: int, method: str) -> None:
    """Every quantized layer's input width must be a whole number of groups (the kernels need it)."""
    widths = sorted({i for _, i in source.linear_shapes.values()})
    bad = [w for w in widths if w % group]
    if not bad:
        return
    fits = [g for g in GROUP_SIZES if g < group and all(w % g == 0 for w in widths)]
    fix = (f"choose --group-size {max(fits)}" if fits else "choose a GGUF type or bnb-nf4 instead")
    raise QuantDeskError(
        f"{source.folder.name} has layers {bad[0]} wide, not a multiple of the group size {group}, which "
        f"{METHOD_NAMES[method]} kernels need; {fix}."
    )


def plan_device(request: QuantizeRequest) -> str:
    """"cpu" or "cuda" from what was asked and the GPUs NVML can see; refuses CUDA without a GPU."""
    return hf_source.plan_device(request, "GPTQ and AWQ")


def estimate_output_bytes(source: Int4Source, target: Int4Target) -> int:
    """4-bit weights plus a 16-bit scale and a 4-bit zero per group (and GPTQ's group index per input);
    everything else stays in the source's 16-bit type."""
    group = int(target.settings["group_size"])
    quantized = 0
    for out, inp in source.linear_shapes.values():
        quantized += out * inp // 2 + (out * inp // group) * 2 + (out * inp // group) // 2
        if target.method == "gptq":
            quantized += inp * 4
    other = max(0, (source.params or 0) - source.quantized_weights) * 2
    return quantized + other + 4 * 1024**2  # config, tokenizer, generation config


def check_memory(source: Int4Source, request: QuantizeRequest, device: str, method: str,
                 warnings: list[str]) -> str:
    """Refuse when it cannot fit; returns the type the model is held in while calibrating.

    On a CPU, GPTQ and AWQ run in float32 when the memory allows it: several times
    faster than bfloat16/float16, which most CPUs only emulate (AWQ's layers are cast
    back to 16 bits just before packing, engine/backends/int4/awq_cpu.py).
    """
    import psutil

    params = source.params or 0
    hidden = int(source.text_config.get("hidden_size") or 4096)
    calib = request.calibration
    activations = calib.samples * calib.seq_len * hidden * 4 * 4  # layer inputs, outputs and scratch
    available = psutil.virtual_memory().available
    if device == "cuda":
        from engine.hardware import detect_gpus

        layers = max(1, int(source.text_config.get("num_hidden_layers") or 1))
        free_vram = max((g.vram_free_bytes for g in detect_gpus()), default=0)
        need_vram = source.quantized_weights // layers * 2 * 4 + activations + _CUDA_RESERVE
        if free_vram < need_vram:
            raise QuantDeskError(
                f"Calibrating needs about {format_bytes(need_vram)} of GPU memory but the GPU has "
                f"{format_bytes(free_vram)} free; close other GPU programs, use fewer calibration samples, "
                "or choose --device cpu."
            )
        need_ram = params * 2 + _RUNTIME_RAM
        compute = source.dtype
    else:
        need_ram = params * 4 + activations + _RUNTIME_RAM
        compute = "float32"
        if available < need_ram:
            need_ram = params * 2 + activations + _RUNTIME_RAM
            compute = source.dtype
            if available >= need_ram:
                warnings.append(f"Not enough free memory to calibrate in float32, so {source.dtype} is used; "
                                "it is several times slower on most CPUs.")
    if available < need_ram:
        raise QuantDeskError(
            f"Calibrating {source.folder.name} needs about {format_bytes(need_ram)} of free memory but "
            f"{format_bytes(available)} is available; close other programs, use fewer calibration samples, "
            "or choose a smaller model."
        )
    return compute


def estimate_seconds(source: Int4Source, request: QuantizeRequest, method: str, device: str) -> float:
    """A rough figure for the progress line and the long-job warning, from measured rates."""
    from engine.jobs import cpu_threads

    tokens = request.calibration.samples * request.calibration.seq_len
    weights = source.quantized_weights
    single = weights * (tokens * _CPU_S_PER_WEIGHT_TOKEN[method] + _CPU_S_PER_WEIGHT[method])
    if device == "cuda":
        return 30.0 + single / _GPU_SPEEDUP
    threads = request.threads or cpu_threads()
    return 20.0 + single / max(1.0, min(threads, 8) * 0.7)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} seconds"
    if seconds < 5400:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.1f} hours"


def describe_estimate(seconds: float) -> str:
    return _duration(seconds)
