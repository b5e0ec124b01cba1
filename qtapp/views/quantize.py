"""Quantize: pick targets (preselected by the recommendation), an output folder, and start; jobs below."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.formats import FORMATS
from qtapp import settings
from qtapp.assets import icon
from qtapp.views.jobs import JobList
from qtapp.views.widgets import Foldable, heading, muted

MAIN_TARGETS = ("gguf:Q4_K_M", "gguf:Q5_K_M", "gguf:Q6_K", "gguf:Q8_0", "hf:bnb-int8", "hf:bnb-nf4",
                "hf:awq-4bit", "hf:gptq-4bit", "hf:fp8")
MORE_TARGETS = tuple(f for f in ("gguf:Q4_K_S", "gguf:Q5_K_S", "gguf:Q3_K_M", "gguf:Q2_K", "gguf:IQ4_XS",
                                 "gguf:IQ4_NL", "gguf:IQ3_M", "gguf:IQ3_XXS", "gguf:IQ2_XS", "gguf:IQ2_XXS",
                                 "gguf:Q4_0", "gguf:F16", "gguf:BF16") if f in FORMATS)
# The importance-matrix choices: (shown text, the engine's value; None = a file, chosen below).
IMATRIX_CHOICES = (("Only for the types that need one", ""), ("Compute from the calibration data", "auto"),
                   ("Never", "none"), ("From a file…", None))


@dataclass
class QuantizeChoice:
    """What the form says, as the engine's QuantizeRequest wants it."""

    targets: list[str]
    out_dir: Path
    threads: int | None
    device: str
    options: dict[str, Any]
    check: bool = True  # the quick quality check after the job
    max_bytes: int | None = None  # "Best under … GB": the size-budget search (engine.autopick) instead of targets


