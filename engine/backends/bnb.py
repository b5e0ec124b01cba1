"""bitsandbytes INT8 (LLM.int8) and NF4/FP4: Hugging Face checkpoints that reload with ``from_pretrained``.

Quantization happens while transformers loads the checkpoint with a
``BitsAndBytesConfig``; the result is saved with ``save_pretrained`` beside
the tokenizer, chat template and generation config, reloaded and checked in
the child process (``bnb_worker``), and only then renamed from ``.part`` into
place. The work runs in a child so that a cancel ends it at once and a crash
in native code cannot take the caller down.

Options (``QuantizeRequest.options``): ``bnb_double_quant`` (bool, default
True), ``bnb_compute_dtype`` ("bf16", "fp16" or "fp32", default "bf16"),
``bnb_quant_type`` ("nf4" or "fp4", default "nf4"), ``bnb_int8_threshold``
(LLM.int8 outlier threshold, default 6.0).
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from engine.artifacts import Artifact, package_versions, read_sidecar, size_on_disk, write_sidecar
from engine.backends.base import Backend, OutputRecord, QuantizeRequest
from engine.backends.registry import register
from engine.errors import JobCancelled, QuantDeskError
from engine.formats import Format
from engine.fsutil import check_writable, part_path, promote, remove_quietly
from engine.inspect import model_name, safetensors_tensors
from engine.jobs import CancelToken, JobGen, Progress, run_in_child
from engine.units import format_bytes

MIN_BNB_VERSION = "0.47"
INSTALL_BNB = f'pip install -U "bitsandbytes>={MIN_BNB_VERSION}"'
CPU_SLOW_NOTE = (
    "bitsandbytes runs on this CPU, but chatting with the result will be slow; "
    "GGUF (e.g. Q4_K_M) is the fast choice without a GPU."
)
OPTION_DEFAULTS: dict[str, Any] = {
    "bnb_double_quant": True,
    "bnb_compute_dtype": "bf16",
    "bnb_quant_type": "nf4",
    "bnb_int8_threshold": 6.0,
}
_COMPUTE_DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
                   "half": "float16", "fp32": "float32", "float32": "float32"}
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


def target_for(fmt: Format, options: dict[str, Any] | None = None) -> BnbTarget:
    """Turn a format and the user's options into BitsAndBytesConfig settings; bad options are refused."""
    opts = {**OPTION_DEFAULTS, **{k: v for k, v in (options or {}).items() if k in OPTION_DEFAULTS}}
    if fmt.id == "hf:bnb-int8":
        try:
            threshold = float(opts["bnb_int8_threshold"])
        except (TypeError, ValueError):
            threshold = -1.0
        if threshold <= 0:
            raise QuantDeskError(
                f"The INT8 outlier threshold must be a positive number, not {opts['bnb_int8_threshold']!r}; "
                "leave it at 6.0 unless you know you need another."
            )
        return BnbTarget(fmt, "bnb-int8", {"load_in_8bit": True, "llm_int8_threshold": threshold},
                         {"method": "LLM.int8", "int8_threshold": threshold})
    if fmt.id == "hf:bnb-nf4":
        quant_type = str(opts["bnb_quant_type"]).lower()
        if quant_type not in ("nf4", "fp4"):
            raise QuantDeskError(f"Unknown 4-bit quant type {opts['bnb_quant_type']!r}; choose nf4 or fp4.")
        compute = _COMPUTE_DTYPES.get(str(opts["bnb_compute_dtype"]).lower())
        if compute is None:
            raise QuantDeskError(
                f"Unknown compute dtype {opts['bnb_compute_dtype']!r}; choose bf16, fp16 or fp32."
            )
        double = _as_bool(opts["bnb_double_quant"])
        return BnbTarget(
            fmt,
            f"bnb-{quant_type}",
            {"load_in_4bit": True, "bnb_4bit_quant_type": quant_type,
             "bnb_4bit_use_double_quant": double, "bnb_4bit_compute_dtype": compute},
            {"quant_type": quant_type, "double_quant": double, "compute_dtype": compute},
        )
    raise QuantDeskError(f"The bitsandbytes backend cannot produce {fmt.label}.")


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)


