"""The main window: machine and model on the left; recommendation, quantize, chat and results as tabs."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from qtapp import settings
from qtapp.assets import icon
from qtapp.controller import JobController
from qtapp.jobs import JobQueue
from qtapp.session import Session
from qtapp.views.chat import ChatView
from qtapp.views.machine import MachinePanel
from qtapp.views.model import ModelPanel
from qtapp.views.quantize import QuantizeView
from qtapp.views.recommendation import RecommendationView
from qtapp.views.results import ResultsView
from qtapp.views.widgets import Banner
from qtapp.workers import failures, wait_until

TABS = ("recommendation", "quantize", "chat", "results")


class MainWindow(QMainWindow):
    first_painted = Signal()

    def __init__(self, model: Path | None = None) -> None:
        super().__init__()
        self.setWindowTitle("QuantDesk")
        self.setWindowIcon(icon("quantdesk"))
        self.setAcceptDrops(True)
        self.session = Session(self)
        self.queue = JobQueue(self)

        self.machine = MachinePanel()
        self.model_panel = ModelPanel()
        left = QWidget()
        left_box = QVBoxLayout(left)
        left_box.setContentsMargins(8, 8, 4, 8)
        left_box.addWidget(self.machine)
        left_box.addWidget(self.model_panel)
        left_box.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(left)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(300)

        self.banner = Banner()
        self.tabs = QTabWidget()
        self.recommendation = RecommendationView()
        self.quantize = QuantizeView()
        self.chat = ChatView()
        self.results = ResultsView()
        self.tabs.addTab(self.recommendation, "Recommendation")
        self.tabs.addTab(self.quantize, icon("start"), "Quantize")
        self.tabs.addTab(self.chat, icon("chat"), "Chat")
        self.tabs.addTab(self.results, icon("evaluate"), "Results")
        right = QWidget()
        right_box = QVBoxLayout(right)
        right_box.setContentsMargins(4, 8, 8, 8)
        right_box.addWidget(self.banner)
        right_box.addWidget(self.tabs, 1)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(scroll)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([340, 940])
        self.setCentralWidget(splitter)
        self.jobs = JobController(self.session, self.queue, self)
        self._actions()
        self._wire()
        self.statusBar().showMessage("Open a model to begin: a Hugging Face folder, a config.json or a GGUF file.")
        self._painted = False
        self.started = False
        self._initial_model = model

    # --- set-up -------------------------------------------------------------
    def _actions(self) -> None:
        bar = QToolBar("Main")
        bar.setMovable(False)
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.addToolBar(bar)
        self.open_action = QAction(icon("open"), "Open model…", self)
        self.open_action.setShortcut(QKeySequence.StandardKey.Open)
        self.open_action.triggered.connect(self.model_panel._pick_folder)
        self.start_action = QAction(icon("start"), "Start", self)
        self.start_action.setShortcuts([QKeySequence("Ctrl+Return"), QKeySequence("Ctrl+Enter")])
        self.start_action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        self.start_action.triggered.connect(self.start)
        self.stop_action = QAction(icon("stop"), "Stop", self)
        self.stop_action.setShortcut(QKeySequence("Ctrl+."))
        self.stop_action.triggered.connect(self.stop)
        for action in (self.open_action, self.start_action, self.stop_action):
            action.setToolTip(f"{action.text()} ({action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)})")
            bar.addAction(action)
            self.addAction(action)

    def _wire(self) -> None:
        s = self.session
        s.machine_changed.connect(self.machine.show_machine)
        s.machine_changed.connect(self._machine_changed)
        s.choices_changed.connect(self.model_panel.set_choices)
        s.model_loading.connect(self._model_loading)
        s.model_opened.connect(self._model_opened)
        s.model_failed.connect(self._model_failed)
        s.recommendation_changed.connect(self.recommendation.show_recommendation)
        s.error.connect(self.show_error)
        s.recommendation_failed.connect(self.recommendation.clear)
        failures().message.connect(self.show_error)
        self.model_panel.open_requested.connect(self.open_model)
        self.recommendation.context_changed.connect(s.set_context)
        self.recommendation.chosen.connect(self.quantize.preselect)
        self.quantize.start_requested.connect(self.jobs.start_quantize)
        self.quantize.out_dir_changed.connect(self.jobs.set_out_dir)
        self.quantize.job_list.watch(self.queue)
        self.quantize.job_list.cancel_requested.connect(self.queue.cancel)
        self.quantize.job_list.chat_requested.connect(self.chat_with)
        self.quantize.job_list.evaluate_requested.connect(self.jobs.evaluate)
        j = self.jobs
        j.error.connect(self.show_error)
        j.jobs_shown.connect(lambda: self.tabs.setCurrentWidget(self.quantize))
        j.unavailable_changed.connect(self.quantize.set_unavailable)
        j.library_changed.connect(self.results.show_rows)
        j.models_changed.connect(self.chat.set_models)
        self.chat.error.connect(self.show_error)
        self.results.refresh_requested.connect(self.jobs.refresh_artifacts)
        self.results.evaluate_requested.connect(self.jobs.evaluate)
        self.results.chat_requested.connect(self.chat_with)

    # --- what the user does ---------------------------------------------------
    def open_model(self, path: Path) -> None:
        from engine.demo import demo_model_dir, is_built

        self.banner.dismiss()
        path = Path(path)
        if path == demo_model_dir() and not is_built(path):
            self.statusBar().showMessage("Preparing the demo model (about a minute, once)…")
            self.session.open_demo()
            return
        self.session.open_model(path)

    def start(self) -> None:
        if self.tabs.currentWidget() is self.chat:
            self.chat.send()
        else:
            self.tabs.setCurrentWidget(self.quantize)
            self.quantize.request_start()

    def stop(self) -> None:
        if self.tabs.currentWidget() is self.chat and self.chat.busy:
            self.chat.stop()
        else:
            self.queue.cancel()

    def chat_with(self, path: Path) -> None:
        self.jobs.refresh_artifacts(prefer=Path(path))
        self.tabs.setCurrentWidget(self.chat)

    def _machine_changed(self, machine: dict) -> None:
        for pane in self.chat.panes():
            pane.set_cuda_available(bool(machine.get("gpus")))

    def show_error(self, message: str) -> None:
        if not message:
            self.banner.dismiss()
            return
        self.banner.show_error(message)
        self.statusBar().showMessage(message, 15000)

    def show_tab(self, name: str) -> None:
        self.tabs.setCurrentIndex(TABS.index(name))

    def _model_loading(self, path: Path) -> None:
        self.model_panel.show_loading(path)
        self.results.show_rows([])
        self.chat.set_models([])
        self.recommendation.clear(f"Reading {path.name}…")
        self.statusBar().showMessage(f"Reading {path}…")

    def _model_opened(self, path: Path, info: dict) -> None:
        self.model_panel.show_info(path, info)
        self.recommendation.set_max_context(info.get("context_length"))
        self.statusBar().showMessage(f"Opened {path}", 8000)
        self.jobs.refresh_artifacts()

    def _model_failed(self, path: Path, message: str) -> None:
        self.model_panel.show_failed(path)
        self.recommendation.clear("Open a model to see which formats fit this machine.")

    # --- window events ----------------------------------------------------------
    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().paintEvent(event)
        if not self._painted:
            self._painted = True
            self.first_painted.emit()
            # Only after the first paint: detection and the model's inspection.
            QTimer.singleShot(0, self._after_first_paint)

    def _after_first_paint(self) -> None:
        self.session.start()
        self.jobs.check_targets(list(self.quantize.boxes))
        if self._initial_model is not None:
            self.open_model(self._initial_model)
        self.started = True

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        for url in event.mimeData().urls():
            if url.isLocalFile():
                self.open_model(Path(url.toLocalFile()))
                event.acceptProposedAction()
                return

    def confirm_quit(self) -> bool:
        answer = QMessageBox.question(
            self, "A job is running",
            "A job is still running. Cancel it and quit? Nothing half-written will be left behind.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        queue = self.queue
        if queue.busy:
            if not self.confirm_quit():
                event.ignore()
                return
            self.statusBar().showMessage("Cancelling the running job…")
            queue.cancel_all()
            wait_until(lambda: not queue.busy, 15000)
        for pane in self.chat.panes():
            pane.close_model()
        self.session.stop()
        settings.set_value("window_geometry", self.saveGeometry())
        event.accept()

    def restore_geometry(self) -> bool:
        geometry = settings.value("window_geometry")
        return bool(geometry) and self.restoreGeometry(geometry)
