"""The main window: machine and model on the left; recommendation, quantize, chat and results as tabs."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QSplitter,
    QStackedWidget,
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
from qtapp.views.get_dialog import GetDialog
from qtapp.views.handoff import CommandDialog, LmStudioFolderDialog
from qtapp.views.machine import MachinePanel
from qtapp.views.model import ModelPanel, pick_entries
from qtapp.views.quantize import QuantizeView
from qtapp.views.recommendation import RecommendationView
from qtapp.views.results import ResultsView
from qtapp.views.start import StartPanel
from qtapp.views.widgets import Banner
from qtapp.workers import failures, wait_until

TABS = ("recommendation", "quantize", "chat", "results")
TAB_TITLES = ("&Recommendation", "&Quantize", "&Chat", "R&esults")


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
        scroll.setMinimumWidth(260)

        self.tabs = QTabWidget()
        self.recommendation = RecommendationView()
        self.quantize = QuantizeView()
        self.chat = ChatView()
        self.results = ResultsView()
        self.tabs.addTab(self.recommendation, "Recommendation")
        self.tabs.addTab(self.quantize, icon("start"), "Quantize")
        self.tabs.addTab(self.chat, icon("chat"), "Chat")
        self.tabs.addTab(self.results, icon("evaluate"), "Results")
        self.start_panel = StartPanel()
        self.stack = QStackedWidget()
        self.stack.addWidget(self.start_panel)
        self.stack.addWidget(self.tabs)
        right = QWidget()
        right_box = QVBoxLayout(right)
        right_box.setContentsMargins(4, 8, 8, 8)
        right_box.addWidget(self.stack, 1)
        self.banner = Banner(right)  # floats over the main area: never pushes it down
        right.installEventFilter(self)
        self._right = right

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(scroll)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([320, 960])
        splitter.setChildrenCollapsible(False)
        self.setCentralWidget(splitter)
        self.jobs = JobController(self.session, self.queue, self)
        self._actions()
        self._wire()
        self.statusBar().showMessage("Open a model to begin: a Hugging Face folder, a config.json or a GGUF file.")
        self._painted = False
        self.started = False
        self._initial_model = model
        self._choices: tuple[Path | None, list] = (None, [])
        self.get_dialog: GetDialog | None = None
        self.command_dialog: CommandDialog | None = None
        self.update_actions()

    # --- set-up -------------------------------------------------------------
    def _actions(self) -> None:
        bar = QToolBar("Main")
        bar.setMovable(False)
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.addToolBar(bar)
        self.open_action = self._action("&Open model…", self.browse_model, QKeySequence.StandardKey.Open, "open")
        self.demo_action = self._action("Open the &demo model", self.open_demo, None, "start")
        self.get_action = self._action("&Get from Hugging Face…", lambda: self.get_from_hub(),
                                       QKeySequence("Ctrl+G"), "open")
        self.lmstudio_folder_action = self._action("&LM Studio models folder…", self.choose_lmstudio_folder, None)
        self.quit_action = self._action("&Quit", self.close, QKeySequence("Ctrl+Q"))
        self.start_action = self._action("Start", self.start, None, "start")
        self.start_action.setShortcuts([QKeySequence("Ctrl+Return"), QKeySequence("Ctrl+Enter")])
        self.stop_action = self._action("Stop", self.stop, QKeySequence("Ctrl+."), "stop")
        self.new_chat_action = self._action("&New chat", self.new_chat, QKeySequence("Ctrl+N"))
        self.use_action = self._action("&Use the selected formats", self.use_selected_formats, QKeySequence("Ctrl+U"))
        self.tab_actions = []
        for i, title in enumerate(TAB_TITLES):
            action = self._action(title, lambda _c=False, i=i: self.show_tab(TABS[i]), QKeySequence(f"Ctrl+{i + 1}"))
            self.tab_actions.append(action)
        self.next_tab_action = self._action("Next tab", lambda: self._step_tab(1), None)
        self.next_tab_action.setShortcuts([QKeySequence("Ctrl+Tab"), QKeySequence("Ctrl+PgDown")])
        self.prev_tab_action = self._action("Previous tab", lambda: self._step_tab(-1), None)
        self.prev_tab_action.setShortcuts([QKeySequence("Ctrl+Shift+Tab"), QKeySequence("Ctrl+PgUp")])

        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        for action in (self.open_action, self.get_action, self.demo_action):
            file_menu.addAction(action)
        file_menu.addSeparator()
        file_menu.addAction(self.lmstudio_folder_action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        view_menu = menu.addMenu("&View")
        for action in (*self.tab_actions, self.next_tab_action, self.prev_tab_action):
            view_menu.addAction(action)
        job_menu = menu.addMenu("&Actions")
        for action in (self.start_action, self.stop_action, self.use_action, self.new_chat_action):
            job_menu.addAction(action)
        for action in (self.open_action, self.start_action, self.stop_action):
            bar.addAction(action)

    def _action(self, text: str, slot, shortcut, icon_name: str | None = None) -> QAction:
        action = QAction(icon(icon_name) if icon_name else icon(""), text, self)
        if shortcut is not None:
            action.setShortcut(shortcut)
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.triggered.connect(slot)
        self.addAction(action)  # shortcuts work with the menu bar hidden too
        return action

    def _step_tab(self, step: int) -> None:
        self.stack.setCurrentWidget(self.tabs)
        self.tabs.setCurrentIndex((self.tabs.currentIndex() + step) % self.tabs.count())

    def _wire(self) -> None:
        s = self.session
        s.machine_changed.connect(self.machine.show_machine)
        s.machine_changed.connect(self._machine_changed)
        s.choices_changed.connect(self._choices_changed)
        s.demo_preparing.connect(self._demo_preparing)
        s.demo_progress.connect(self.start_panel.show_progress)
        s.model_loading.connect(self._model_loading)
        s.model_opened.connect(self._model_opened)
        s.model_failed.connect(self._model_failed)
        s.recommendation_changed.connect(self.recommendation.show_recommendation)
        s.recommendation_changed.connect(lambda _r: self.update_actions())
        s.error.connect(self.show_error)
        s.recommendation_failed.connect(self.recommendation.clear)
        failures().message.connect(self.show_error)
        self.model_panel.open_requested.connect(self.open_model)
        self.start_panel.open_requested.connect(self.open_model)
        self.start_panel.demo_requested.connect(self.open_demo)
        self.start_panel.browse_requested.connect(self.browse_model)
        self.start_panel.get_requested.connect(self.get_from_hub)
        self.recommendation.context_changed.connect(s.set_context)
        self.recommendation.chosen.connect(self.quantize.preselect)
        self.recommendation.use_requested.connect(lambda _f: self.show_tab("quantize"))
        self.quantize.start_requested.connect(self.jobs.start_quantize)
        self.quantize.out_dir_changed.connect(self.jobs.set_out_dir)
        self.quantize.targets_changed.connect(self.update_actions)
        self.quantize.job_list.watch(self.queue)
        self.quantize.job_list.cancel_requested.connect(self.queue.cancel)
        self.quantize.job_list.clear_requested.connect(self.queue.clear_finished)
        self.quantize.job_list.export_requested.connect(self.hand_on)
        self.quantize.job_list.retry_requested.connect(self.jobs.retry)
        self.results.export_requested.connect(self.hand_on)
        self.results.watch(self.queue)
        self.results.cancel_requested.connect(self.queue.cancel)
        self.queue.busy_changed.connect(lambda _b: self.update_actions())
        self.chat.state_changed.connect(self.update_actions)
        self.tabs.currentChanged.connect(self._tab_changed)
        self.quantize.job_list.chat_requested.connect(self.chat_with)
        self.quantize.job_list.evaluate_requested.connect(self.jobs.evaluate)
        j = self.jobs
        j.error.connect(self.show_error)
        j.evaluations_shown.connect(lambda: self.show_tab("results"))
        j.out_dir_suggested.connect(self.quantize.set_out_dir)
        j.unavailable_changed.connect(self.quantize.set_unavailable)
        j.library_changed.connect(self.results.show_rows)
        j.models_changed.connect(self.chat.set_models)
        j.jobs_shown.connect(lambda: self.show_tab("quantize"))
        j.note.connect(self.show_note)
        j.command_shown.connect(self.show_command)
        j.copy_confirm.connect(self._confirm_copy)
        self.chat.error.connect(self.show_error)
        self.results.refresh_requested.connect(self.jobs.refresh_artifacts)
        self.results.evaluate_requested.connect(self.jobs.evaluate)
        self.results.chat_requested.connect(self.chat_with)

    # --- what the user does ---------------------------------------------------
    def browse_model(self) -> None:
        self.model_panel._pick_folder()

    def open_demo(self) -> None:
        from engine.demo import demo_model_dir

        self.open_model(demo_model_dir())

    def open_model(self, path: Path) -> None:
        from engine.demo import demo_model_dir, is_built

        path = Path(path)
        if path == self.session.model_path and (self.session.busy or self.session.model_info):
            return  # already open (or being read): a click and a double-click are one request
        if path == demo_model_dir() and not is_built(path):
            self.statusBar().showMessage("Preparing the demo model (about a minute, once)…")
            self.session.open_demo()
            return
        self.session.open_model(path)

    def get_from_hub(self, repo_id: str = "") -> None:
        """The Get from Hugging Face dialog: a name, its plan for this machine, then the download as a job.

        With ``repo_id`` (``quantdesk gui --get NAME``) the name is typed in and its plan asked for at once.
        """
        if self.get_dialog is None:
            dialog = self.get_dialog = GetDialog(self)
            dialog.plan_requested.connect(self.jobs.plan_get)
            dialog.download_requested.connect(self.jobs.start_get)
            dialog.rejected.connect(self.jobs.cancel_plan)
            self.jobs.get_planned.connect(dialog.show_plan)
            self.jobs.get_plan_failed.connect(dialog.show_error)
        self.get_dialog.reset()
        self.get_dialog.open()
        if repo_id:
            self.get_dialog.repo.setText(repo_id)
            self.get_dialog.request_plan()

    def hand_on(self, target: str, gguf: Path) -> None:
        """Use in LM Studio, Add to Ollama, Serve with llama.cpp."""
        {"lmstudio": self.jobs.use_in_lmstudio, "ollama": self.jobs.add_to_ollama,
         "llama-server": self.jobs.serve_with_llama}[target](Path(gguf))

    def show_command(self, title: str, text: str, command: str) -> None:
        if self.command_dialog is not None:
            self.command_dialog.close()
        self.command_dialog = CommandDialog(title, text, command, self)
        self.command_dialog.show()

    def confirm_copy(self, question: str) -> bool:
        answer = QMessageBox.question(self, "Copy into LM Studio's folder?", question,
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def _confirm_copy(self, question: str, plan) -> None:
        if self.confirm_copy(question):
            self.jobs.place_in_lmstudio(plan)

    def choose_lmstudio_folder(self) -> None:
        from engine.export import lmstudio_models_dir

        dialog = LmStudioFolderDialog(settings.lmstudio_models_dir(), str(lmstudio_models_dir()), self)
        if dialog.exec():
            settings.set_lmstudio_models_dir(dialog.chosen())

    def start(self) -> None:
        """Ctrl+Enter acts on what the current tab shows; it never starts a job the user has not looked at."""
        self.stack.setCurrentWidget(self.tabs)
        current = self.tabs.currentWidget()
        if current is self.chat:
            self.chat.send()
        elif current is self.quantize:
            self.quantize.request_start()
        elif current is self.results:
            self.jobs.evaluate(self.results.selected_paths())
        else:
            self.show_tab("quantize")
            self.quantize.start.setFocus()
            self.statusBar().showMessage("Check the ticked formats and the folder, then press Ctrl+Enter to start.",
                                         10000)

    def stop(self) -> None:
        if self.tabs.currentWidget() is self.chat and self.chat.busy:
            self.chat.stop()
        elif self.queue.busy:
            self.queue.cancel()
        elif self.chat.busy:
            self.chat.stop()

    def use_selected_formats(self) -> None:
        """The Recommendation tab's selected rows become the Quantize ticks (the Use these formats button)."""
        if self.recommendation.selected_formats():
            self.recommendation.use_btn.click()

    def new_chat(self) -> None:
        self.show_tab("chat")
        self.chat.new_chat()

    def chat_with(self, path: Path) -> None:
        self.jobs.refresh_artifacts(prefer=Path(path))
        self.show_tab("chat")

    def use_output_folder(self, folder: Path) -> None:
        """Every output of this run goes into ``folder`` (``quantdesk gui --out``)."""
        self.jobs.use_output_folder(folder)

    def update_actions(self) -> None:
        """Toolbar and menu actions are enabled only when they can act, and say what they will do."""
        current = self.tabs.currentWidget() if self.stack.currentWidget() is self.tabs else None
        has_model = bool(self.session.model_info)
        if current is self.chat:
            can, text = self.chat.can_send(), "Send"
        elif current is self.quantize:
            can, text = has_model and self.quantize.ready(), "Quantize"
        elif current is self.results:
            can, text = has_model and bool(self.results.rows), "Evaluate selected"
        else:
            can, text = has_model, "Review on the Quantize tab" if has_model else "Start"
        self.start_action.setEnabled(can)
        self.start_action.setText(text)
        self.start_action.setToolTip(f"{text} (Ctrl+Enter)")
        self.stop_action.setEnabled(self.queue.busy or self.chat.busy)
        self.stop_action.setToolTip("Stop the reply or cancel the running job (Ctrl+.)")
        self.new_chat_action.setEnabled(not self.chat.busy)
        self.use_action.setEnabled(bool(self.recommendation.options))

    def _tab_changed(self, _index: int) -> None:
        """Keyboard users land where they can act (once the page is shown: a hidden widget takes no focus)."""
        QTimer.singleShot(0, self._focus_tab)
        self.update_actions()

    def _focus_tab(self) -> None:
        current = self.tabs.currentWidget()
        if current is self.chat:
            self.chat.prompt.setFocus()
        elif current is self.results:
            self.results.table.setFocus()
        elif current is self.recommendation:
            self.recommendation.table.setFocus()
        elif current is self.quantize:
            self.quantize.start.setFocus()

    def _machine_changed(self, machine: dict) -> None:
        for pane in self.chat.panes():
            pane.set_cuda_available(bool(machine.get("gpus")))

    def show_error(self, message: str) -> None:
        if not message:
            self.banner.dismiss()
            return
        self.banner.show_error(message)
        self.statusBar().showMessage(message, 15000)

    def show_note(self, message: str) -> None:
        self.banner.show_note(message)
        self.statusBar().showMessage(message, 15000)

    def show_tab(self, name: str) -> None:
        self.stack.setCurrentWidget(self.tabs)
        index = TABS.index(name)
        if self.tabs.currentIndex() == index:
            self._tab_changed(index)
        self.tabs.setCurrentIndex(index)

    def _choices_changed(self, demo: Path | None, cached: list) -> None:
        self._choices = (demo, cached)
        self.model_panel.set_choices(demo, cached)
        self.start_panel.set_choices(pick_entries(demo, cached, with_demo=False))

    def _demo_preparing(self, preparing: bool) -> None:
        self.start_panel.set_preparing(preparing)
        self.demo_action.setEnabled(not preparing)
        if preparing:
            self.model_panel.show_preparing_demo()
        elif self.session.model_path is None:
            self.model_panel.title.setText("No model open yet.")

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if watched is self._right and event.type() == QEvent.Type.Resize and self.banner.isVisible():
            self.banner.place()
        return super().eventFilter(watched, event)

    def _model_loading(self, path: Path) -> None:
        if self.stack.currentWidget() is self.start_panel:
            self.show_tab("recommendation")
        self.model_panel.show_loading(path)
        self.results.show_rows([])
        self.chat.set_models([])
        self.recommendation.clear(f"Reading {path.name}…")
        self.statusBar().showMessage(f"Reading {path}…")

    def _model_opened(self, path: Path, info: dict) -> None:
        self.show_error("")  # an action that succeeded clears the last error
        self.model_panel.show_info(path, info)
        self.model_panel.set_choices(*self._choices)
        self.recommendation.set_max_context(info.get("context_length"))
        self.statusBar().showMessage(f"Opened {path}", 8000)
        self.jobs.refresh_artifacts()
        self.update_actions()

    def _model_failed(self, path: Path, message: str) -> None:
        self.model_panel.show_failed(path)
        self.recommendation.clear("Open a model to see which formats fit this machine.")
        if self.session.model_path is None and not self.session.model_info:
            self.stack.setCurrentWidget(self.start_panel)  # nothing open: back to Start here
        self.update_actions()

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
        model = self._initial_model or settings.last_model()  # a relaunch reopens the last model
        if model is not None:
            self.open_model(model)
        else:
            self.start_panel.focus_first()
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
