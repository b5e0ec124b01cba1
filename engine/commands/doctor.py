"""``quantdesk doctor``: what this machine can hold (RAM, CPU, GPUs, llama.cpp offload).

Fast by design: no torch unless ``--torch`` asks whether torch sees CUDA.
"""

from __future__ import annotations

import argparse
import json

from engine.terminal import one_line
from engine.units import format_bytes


def add_machine_arguments(p: argparse.ArgumentParser) -> None:
    """The planning overrides ("what if I had a 12 GB card"), shared with ``recommend``."""
    g = p.add_argument_group("what if (planning overrides)")
    g.add_argument("--ram", metavar="SIZE", help="plan for this much RAM, e.g. 32GiB")
    g.add_argument("--vram", metavar="SIZE", help="plan for this much GPU memory, e.g. 12GiB")
    g.add_argument("--gpu", metavar="NAME", help='plan for this NVIDIA card, e.g. "RTX 4090" or H100')
    g.add_argument("--cpu-only", action="store_true", help="plan as if there were no GPU")


def overrides_from_args(args: argparse.Namespace):
    from engine.hardware import Overrides

    return Overrides(ram=args.ram, vram=args.vram, gpu=args.gpu, cpu_only=args.cpu_only)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="show what this machine can hold: RAM, CPU, GPUs, llama.cpp offload")
    p.add_argument("--json", action="store_true", help="print JSON (a stable contract)")
    p.add_argument("--disk", metavar="PATH", help="report free disk space here (default: current folder)")
    p.add_argument("--torch", action="store_true", help="also ask torch whether it sees CUDA (imports torch)")
    add_machine_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.hardware import detect_machine

    machine = detect_machine(args.disk, with_torch=args.torch, overrides=overrides_from_args(args))
    if args.json:
        print(json.dumps(machine.to_dict(), indent=2))
        return 0
    print(render(machine))
    return 0


def render(machine) -> str:
    """The machine as an aligned, human-readable block."""
    cpu = machine.cpu
    rows = [
        ("OS", f"{machine.os} ({machine.os_version}), Python {machine.python}"),
        ("CPU", f"{cpu.model}, {cpu.physical_cores or '?'} physical / {cpu.logical_cores or '?'} logical cores "
                f"({cpu.arch})"),
        ("RAM", f"{format_bytes(machine.ram_total_bytes)} total, {format_bytes(machine.ram_available_bytes)} available"),
    ]
    if machine.disk_free_bytes is not None:
        rows.append(("Disk", f"{format_bytes(machine.disk_free_bytes)} free at {machine.disk_path}"))
    if machine.gpus:
        for g in machine.gpus:
            made_up = " (planned)" if g.simulated else ""
            rows.append((f"GPU {g.index}", f"{g.name}{made_up}, compute {g.compute_capability or '?'}, "
                                           f"{format_bytes(g.vram_total_bytes)} VRAM, "
                                           f"{format_bytes(g.vram_free_bytes)} free"))
        if machine.driver_version:
            rows.append(("Driver", machine.driver_version))
    else:
        rows.append(("GPU", "none usable (no NVIDIA GPU, driver or NVML found)"))
    if machine.llama_gpu_offload is None:
        llama = "not installed: pip install llama-cpp-python"
    elif machine.llama_gpu_offload:
        llama = "can offload layers to the GPU"
    else:
        llama = 'CPU-only build (for a GPU: CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall llama-cpp-python)'
    rows.append(("llama.cpp", llama))
    torch_text = {None: "not checked (add --torch)", True: "sees CUDA", False: "does not see CUDA"}
    rows.append(("torch", torch_text[machine.torch_cuda]))
    if machine.mps:
        rows.append(("Apple GPU", "Metal (MPS) available"))
    if machine.overrides:
        rows.append(("Planning", ", ".join(f"{k}={v}" for k, v in machine.overrides.items())))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {one_line(v)}" for k, v in rows)
