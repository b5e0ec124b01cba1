"""Get from Hugging Face: type a repository name, see the plan for this machine, confirm the download.

The dialog only shows and asks: the controller plans (file list and config.json
alone, no weights) and queues the download, whose progress shows in the job list.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from engine.units import format_bytes
from qtapp.assets import icon
from qtapp.views.widgets import fit_height, heading, muted, panel

FIT_COLOUR = {"fits": "#2f9e44", "tight": "#e67700", "no": "#e03131"}
TOKEN_PAGE = "https://huggingface.co/settings/tokens"


class GetDialog(QDialog):
    plan_requested = Signal(str, str, str)  # repository, revision, token ("" when none was typed)
    download_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Get from Hugging Face")
        self.setMinimumWidth(680)
        layout = QVBoxLayout(self)
        layout.addWidget(heading("Get a model from Hugging Face"))
        layout.addWidget(muted(
            "Type the model's name as on huggingface.co. QuantDesk first reads only its file list and "
            "config.json and shows what it becomes on this machine; nothing large is downloaded before you "
            "confirm."))

        form = QFormLayout()
        self.repo = QLineEdit()
        self.repo.setPlaceholderText("e.g. Qwen/Qwen2.5-1.5B-Instruct")
        self.repo.textEdited.connect(self._edited)
        self.revision = QLineEdit()
        self.revision.setPlaceholderText("main")
        self.revision.setToolTip("A branch, tag or commit (optional)")
        self.revision.textEdited.connect(self._edited)
        repo_label = QLabel("&Repository")
        repo_label.setBuddy(self.repo)
        rev_label = QLabel("Re&vision")
        rev_label.setBuddy(self.revision)
        form.addRow(repo_label, self.repo)
        form.addRow(rev_label, self.revision)
        layout.addLayout(form)

        # A gated or private model: the token, saved by huggingface_hub's own login.
        self.token_box = QWidget()
        token_layout = QVBoxLayout(self.token_box)
        token_layout.setContentsMargins(0, 0, 0, 0)
        token_row = QHBoxLayout()
        token_label = QLabel("Access &token")
        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("hf_…")
        token_label.setBuddy(self.token)
        token_row.addWidget(token_label)
        token_row.addWidget(self.token, 1)
        token_layout.addLayout(token_row)
        self.token_note = muted(
            f"Make a read token at {TOKEN_PAGE}. It is saved where huggingface_hub keeps its login "
            "(as hf auth login does), so other tools find it too.")
        self.token_note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        token_layout.addWidget(self.token_note)
        self.token_box.hide()
        layout.addWidget(self.token_box)

        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setTextVisible(False)
        self.busy.setObjectName("UsageBar")
        self.busy.hide()
        layout.addWidget(self.busy)
        self.status = muted("")
        self.status.hide()
        layout.addWidget(self.status)
        self.error = QLabel()
        self.error.setObjectName("GetError")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #e03131;")
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error.hide()
        layout.addWidget(self.error)

        self.plan_frame, plan_layout = panel()
        self.plan_title = QLabel()
        bold = self.plan_title.font()
        bold.setBold(True)
        self.plan_title.setFont(bold)
        self.plan_title.setWordWrap(True)
        plan_layout.addWidget(self.plan_title)
        facts = QFormLayout()
        facts.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        self.model_text = _value_label()
        self.fits_text = _value_label()
        self.fits_text.setTextFormat(Qt.TextFormat.RichText)
        self.download_text = _value_label()
        self.disk_text = _value_label()
        facts.addRow("Model", self.model_text)
        facts.addRow("Fits here", self.fits_text)
        facts.addRow("Download", self.download_text)
        facts.addRow("Free disk", self.disk_text)
        plan_layout.addLayout(facts)
        self.warnings = _value_label()
        self.warnings.setStyleSheet("color: #e67700;")
        plan_layout.addWidget(self.warnings)
        self.plan_frame.hide()
        layout.addWidget(self.plan_frame)
        layout.addStretch(1)

        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.plan_btn = QPushButton("Show &plan")
        self.plan_btn.clicked.connect(self.request_plan)
        self.download_btn = QPushButton(icon("start"), "&Download")
        self.download_btn.setObjectName("Primary")
        self.download_btn.setEnabled(False)
        self.download_btn.clicked.connect(self._download_clicked)
        self.close_btn = QPushButton("Close")
        self.close_btn.clicked.connect(self.reject)
        for b in (self.plan_btn, self.download_btn, self.close_btn):
            b.setAutoDefault(False)
            buttons.addWidget(b)
        self.plan_btn.setDefault(True)
        layout.addLayout(buttons)
        self.plan: dict[str, Any] | None = None

    # --- what the user does -------------------------------------------------------
    def request_plan(self) -> None:
        self.plan = None
        self.plan_frame.hide()
        self.error.hide()
        self.download_btn.setEnabled(False)
        repo = self.repo.text().strip()
        if repo:
            self.busy.show()
            self.status.setText(f"Reading the file list and config.json of {repo}…")
            self.status.show()
            self.plan_btn.setEnabled(False)
        self.plan_requested.emit(repo, self.revision.text().strip(), self.token.text().strip())

    def _download_clicked(self) -> None:
        if self.plan is None:
            return
        self.download_requested.emit()
        self.accept()

    def _edited(self, _text: str) -> None:
        """A plan belongs to the name it was made for: editing the name asks for a new one."""
        if self.plan is not None:
            self.plan = None
            self.download_btn.setEnabled(False)
            self.plan_btn.setDefault(True)
            self.download_btn.setDefault(False)

    # --- what the controller answers ------------------------------------------------
    def _idle(self) -> None:
        self.busy.hide()
        self.status.hide()
        self.plan_btn.setEnabled(True)

    def show_error(self, message: str, token_may_help: bool = False) -> None:
        self._idle()
        self.error.setText(message)
        self.error.show()
        if token_may_help:
            self.token_box.show()
            self.token.setFocus()
        else:
            self.repo.setFocus()
        self._fit()

    def show_plan(self, plan: dict[str, Any]) -> None:
        self._idle()
        self.error.hide()
        self.plan = plan
        model = plan.get("model") or {}
        self.plan_title.setText(f"{plan['repo_id']} @ {plan['revision']} ({str(plan.get('commit', ''))[:10]})")
        params = (model.get("parameters") or 0) / 1e9
        text = f"{model.get('architecture') or 'unknown architecture'}, about {params:.2f}B parameters"
        if model.get("context_length"):
            text += f", trained for {model['context_length']:,} tokens"
        self.model_text.setText(text)
        self.fits_text.setText(_fits(plan.get("recommendation") or {}))
        files = plan.get("files") or []
        present = plan.get("present_bytes") or 0
        download = f"{len(files)} files, {format_bytes(plan.get('download_bytes'))}"
        if present:
            download += f" ({format_bytes(present)} already here)"
        self.download_text.setText(f"{download}, into {plan.get('cache_dir')}")
        self.disk_text.setText(
            f"about {format_bytes(plan.get('disk_needed_bytes'))} needed: download "
            f"{format_bytes(plan.get('remaining_bytes'))} + conversion {format_bytes(plan.get('intermediate_bytes'))}"
            f" + output {format_bytes(plan.get('output_bytes'))}; {format_bytes(plan.get('free_bytes'))} free")
        warnings = plan.get("warnings") or []
        self.warnings.setText("\n".join(warnings))
        self.warnings.setVisible(bool(warnings))
        self.plan_frame.show()
        remaining = plan.get("remaining_bytes") or 0
        self.download_btn.setText(f"&Download {format_bytes(remaining)}" if remaining else "&Open it (all here)")
        self.download_btn.setEnabled(True)
        self.plan_btn.setDefault(False)
        self.download_btn.setDefault(True)
        self.download_btn.setFocus()
        self._fit()

    def _fit(self) -> None:
        fit_height(self)

    def reset(self) -> None:
        """Opened again: keep the name typed before, forget its plan and any old message."""
        self._idle()
        self.plan = None
        self.error.hide()
        self.plan_frame.hide()
        self.download_btn.setEnabled(False)
        self.download_btn.setText("&Download")
        self.plan_btn.setDefault(True)
        self.repo.setFocus()


def _value_label() -> QLabel:
    label = QLabel()
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def _fits(rec: dict[str, Any]) -> str:
    """The first few formats QuantDesk can make that fit, with their size and fit, coloured."""
    options = [o for o in rec.get("options") or [] if o.get("available") and o.get("fit") != "no"][:4]
    if not options:
        return (f"Nothing QuantDesk can make fits this machine at {rec.get('context', 0):,} tokens; "
                "the Recommendation tab shows why once the model is here.")
    parts = []
    for o in options:
        name = o.get("label") or str(o.get("format", "")).split(":", 1)[-1]
        colour = FIT_COLOUR.get(o.get("fit", ""), "")
        parts.append(f"<b>{name}</b> {format_bytes(o.get('size_bytes'))} "
                     f"<span style='color:{colour}'>{o.get('fit')}</span>")
    return " · ".join(parts)
