"""Machine panel: CPU, RAM and every GPU's VRAM, refreshed live; whether llama.cpp can use the GPU."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from engine.units import format_bytes
from qtapp.views.widgets import Meter, heading, muted, panel


class MachinePanel(QWidget):
    def __init__(self) -> None:
        super().__init__()
        frame, layout = panel()
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(frame)
        layout.addWidget(heading("This machine"))
        self.cpu = QLabel("Looking at this machine…")
        self.cpu.setWordWrap(True)
        self.ram = Meter("RAM")
        self.gpu_box = QVBoxLayout()
        self.gpu_box.setSpacing(4)
        self.llama = muted("")
        layout.addWidget(self.cpu)
        layout.addWidget(self.ram)
        layout.addLayout(self.gpu_box)
        layout.addWidget(self.llama)
        self._gpu_meters: list[Meter] = []
        self.machine: dict[str, Any] = {}

    def show_machine(self, machine: dict[str, Any]) -> None:
        """Render a machine report shaped like ``quantdesk doctor --json``."""
        self.machine = machine
        cpu = machine.get("cpu") or {}
        cores = cpu.get("physical_cores") or cpu.get("cores")
        threads = cpu.get("logical_cores") or cpu.get("threads")
        name = cpu.get("model") or cpu.get("name") or "CPU"
        core_text = f"{cores} cores" if cores else ""
        if threads and threads != cores:
            core_text += f", {threads} threads"
        self.cpu.setText(f"<b>CPU</b> {name}" + (f" — {core_text}" if core_text else ""))
        ram = machine.get("ram") or {}
        total = ram.get("total_bytes") or 0
        used = total - (ram.get("available_bytes") or 0)
        self.ram.set(f"<b>RAM</b> {format_bytes(used)} of {format_bytes(total)} used", used, total)
        self._show_gpus(machine.get("gpus") or [])
        offload = machine.get("llama_gpu_offload")
        if offload is None:
            self.llama.setText("")
        elif offload:
            self.llama.setText("llama.cpp can offload layers to the GPU.")
        else:
            self.llama.setText("llama.cpp here is a CPU build: GGUF models run on the CPU.")

    def _show_gpus(self, gpus: list[dict[str, Any]]) -> None:
        while len(self._gpu_meters) < max(1, len(gpus)):
            meter = Meter()
            self._gpu_meters.append(meter)
            self.gpu_box.addWidget(meter)
        for meter in self._gpu_meters[len(gpus):]:
            meter.hide()
        if not gpus:
            meter = self._gpu_meters[0]
            meter.caption.setText("<b>GPU</b> none found (no NVIDIA GPU or driver)")
            meter.bar.hide()
            meter.show()
            return
        for meter, gpu in zip(self._gpu_meters, gpus, strict=False):
            total = gpu.get("vram_total_bytes") or 0
            used = total - (gpu.get("vram_free_bytes") or 0)
            cc = gpu.get("compute_capability")
            cc_text = f" (compute {cc})" if cc else ""
            meter.set(f"<b>GPU</b> {gpu.get('name', 'GPU')}{cc_text}<br>VRAM {format_bytes(used)} of "
                      f"{format_bytes(total)} used", used, total)
            meter.bar.show()
            meter.show()