# --- the machine --------------------------------------------------------------------------------


def avx2_from_cpuinfo(text: str) -> bool | None:
    """Whether a Linux /proc/cpuinfo text lists the avx2 flag (None when it has no flags line)."""
    for line in text.splitlines():
        if line.lower().startswith("flags"):
            return "avx2" in line.split(":", 1)[-1].split()
    return None


def has_avx2() -> bool | None:
    """True/False when the OS tells; None when it cannot be read (then bitsandbytes decides)."""
    system = platform.system()
    if system == "Linux":
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                return avx2_from_cpuinfo(fh.read())
        except OSError:
            return None
    if system == "Windows":
        try:
            import ctypes

            return bool(ctypes.windll.kernel32.IsProcessorFeaturePresent(40))  # PF_AVX2_INSTRUCTIONS_AVAILABLE
        except Exception:
            return None
    return None


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
    asked = str(getattr(request, "device", None) or "auto").lower()
    if asked not in ("auto", "cpu", "cuda"):
        raise QuantDeskError(f"Unknown device '{asked}'; choose cpu, cuda or auto.")
    if asked == "cpu":
        return "cpu"
    from engine.hardware import detect_gpus

    gpus = detect_gpus()
    if asked == "cuda" and not gpus:
        raise QuantDeskError(
            "CUDA was asked for, but this machine has no NVIDIA GPU the driver can see; "
            "choose --device cpu (bitsandbytes works on CPU, slowly) or a GGUF type."
        )
    return "cuda" if gpus else "cpu"


# --- the source ---------------------------------------------------------------------------------


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
    folder = source.parent if source.is_file() and source.name == "config.json" else source
    if folder.is_file():
        if folder.suffix.lower() == ".gguf":
            raise QuantDeskError(
                f"{folder.name} is a GGUF file; bitsandbytes needs the original Hugging Face folder, "
                "so point to that folder or choose a GGUF type for this file."
            )
        raise QuantDeskError(f"{folder} is a file; point to the model's Hugging Face folder instead.")
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise QuantDeskError(
            f"{folder} has no config.json, so it is not a Hugging Face checkpoint; point to the model's folder."
        ) from None
    except (OSError, ValueError) as err:
        raise QuantDeskError(f"{config_path} cannot be read ({err}); re-download the model.") from None
    quant = config.get("quantization_config")
    if quant:
        method = quant.get("quant_method", "quantized") if isinstance(quant, dict) else "quantized"
        record = read_sidecar(folder)
        made = f" (made by QuantDesk from {record.source_name})" if record and record.source_name else ""
        raise QuantDeskError(
            f"{folder.name} is already quantized with {method}{made}; quantizing it again would lose "
            "quality, so point to the original FP16/BF16 checkpoint instead."
        )
    shards = sorted(folder.glob("*.safetensors"))
    bins = sorted(folder.glob("*.bin"))
    if not shards and not bins:
        raise QuantDeskError(
            f"{folder} has no weights (*.safetensors or *.bin); download the complete model."
        )
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


# --- the backend --------------------------------------------------------------------------------