class QuantizeView(QWidget):
    """Scrolls as a whole on a small screen, so the job list keeps a usable height."""

    start_requested = Signal(object)  # QuantizeChoice
    out_dir_changed = Signal(Path)
    targets_changed = Signal()

    JOB_LIST_MIN_HEIGHT = 200

    def __init__(self) -> None:
        super().__init__()
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        body = QWidget()
        self.scroll.setWidget(body)
        outer.addWidget(self.scroll)
        layout = QVBoxLayout(body)
        layout.addWidget(heading("Quantize"))
        self.boxes: dict[str, QCheckBox] = {}
        grid = QGridLayout()
        grid.setHorizontalSpacing(18)
        for i, fid in enumerate(MAIN_TARGETS):
            grid.addWidget(self._box(fid), i // 3, i % 3)
        layout.addLayout(grid)

        self.more = Foldable("More formats")
        more = QWidget()
        more_grid = QGridLayout(more)
        more_grid.setContentsMargins(0, 0, 0, 0)
        for i, fid in enumerate(MORE_TARGETS):
            more_grid.addWidget(self._box(fid), i // 4, i % 4)
        self.more.addWidget(more)
        layout.addWidget(self.more)

        budget_row = QHBoxLayout()
        self.budget_on = QCheckBox("&Best under")
        self.budget_on.setToolTip("Let QuantDesk choose: it asks llama.cpp for the exact size of each GGUF type "
                                  "and mix, makes the largest that fit this size, checks each against the "
                                  "original and keeps the one that lost least (the ticked formats are not used).")
        self.budget = QDoubleSpinBox()
        self.budget.setRange(0.001, 100_000.0)
        self.budget.setDecimals(3)
        self.budget.setSingleStep(0.5)
        self.budget.setSuffix(" GB")
        self.budget.setValue(4.0)
        self.budget.setEnabled(False)
        self.budget.setAccessibleName("Size budget in GB")
        self.budget_on.toggled.connect(self._budget_toggled)
        budget_row.addWidget(self.budget_on)
        budget_row.addWidget(self.budget)
        budget_row.addWidget(muted("the GGUF type that fits, chosen by measuring"), 1)
        layout.addLayout(budget_row)
        self._unavailable: set[str] = set()

        out = QHBoxLayout()
        out_label = QLabel("&Output folder")
        out.addWidget(out_label)
        self.out_dir = QLineEdit(str(settings.output_base()))
        self.out_dir.setToolTip("Each model has its own folder; the one a job last wrote into successfully "
                                "is remembered for that model.")
        out_label.setBuddy(self.out_dir)
        self.out_dir.textChanged.connect(lambda _t: self.out_dir_changed.emit(self.chosen_out_dir()))
        browse = QPushButton(icon("folder"), "Choose…")
        browse.setToolTip("Choose the folder this model's outputs go into")
        browse.clicked.connect(self._browse)
        out.addWidget(self.out_dir, 1)
        out.addWidget(browse)
        layout.addLayout(out)

        self.advanced = Foldable("Advanced options")
        adv = QWidget()
        form = QFormLayout(adv)
        self.threads = QSpinBox()
        self.threads.setRange(0, 256)
        self.threads.setSpecialValueText("auto (physical cores)")
        self.threads.setValue(settings.threads(0))
        self.threads.valueChanged.connect(settings.set_threads)
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda"])
        self.keep_intermediate = QCheckBox("Keep the intermediate GGUF (BF16/F16)")
        self.requantize = QCheckBox("Allow re-quantizing an already quantized GGUF (loses quality)")
        self.pure = QCheckBox("Pure: every tensor in the chosen type (no k-quant mixture)")
        self.output_type = _type_combo()
        self.embedding_type = _type_combo()
        self.converter = QLineEdit(str(settings.value("converter", "") or ""))
        self.converter.setPlaceholderText("built-in; or a llama.cpp checkout's convert_hf_to_gguf.py")
        self.converter.editingFinished.connect(lambda: settings.set_value("converter", self.converter.text()))
        self.nf4_type = QComboBox()
        self.nf4_type.addItems(["nf4", "fp4"])
        self.compute_dtype = QComboBox()
        self.compute_dtype.addItems(["bf16", "fp16", "fp32"])
        self.double_quant = QCheckBox("Double quantization (smaller, same quality)")
        self.double_quant.setChecked(True)
        form.addRow("Threads", self.threads)
        form.addRow("", self.keep_intermediate)
        form.addRow("", self.requantize)
        form.addRow("", self.pure)
        form.addRow("GGUF output tensor type", self.output_type)
        form.addRow("GGUF token embedding type", self.embedding_type)
        form.addRow("GGUF converter", self.converter)
        form.addRow("bitsandbytes device", self.device)
        form.addRow("bitsandbytes 4-bit type", self.nf4_type)
        form.addRow("bitsandbytes compute dtype", self.compute_dtype)
        form.addRow("", self.double_quant)
        self._add_calibration_rows(form)
        self.advanced.addWidget(adv)
        layout.addWidget(self.advanced)

        self.check = QCheckBox("Check &quality after quantizing")
        self.check.setToolTip("Once the files are written, compare each with the original on a short text and "
                              "six fixed questions, and give a verdict: near-lossless, small loss, noticeable "
                              "loss or broken. Takes a fraction of the job's time; the files are kept either way.")
        self.check.setChecked(_as_bool(settings.value("quick_check", True)))
        self.check.toggled.connect(lambda on: settings.set_value("quick_check", bool(on)))
        layout.addWidget(self.check)

        start_row = QHBoxLayout()
        self.start = QPushButton(icon("start"), "&Quantize")
        self.start.setObjectName("Primary")
        self.start.setToolTip("Add a job to the queue (Ctrl+Enter)")
        self.start.clicked.connect(self._start_clicked)
        self.status = muted("")
        start_row.addWidget(self.start)
        start_row.addWidget(self.status, 1)
        layout.addLayout(start_row)
        layout.addWidget(heading("Jobs"))
        self.job_list = JobList()
        self.job_list.setMinimumHeight(self.JOB_LIST_MIN_HEIGHT)
        layout.addWidget(self.job_list, 1)

    def _add_calibration_rows(self, form: QFormLayout) -> None:
        """GPTQ/AWQ settings, the calibration data they (and the importance matrix) use, and the imatrix choice."""
        self.calib_file = QLineEdit(str(settings.value("calibration_file", "") or ""))
        self.calib_file.setPlaceholderText("built-in texts (chat, prose, code, other languages)")
        self.calib_file.setToolTip("A .txt file, or a .jsonl file with a \"text\" or chat \"messages\" field on "
                                   "every line, in the language and domain you will use the model for.")
        self.calib_file.editingFinished.connect(
            lambda: settings.set_value("calibration_file", self.calib_file.text().strip()))
        choose = QPushButton("Choose…")
        choose.setToolTip("Choose your own calibration text")
        choose.clicked.connect(self._browse_calibration)
        self.calib_mix = QCheckBox("Mix with the built-in texts")
        self.calib_mix.setToolTip("Calibrate on your file and the built-in chats, prose and code together.")
        row = QHBoxLayout()
        row.addWidget(self.calib_file, 1)
        row.addWidget(choose)
        self.calib_samples = QSpinBox()
        self.calib_samples.setRange(1, 4096)
        self.calib_samples.setValue(128)
        self.calib_seq_len = QSpinBox()
        self.calib_seq_len.setRange(32, 8192)
        self.calib_seq_len.setSingleStep(128)
        self.calib_seq_len.setValue(512)
        self.group_size = QComboBox()
        self.group_size.addItems(["128", "64", "32"])
        self.group_size.setToolTip("Weights sharing one scale: 128 is the usual choice; 64 or 32 keep more "
                                   "precision in slightly larger files.")
        self.sym = QCheckBox("Symmetric groups (no zero point)")
        self.sym.setChecked(True)
        self.act_order = QCheckBox("GPTQ act-order (desc_act): a little more accurate, slower on some kernels")
        self.damp = QLineEdit("0.05")
        self.damp.setToolTip("GPTQ's Hessian damping; raise to 0.1 if quantization fails as unstable.")
        self.imatrix = QComboBox()
        for text, _value in IMATRIX_CHOICES:
            self.imatrix.addItem(text)
        self.imatrix.setToolTip("An importance matrix weights each GGUF tensor's rounding by how much the "
                                "calibration text uses it: IQ types need one, k-quants lose less with one.")
        self.imatrix_file = QLineEdit()
        self.imatrix_file.setPlaceholderText("llama.cpp imatrix file (.gguf or .dat)")
        self.imatrix_file.setVisible(False)
        self.imatrix.currentIndexChanged.connect(
            lambda i: self.imatrix_file.setVisible(IMATRIX_CHOICES[i][1] is None))
        form.addRow("Calibration data", row)
        form.addRow("", self.calib_mix)
        form.addRow("Calibration samples", self.calib_samples)
        form.addRow("Tokens per sample", self.calib_seq_len)
        form.addRow("GPTQ/AWQ group size", self.group_size)
        form.addRow("", self.sym)
        form.addRow("", self.act_order)
        form.addRow("GPTQ damping", self.damp)
        form.addRow("GGUF importance matrix", self.imatrix)
        form.addRow("", self.imatrix_file)

    def _browse_calibration(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Calibration text", self.calib_file.text(),
                                              "Text (*.txt *.jsonl);;All files (*)")
        if path:
            self.calib_file.setText(path)
            settings.set_value("calibration_file", path)

    def calibration_options(self) -> dict[str, Any]:
        """The calibration, GPTQ/AWQ and imatrix part of options(), in the engine's flat names."""
        user = self.calib_file.text().strip()
        data = "builtin" if not user else (f"builtin+{user}" if self.calib_mix.isChecked() else user)
        opts: dict[str, Any] = {
            "calibration_data": data, "calibration_samples": self.calib_samples.value(),
            "calibration_seq_len": self.calib_seq_len.value(), "int4_group_size": int(self.group_size.currentText()),
            "int4_sym": self.sym.isChecked(), "int4_desc_act": self.act_order.isChecked(),
            "int4_damp": self.damp.text().strip() or "0.05",
        }
        value = IMATRIX_CHOICES[self.imatrix.currentIndex()][1]
        if value is None:
            opts["imatrix"] = self.imatrix_file.text().strip() or None
        elif value:
            opts["imatrix"] = value
        return opts

    def _start_clicked(self) -> None:
        self.request_start()

    def request_start(self) -> None:
        self.start_requested.emit(self.choice())

    def chosen_out_dir(self) -> Path:
        return Path(self.out_dir.text().strip() or settings.output_base()).expanduser()

    def choice(self) -> QuantizeChoice:
        return QuantizeChoice(targets=self.targets(), out_dir=self.chosen_out_dir(),
                              threads=self.threads.value() or None, device=self.device.currentText(),
                              options=self.options(), check=self.check.isChecked(), max_bytes=self.max_bytes())

    def max_bytes(self) -> int | None:
        """The size budget in bytes when "Best under" is on (GB as the CLI's --max-size reads it)."""
        if not self.budget_on.isChecked():
            return None
        from engine.units import parse_size

        return parse_size(f"{self.budget.value():.3f}GB")

    def ready(self) -> bool:
        """Something to start: ticked formats, or a size budget."""
        return self.budget_on.isChecked() or bool(self.targets())

    def _budget_toggled(self, on: bool) -> None:
        self.budget.setEnabled(on)
        for fid, box in self.boxes.items():
            box.setEnabled(not on and fid not in self._unavailable)
        self.targets_changed.emit()

    def _box(self, fid: str) -> QCheckBox:
        fmt = FORMATS[fid]
        box = QCheckBox(fmt.label)
        box.setToolTip(f"{fmt.label}: {fmt.bits_per_weight} bits per weight — {fmt.quality_note}")
        box.toggled.connect(lambda _on: self.targets_changed.emit())
        self.boxes[fid] = box
        return box

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Where to write the outputs", self.out_dir.text())
        if folder:
            self.out_dir.setText(folder)

    def set_out_dir(self, folder: Path) -> None:
        """The open model's output folder (the user may still change it)."""
        self.out_dir.setText(str(folder))

    def preselect(self, format_ids: list[str]) -> None:
        """Tick what the recommendation chose; the user can change it."""
        for fid, box in self.boxes.items():
            box.setChecked(fid in format_ids)
        if any(fid in MORE_TARGETS for fid in format_ids):
            self.more.expand()

    def set_unavailable(self, hints: dict[str, str]) -> None:
        """Disable targets whose backend is missing, saying how to install it."""
        for fid, hint in hints.items():
            box = self.boxes.get(fid)
            if box is not None:
                self._unavailable.add(fid)
                box.setEnabled(False)
                box.setChecked(False)
                box.setToolTip(hint)

    def targets(self) -> list[str]:
        return [fid for fid, box in self.boxes.items() if box.isChecked() and box.isEnabled()]

    def options(self) -> dict[str, Any]:
        """The engine's QuantizeRequest options, as the CLI's flags would set them."""
        opts: dict[str, Any] = {
            "keep_intermediate": self.keep_intermediate.isChecked(),
            "requantize": self.requantize.isChecked(),
            "pure": self.pure.isChecked(),
            "bnb_quant_type": self.nf4_type.currentText(),
            "bnb_compute_dtype": self.compute_dtype.currentText(),
            "bnb_double_quant": self.double_quant.isChecked(),
        }
        for key, combo in (("output_tensor_type", self.output_type), ("token_embedding_type", self.embedding_type)):
            if combo.currentIndex() > 0:
                opts[key] = combo.currentText()
        if self.converter.text().strip():
            opts["converter"] = self.converter.text().strip()
        opts.update(self.calibration_options())
        return opts


def _as_bool(value: Any) -> bool:
    """A QSettings value as a bool (an ini file gives back the string "false")."""
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "")
    return bool(value)


def _type_combo() -> QComboBox:
    combo = QComboBox()
    combo.addItems(["default", "q8_0", "q6_K", "q5_K", "q4_K", "f16", "bf16"])
    return combo
