"""Machine detection on this real machine, and the planning overrides."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from engine.errors import QuantDeskError
from engine.hardware import (
    GiB,
    MachineInfo,
    Overrides,
    apply_overrides,
    detect_gpus,
    detect_machine,
    llama_gpu_offload,
    lookup_gpu,
)


@pytest.fixture(scope="module")
def machine(tmp_path_factory) -> MachineInfo:
    return detect_machine(tmp_path_factory.mktemp("disk"))


def _nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:
        return False


def test_this_machine_is_described(machine):
    assert machine.os and machine.python
    assert machine.cpu.logical_cores >= 1 and machine.cpu.model
    assert machine.cpu.physical_cores is None or machine.cpu.physical_cores <= machine.cpu.logical_cores
    assert 0 < machine.ram_available_bytes <= machine.ram_total_bytes
    assert machine.disk_free_bytes and machine.disk_free_bytes > 0
    assert machine.torch_cuda is None  # not asked: torch stays unimported
    assert machine.overrides == {}


def test_gpu_list_is_empty_without_nvml_and_never_raises():
    gpus = detect_gpus()
    assert isinstance(gpus, list)
    if not _nvml_works():
        assert gpus == []


@pytest.mark.gpu
def test_nvidia_gpus_are_read_through_nvml():
    gpus = detect_gpus()
    assert gpus, "NVML works but no GPU was reported"
    for g in gpus:
        assert g.name and g.compute_capability and "." in g.compute_capability
        assert 0 < g.vram_free_bytes <= g.vram_total_bytes
        assert g.driver_version


def test_llama_offload_flag_matches_llama_cpp_itself():
    import llama_cpp

    assert llama_gpu_offload() == bool(llama_cpp.llama_supports_gpu_offload())


def test_disk_free_at_a_path_that_does_not_exist_yet(tmp_path):
    m = detect_machine(tmp_path / "not" / "yet")
    assert m.disk_free_bytes and m.disk_free_bytes > 0


@pytest.mark.parametrize(
    ("name", "cc", "vram_gib"),
    [("H100", "9.0", 80), ("NVIDIA H100 80GB HBM3", "9.0", 80), ("H200", "9.0", 141), ("A100", "8.0", 80),
     ("NVIDIA GeForce RTX 4090", "8.9", 24), ("rtx 4080", "8.9", 16), ("RTX 4070", "8.9", 12),
     ("RTX 4060 Ti", "8.9", 8), ("RTX 3090", "8.6", 24), ("RTX 3080", "8.6", 10), ("RTX 3070", "8.6", 8),
     ("GeForce RTX 3060", "8.6", 12), ("L4", "8.9", 24), ("L40", "8.9", 48), ("Tesla T4", "7.5", 16),
     ("Tesla V100-SXM2-32GB", "7.0", 32)],
)
def test_well_known_cards(name, cc, vram_gib):
    known = lookup_gpu(name)
    assert known is not None and known.compute_capability == cc and known.vram_bytes == vram_gib * GiB


def test_unknown_card_is_not_guessed():
    assert lookup_gpu("Radeon RX 7900") is None
    assert lookup_gpu("L400") is None  # "L4" must match a whole word


def test_planned_gpu_by_name(machine):
    m = apply_overrides(machine, Overrides(gpu="RTX 4090"))
    assert [(g.name, g.compute_capability, g.vram_total_bytes, g.simulated) for g in m.gpus] == [
        ("RTX 4090", "8.9", 24 * GiB, True)]
    assert m.overrides == {"gpu": "RTX 4090"}
    assert machine.overrides == {}  # the detected machine is left as it was


def test_planned_vram_and_ram(machine):
    m = apply_overrides(machine, Overrides(ram="32GiB", vram="12G"))
    assert m.ram_total_bytes == m.ram_available_bytes == 32 * GiB
    assert m.vram_total_bytes == 12 * GiB and len(m.gpus) == 1
    m = apply_overrides(machine, Overrides(gpu="H100", vram="94GiB"))
    assert m.gpus[0].compute_capability == "9.0" and m.vram_total_bytes == 94 * GiB


def test_unknown_card_needs_its_memory(machine):
    with pytest.raises(QuantDeskError, match="--vram"):
        apply_overrides(machine, Overrides(gpu="Mystery 9000"))
    m = apply_overrides(machine, Overrides(gpu="Mystery 9000", vram="16000MB"))
    assert m.gpus[0].compute_capability is None and m.vram_total_bytes == 16 * 10**9


def test_cpu_only_removes_every_gpu(machine):
    m = apply_overrides(machine, Overrides(gpu="H100", cpu_only=True))
    assert m.gpus == [] and m.vram_total_bytes == 0


@pytest.mark.parametrize("bad", ["lots", "0GiB", "-3G"])
def test_bad_sizes_are_one_clear_line(machine, bad):
    with pytest.raises(QuantDeskError, match="16GiB"):
        apply_overrides(machine, Overrides(ram=bad))


def test_to_dict_is_json(machine):
    d = json.loads(json.dumps(machine.to_dict()))
    assert set(d["ram"]) == {"total_bytes", "available_bytes"}
    assert {"physical_cores", "logical_cores", "model"} <= set(d["cpu"])
    assert isinstance(d["gpus"], list) and isinstance(d["llama_gpu_offload"], bool)


def test_doctor_json_does_not_import_torch():
    code = (
        "import sys, io, contextlib, json\n"
        "from engine.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n    rc = main(['doctor', '--json'])\n"
        "d = json.loads(buf.getvalue())\n"
        "heavy = [m for m in ('torch', 'transformers', 'llama_cpp', 'PySide6') if m in sys.modules]\n"
        "print(rc, sorted(d), heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    rc, rest = out.split(" ", 1)
    assert rc == "0"
    assert rest.rstrip().endswith("[]"), out
    for key in ("'cpu'", "'ram'", "'gpus'", "'llama_gpu_offload'"):
        assert key in rest


def test_torch_cuda_only_when_asked(tmp_path):
    import torch

    m = detect_machine(tmp_path, with_torch=True)
    assert m.torch_cuda is torch.cuda.is_available()
    assert detect_machine(tmp_path).torch_cuda is None