class BnbBackend(Backend):
    name = "bnb"
    formats = ("hf:bnb-int8", "hf:bnb-nf4")
    required_packages = (
        ("torch", "torch"),
        ("transformers", "transformers>=5"),
        ("accelerate", "accelerate"),
        ("bitsandbytes", f"bitsandbytes>={MIN_BNB_VERSION}"),
    )

    def validate_environment(self, request: QuantizeRequest | None = None) -> None:
        """Packages, bitsandbytes' version, and the device: CUDA asked without a GPU, or a CPU it cannot use.

        Cheap on purpose (no torch import): runs before anything is loaded.
        """
        missing = self.missing_packages()
        if missing:
            quoted = " ".join(f'"{req}"' if ">" in req else req for req in missing)
            raise QuantDeskError(
                f"bitsandbytes INT8/NF4 needs {', '.join(missing)}; install with: pip install -U {quoted}"
            )
        version = _bnb_version()
        if version is not None and version < _parse_version(MIN_BNB_VERSION):
            raise QuantDeskError(
                f"bitsandbytes {version} is too old to run on CPU and with current transformers; "
                f"upgrade it with: {INSTALL_BNB}"
            )
        device = plan_device(request)
        if device == "cpu":
            problem = cpu_problem()
            if problem:
                raise QuantDeskError(problem)

    def preflight(self, request: QuantizeRequest, targets: list[Format]) -> None:
        self._prepare(request, targets)

    def _prepare(self, request: QuantizeRequest, targets: list[Format]) -> tuple[SourceInfo, list[BnbTarget], str]:
        """Every check that needs no model loaded: source, options, names, folder, disk, memory."""
        source = read_source(request.source)
        plans = [target_for(fmt, request.options) for fmt in targets]
        names = [t.folder_name(source.folder) for t in plans]
        if len(set(names)) != len(names):
            raise QuantDeskError("Two targets would write the same folder; ask for each bitsandbytes type once.")
        out_dir = request.out_dir
        for name in names:
            final = out_dir / name
            if final.resolve() == source.folder.resolve():
                raise QuantDeskError(f"The output {final} would replace the source; choose another --out folder.")
            if final.exists() and read_sidecar(final) is None:
                raise QuantDeskError(
                    f"{final} already exists and was not made by QuantDesk; move it away or choose another "
                    "--out folder."
                )
        device = plan_device(request)
        for plan, name in zip(plans, names, strict=True):
            source.estimates[name] = estimate_output_bytes(source, plan)
        extra = _support_files_bytes(source.folder)
        need_disk = sum(source.estimates.values()) + extra * len(plans) + 16 * 1024**2
        from engine.hardware import disk_free

        free = disk_free(out_dir)
        if free is not None and free < need_disk:
            raise QuantDeskError(
                f"{out_dir} has {format_bytes(free)} free but the bitsandbytes outputs need about "
                f"{format_bytes(need_disk)}; free some space or choose another --out folder."
            )
        biggest = max(source.estimates.values())
        _check_memory(device, biggest, source.largest_tensor_bytes)
        _check_folder(out_dir)
        return source, plans, device

    def run(self, request: QuantizeRequest, targets: list[Format], cancel: CancelToken) -> JobGen[list[OutputRecord]]:
        source, plans, device = self._prepare(request, targets)
        out_dir = request.out_dir
        finals = [out_dir / t.folder_name(source.folder) for t in plans]
        parts = [part_path(f) for f in finals]
        if device == "cpu":
            yield Progress(step="warning", fraction=0.0, message=CPU_SLOW_NOTE)
        jobs = [
            {"format": t.format.id, "label": t.format.label, "bnb_config": t.bnb_config, "part": str(p)}
            for t, p in zip(plans, parts, strict=True)
        ]
        check_writable(out_dir)
        for part in parts:
            remove_quietly(part)
        # "auto" on a machine with a GPU lets the child fall back to the CPU when torch has no CUDA.
        asked = "auto" if device == "cuda" and str(request.device).lower() == "auto" else device
        child = run_in_child(
            _worker_entry, str(source.folder), jobs, asked, request.threads, cancel=cancel
        )
        promoted: list[Path] = []
        try:
            while True:
                try:
                    kind, payload = next(child)
                except StopIteration as stop:
                    results: list[dict[str, Any]] = stop.value
                    break
                if kind == "progress":
                    yield _progress(payload, len(jobs))
            cancel.raise_if_cancelled()
            outputs: list[OutputRecord] = []
            yield Progress(step="finishing", fraction=1.0, message="Writing model cards and library records")
            for plan, part, final, result in zip(plans, parts, finals, results, strict=True):
                record = _record(final, source, plan, result, size_on_disk(part))
                _write_card(part, record)
                promote(part, final)
                promoted.append(final)
                record = write_sidecar(
                    final, format=record.format, source=source.folder, options=record.options,
                    versions=record.versions, source_name=record.source_name, source_params=source.params,
                )
                outputs.append(OutputRecord(final, plan.format.id, record.size_bytes))
            from engine.modelcard import write_model_card

            write_model_card(out_dir, source=source.folder.resolve())
            return outputs
        except BaseException as err:
            child.close()  # ends the child before its folders are removed
            for part in parts:
                remove_quietly(part)
            if isinstance(err, (JobCancelled, GeneratorExit, KeyboardInterrupt)):
                from engine.artifacts import delete_artifact

                for final in promoted:
                    delete_artifact(final)
            raise


