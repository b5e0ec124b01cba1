"""What this machine can hold: OS, CPU, RAM, disk, NVIDIA GPUs, llama.cpp offload.

Public API (other modules and the GUI import these):

- ``detect_machine(disk_path=None, *, with_torch=False, overrides=None) -> MachineInfo``
- ``apply_overrides(machine, overrides) -> MachineInfo``: the "what if" plan, a new copy
- ``Overrides(ram=None, vram=None, gpu=None, cpu_only=False)``: sizes as bytes or "16GiB"
- ``detect_gpus() -> list[GpuInfo]`` (NVML; empty without a GPU, library or driver)
- ``llama_gpu_offload() -> bool | None``, ``torch_cuda() -> bool | None``
- ``lookup_gpu(name) -> KnownGpu | None``: compute capability and VRAM of well-known cards

Detection never raises for a missing GPU, NVML library or driver: the GPU list is
simply empty. torch is imported only when ``with_torch=True``; llama.cpp's
offload flag is read from its shared library through ctypes (a few ms), falling
back to importing ``llama_cpp`` only when the library cannot be found that way.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from engine.errors import QuantDeskError
from engine.fsutil import disk_free
from engine.units import parse_size

GiB = 1024**3


@dataclass(frozen=True)
class KnownGpu:
    name: str
    compute_capability: str
    vram_bytes: int


# Well-known cards for "what if I had ...": (name, compute capability, usual VRAM in GiB).
# Longer names come first when matching, so "RTX 4060 Ti" wins over "RTX 4060".
_KNOWN_GPUS: tuple[tuple[str, str, float], ...] = (
    ("H200", "9.0", 141), ("H100", "9.0", 80), ("GH200", "9.0", 96), ("H800", "9.0", 80),
    ("B200", "10.0", 180), ("B100", "10.0", 180), ("GB200", "10.0", 186),
    ("RTX 5090", "12.0", 32), ("RTX 5080", "12.0", 16), ("RTX 5070 Ti", "12.0", 16), ("RTX 5070", "12.0", 12),
    ("RTX 5060 Ti", "12.0", 16), ("RTX 5060", "12.0", 8),
    ("A100", "8.0", 80), ("A800", "8.0", 80), ("A30", "8.0", 24),
    ("A10G", "8.6", 24), ("A10", "8.6", 24), ("A40", "8.6", 48), ("A6000", "8.6", 48), ("A5000", "8.6", 24),
    ("A4000", "8.6", 16), ("A2", "8.6", 16),
    ("L40S", "8.9", 48), ("L40", "8.9", 48), ("L4", "8.9", 24), ("RTX 6000 Ada", "8.9", 48),
    ("RTX 4090", "8.9", 24), ("RTX 4080", "8.9", 16), ("RTX 4070 Ti", "8.9", 12), ("RTX 4070", "8.9", 12),
    ("RTX 4060 Ti", "8.9", 8), ("RTX 4060", "8.9", 8),
    ("RTX 3090", "8.6", 24), ("RTX 3080 Ti", "8.6", 12), ("RTX 3080", "8.6", 10), ("RTX 3070", "8.6", 8),
    ("RTX 3060 Ti", "8.6", 8), ("RTX 3060", "8.6", 12), ("RTX 3050", "8.6", 8),
    ("TITAN RTX", "7.5", 24), ("RTX 2080 Ti", "7.5", 11), ("RTX 2080", "7.5", 8), ("RTX 2070", "7.5", 8),
    ("RTX 2060", "7.5", 6), ("GTX 1660", "7.5", 6), ("T4", "7.5", 16),
    ("V100", "7.0", 32), ("TITAN V", "7.0", 12),
    ("P100", "6.0", 16), ("P40", "6.1", 24), ("GTX 1080 Ti", "6.1", 11), ("GTX 1080", "6.1", 8),
    ("GTX 1070", "6.1", 8), ("GTX 1060", "6.1", 6),
)


def _norm(text: str) -> str:
    return " ".join(text.upper().replace("GEFORCE", "").replace("NVIDIA", "").replace("-", " ").split())


def lookup_gpu(name: str) -> KnownGpu | None:
    """Compute capability and usual VRAM for a well-known card name, e.g. 'rtx 4090' or 'H100 SXM'."""
    wanted = f" {_norm(name)} "
    for known, cc, gib in sorted(_KNOWN_GPUS, key=lambda k: -len(k[0])):
        if f" {_norm(known)} " in wanted:
            return KnownGpu(known, cc, int(gib * GiB))
    return None


@dataclass
class GpuInfo:
    name: str
    compute_capability: str | None  # "8.9"
    vram_total_bytes: int
    vram_free_bytes: int
    index: int = 0
    driver_version: str | None = None
    simulated: bool = False  # made up by a planning override

    @property
    def cc_major(self) -> int:
        try:
            return int(str(self.compute_capability).split(".")[0])
        except ValueError:
            return 0

    @property
    def cc_tuple(self) -> tuple[int, int]:
        try:
            major, minor = str(self.compute_capability).split(".")
            return int(major), int(minor)
        except ValueError:
            return (0, 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CpuInfo:
    model: str
    physical_cores: int | None
    logical_cores: int | None
    arch: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Overrides:
    """A planning "what if": any field left None keeps what was detected."""

    ram: int | str | None = None
    vram: int | str | None = None
    gpu: str | None = None
    cpu_only: bool = False

    def is_empty(self) -> bool:
        return self.ram is None and self.vram is None and not self.gpu and not self.cpu_only

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, False)}


@dataclass
class MachineInfo:
    os: str
    os_version: str
    python: str
    cpu: CpuInfo
    ram_total_bytes: int
    ram_available_bytes: int
    gpus: list[GpuInfo] = field(default_factory=list)
    driver_version: str | None = None
    disk_path: str | None = None
    disk_free_bytes: int | None = None
    llama_gpu_offload: bool | None = None  # None: llama.cpp not installed
    torch_cuda: bool | None = None  # None: not asked (asking imports torch)
    mps: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def planned(self) -> bool:
        return bool(self.overrides)

    @property
    def vram_total_bytes(self) -> int:
        return sum(g.vram_total_bytes for g in self.gpus)

    @property
    def vram_free_bytes(self) -> int:
        return sum(g.vram_free_bytes for g in self.gpus)

    @property
    def best_gpu(self) -> GpuInfo | None:
        return max(self.gpus, key=lambda g: g.vram_total_bytes, default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "os": {"name": self.os, "version": self.os_version, "python": self.python},
            "cpu": self.cpu.to_dict(),
            "ram": {"total_bytes": self.ram_total_bytes, "available_bytes": self.ram_available_bytes},
            "disk": {"path": self.disk_path, "free_bytes": self.disk_free_bytes},
            "gpus": [g.to_dict() for g in self.gpus],
            "driver_version": self.driver_version,
            "llama_gpu_offload": bool(self.llama_gpu_offload),
            "llama_cpp_installed": self.llama_gpu_offload is not None,
            "torch_cuda": self.torch_cuda,
            "mps": self.mps,
            "overrides": dict(self.overrides),
        }


# --------------------------------------------------------------------------- detection


def _cpu_model() -> str:
    system = platform.system()
    try:
        if system == "Linux":
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if line.lower().startswith(("model name", "hardware", "cpu model")):
                        return line.split(":", 1)[1].strip()
        elif system == "Darwin":
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                 text=True, timeout=5)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _detect_cpu() -> CpuInfo:
    import psutil

    return CpuInfo(
        model=_cpu_model(),
        physical_cores=psutil.cpu_count(logical=False),
        logical_cores=psutil.cpu_count(logical=True) or os.cpu_count(),
        arch=platform.machine(),
    )


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def detect_gpus() -> list[GpuInfo]:
    """Every NVIDIA GPU NVML can see. No GPU, no NVML library, no driver: []."""
    try:
        import pynvml
    except Exception:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:
        return []
    gpus: list[GpuInfo] = []
    try:
        try:
            driver = _text(pynvml.nvmlSystemGetDriverVersion())
        except Exception:
            driver = None
        for index in range(pynvml.nvmlDeviceGetCount()):
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                name = _text(pynvml.nvmlDeviceGetName(handle))
                mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception:
                continue
            try:
                major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
                cc: str | None = f"{major}.{minor}"
            except Exception:
                known = lookup_gpu(name)
                cc = known.compute_capability if known else None
            gpus.append(GpuInfo(name, cc, int(mem.total), int(mem.free), index, driver))
    except Exception:
        pass  # a GPU that vanished mid-query: report what was read
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
    return gpus


_LIB_NAMES = {"Linux": ("libllama.so",), "Darwin": ("libllama.dylib",), "Windows": ("llama.dll", "libllama.dll")}


@lru_cache(maxsize=1)
def llama_gpu_offload() -> bool | None:
    """Whether the installed llama.cpp can put layers on a GPU; None when llama-cpp-python is absent.

    Importing ``llama_cpp`` costs 0.2-3 s (numpy, its Python wrappers), so ask its
    shared library directly first.
    """
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    for lib_dir in (package / "lib", package):
        for name in _LIB_NAMES.get(platform.system(), ("libllama.so",)):
            path = lib_dir / name
            if not path.is_file():
                continue
            try:
                lib = ctypes.CDLL(str(path))
                fn = lib.llama_supports_gpu_offload
                fn.restype = ctypes.c_bool
                fn.argtypes = []
                return bool(fn())
            except (OSError, AttributeError):
                break
    try:
        import llama_cpp

        return bool(llama_cpp.llama_supports_gpu_offload())
    except Exception:
        return False


def torch_cuda() -> bool | None:
    """Whether torch sees a CUDA device. Imports torch (seconds), so only on request."""
    try:
        import torch
    except Exception:
        return None
    try:
        return bool(torch.cuda.is_available())
    except Exception:
        return False


def _mps(with_torch: bool) -> bool:
    if platform.system() != "Darwin" or platform.machine() != "arm64":
        return False
    if not with_torch:
        return True  # every Apple Silicon Mac has a Metal GPU
    try:
        import torch

        return bool(torch.backends.mps.is_available())
    except Exception:
        return False


def _os_version() -> str:
    system = platform.system()
    if system == "Darwin":
        return platform.mac_ver()[0] or platform.release()
    if system == "Linux":
        try:
            return platform.freedesktop_os_release().get("PRETTY_NAME", platform.release())
        except OSError:
            return platform.release()
    return platform.version() or platform.release()


# --------------------------------------------------------------------------- CPU features


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
            return bool(ctypes.windll.kernel32.IsProcessorFeaturePresent(40))  # PF_AVX2_INSTRUCTIONS_AVAILABLE
        except Exception:
            return None
    return None


def detect_machine(
    disk_path: str | os.PathLike[str] | None = None,
    *,
    with_torch: bool = False,
    overrides: Overrides | None = None,
) -> MachineInfo:
    """Everything QuantDesk needs to know about this machine, with the planning overrides applied."""
    import psutil

    mem = psutil.virtual_memory()
    gpus = detect_gpus()
    disk = Path(disk_path) if disk_path is not None else Path.cwd()
    machine = MachineInfo(
        os=platform.system(),
        os_version=_os_version(),
        python=platform.python_version(),
        cpu=_detect_cpu(),
        ram_total_bytes=int(mem.total),
        ram_available_bytes=int(mem.available),
        gpus=gpus,
        driver_version=gpus[0].driver_version if gpus else None,
        disk_path=str(disk),
        disk_free_bytes=disk_free(disk),
        llama_gpu_offload=llama_gpu_offload(),
        torch_cuda=torch_cuda() if with_torch else None,
        mps=_mps(with_torch),
    )
    return apply_overrides(machine, overrides) if overrides else machine


def _size(value: int | str | None, what: str) -> int | None:
    if value is None:
        return None
    n = value if isinstance(value, int) else parse_size(value)
    if n <= 0:
        raise QuantDeskError(f"The {what} size must be more than zero; write it like 16GiB.")
    return n


def apply_overrides(machine: MachineInfo, overrides: Overrides | None) -> MachineInfo:
    """A copy of ``machine`` as it would be with ``overrides`` ("what if I had a 12 GB card").

    --ram sets total and available RAM. --gpu NAME replaces the GPUs with that one card
    (compute capability and, unless --vram says otherwise, VRAM from the well-known list).
    --vram alone resizes the detected GPUs (or imagines one unnamed card). --cpu-only
    removes every GPU.
    """
    if overrides is None or overrides.is_empty():
        return machine
    ram = _size(overrides.ram, "RAM")
    vram = _size(overrides.vram, "VRAM")
    gpus = [replace(g) for g in machine.gpus]
    if overrides.gpu:
        known = lookup_gpu(overrides.gpu)
        if known is None and vram is None:
            raise QuantDeskError(
                f"QuantDesk does not know the card '{overrides.gpu}'; add its memory, e.g. --vram 12GiB."
            )
        total = vram if vram is not None else known.vram_bytes  # type: ignore[union-attr]
        gpus = [GpuInfo(overrides.gpu, known.compute_capability if known else None, total, total, 0,
                        machine.driver_version, simulated=True)]
    elif vram is not None:
        if gpus:
            gpus = [replace(g, vram_total_bytes=vram, vram_free_bytes=vram, simulated=True) for g in gpus[:1]]
        else:
            gpus = [GpuInfo("GPU", None, vram, vram, 0, None, simulated=True)]
    if overrides.cpu_only:
        gpus = []
    return replace(
        machine,
        ram_total_bytes=ram if ram is not None else machine.ram_total_bytes,
        ram_available_bytes=ram if ram is not None else machine.ram_available_bytes,
        gpus=gpus,
        mps=False if overrides.cpu_only else machine.mps,
        overrides=overrides.to_dict(),
    )