def _record(final: Path, source: SourceInfo, plan: BnbTarget, result: dict[str, Any], size: int) -> Artifact:
    """What the sidecar and the card say about one finished folder."""
    options: dict[str, Any] = {**plan.options, "device": result["device"], "dtype": result["dtype"],
                               "quantized_modules": result["quantized_modules"]}
    if source.params:
        options["bits_per_weight"] = round(size * 8 / source.params, 3)
    return Artifact(path=final, format=plan.format.id, source=str(source.folder.resolve()), size_bytes=size,
                    options=options, versions={**package_versions(), **result["versions"]},
                    source_name=model_name(source.folder), source_params=source.params,
                    created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def _worker_entry(reporter: Any, source: str, jobs: list[dict[str, Any]], device: str,
                  threads: int | None) -> list[dict[str, Any]]:
    # Imported in the child only: keeps torch and transformers out of the caller.
    from engine.backends.bnb_worker import quantize_all

    return quantize_all(reporter, source, jobs, device, threads)


# Within one target, how far each step has got.
_SPANS = {"warning": (0.0, 0.0), "loading": (0.0, 0.05), "quantizing": (0.05, 0.75),
          "saving": (0.75, 0.85), "verifying": (0.85, 1.0)}


def _progress(payload: dict[str, Any], n_jobs: int) -> Progress:
    step = payload.get("step", "quantizing")
    lo, hi = _SPANS.get(step, (0.0, 1.0))
    within = lo + (hi - lo) * max(0.0, min(1.0, float(payload.get("within", 0.0))))
    index = int(payload.get("target_index", 0))
    return Progress(
        step=step,
        fraction=min(1.0, (index + within) / max(1, n_jobs)),
        message=payload.get("message", ""),
        tensor_index=payload.get("tensor_index"),
        tensor_count=payload.get("tensor_count"),
        tensor_name=payload.get("tensor_name"),
        extra={"format": payload["format"]} if payload.get("format") else {},
    )


def _check_folder(out_dir: Path) -> None:
    """The output folder is writable, or can be created; creates nothing (run() does)."""
    if out_dir.exists():
        check_writable(out_dir)
        return
    parent = out_dir.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise QuantDeskError(f"Cannot create the output folder {out_dir} there; choose another folder.")


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


def _parse_version(text: str) -> Any:
    from packaging.version import Version

    return Version(text)


def _bnb_version() -> Any:
    try:
        return _parse_version(metadata.version("bitsandbytes"))
    except (metadata.PackageNotFoundError, ValueError):
        return None


def _write_card(folder: Path, record: Artifact) -> None:
    """README.md inside the folder: the shared model card plus what bitsandbytes needs to load it."""
    from engine.modelcard import read_chat_template, render_card

    source = Path(record.source)
    text = render_card([record], source=source, chat_template=read_chat_template(source), modelfile=None)
    settings = ", ".join(f"{k} {v}" for k, v in record.options.items()
                         if k in ("method", "quant_type", "double_quant", "compute_dtype", "int8_threshold"))
    where = "a CPU" if record.options.get("device") == "cpu" else "an NVIDIA GPU"
    text += (
        f"\n## bitsandbytes\n\n{record.format_label} ({settings}), quantized on {where}. The settings are "
        "stored in `config.json`, so `from_pretrained` needs no `quantization_config`; it needs "
        f'`pip install transformers accelerate "bitsandbytes>={MIN_BNB_VERSION}"`. It loads on an NVIDIA GPU '
        '(`device_map="cuda"`) or on a CPU with AVX2 (`device_map="cpu"`), where generation is much slower.\n'
    )
    (folder / "README.md").write_text(text, encoding="utf-8")


register(BnbBackend())
