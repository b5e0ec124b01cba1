"""The window's state — machine, open model, recommendation, artifacts — fed by engine calls on the bridge.

Views never call the engine themselves: they ask the session, and the session
answers with signals carrying what the engine computed (as the same dicts the
CLI's ``--json`` prints).
"""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from qtapp import settings
from qtapp.workers import Task, run_in_background, wait_until


def as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return asdict(obj) if is_dataclass(obj) else {}


NO_MACHINE = "No recommendation: QuantDesk could not read this machine (see the message above)."
NO_RECOMMENDATION = "No recommendation for this model (see the message above)."


class Session(QObject):
    machine_changed = Signal(dict)
    model_loading = Signal(Path)
    model_opened = Signal(Path, dict)
    model_failed = Signal(Path, str)
    recommendation_changed = Signal(dict)
    recommendation_failed = Signal(str)  # why there is none (the banner has the engine's sentence)
    choices_changed = Signal(object, list)  # demo path or None, [(name, path)] from the HF cache
    demo_preparing = Signal(bool)  # the demo model is being built (the first time, about a minute)
    demo_progress = Signal(object)  # the engine's Progress while it is
    error = Signal(str)

    MACHINE_REFRESH_MS = 3000

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.machine: dict[str, Any] = {}
        self._machine_obj: Any = None  # engine MachineInfo, handed back to the engine
        self._info_obj: Any = None  # engine ModelInfo
        self.model_path: Path | None = None
        self.model_info: dict[str, Any] = {}
        self.recommendation: dict[str, Any] = {}
        self.context = 4096
        self.demo_busy = False
        self._before: tuple[Any, ...] | None = None  # the model open before the one being read
        self._pending: set[Task] = set()
        self._machine_task: Task | None = None
        self._machine_error = ""  # the last detection failure, reported once
        self._timer = QTimer(self, interval=self.MACHINE_REFRESH_MS)
        self._timer.timeout.connect(self.refresh_machine)

    # --- busy tracking (screenshots wait for it) ---------------------------
    @property
    def busy(self) -> bool:
        return bool(self._pending)

    def track(self, task: Task) -> Task:
        self._pending.add(task)
        task.ended.connect(lambda _o, t=task: self._pending.discard(t))  # returns None
        return task

    # --- machine ----------------------------------------------------------
    def start(self) -> None:
        """Begin the live machine refresh and look for one-click models; called after first paint."""
        self.refresh_machine()
        self._timer.start()
        self.find_choices()

    def find_choices(self) -> None:
        """Look again for one-click models: the demo, the Hugging Face cache (a download adds one)."""
        self.track(run_in_background(_find_choices, done=lambda c: self.choices_changed.emit(*c), parent=self))

    def stop(self) -> None:
        """End the live refresh and let running look-ups finish, so none outlives the window."""
        self._timer.stop()
        machine = self._machine_task
        wait_until(lambda: not self.busy and not (machine is not None and machine.running), 3000)

    def refresh_machine(self) -> None:
        if self._machine_task is not None and self._machine_task.running:
            return
        self._machine_task = run_in_background(_detect_machine, done=self._machine_ready,
                                               failed=self._machine_failed, parent=self)
        if not self.machine:
            self.track(self._machine_task)

    def _machine_ready(self, machine: Any) -> None:
        first = self._machine_obj is None
        self._machine_error = ""
        self._machine_obj = machine
        self.machine = as_dict(machine)
        self.machine_changed.emit(self.machine)
        if first and self._info_obj is not None:
            self.recommend()

    def _machine_failed(self, message: str) -> None:
        """Say it once (the refresh would repeat it every few seconds); a waiting recommendation gives up."""
        if message == self._machine_error:
            return
        self._machine_error = message
        self.error.emit(message)
        if self._machine_obj is None:
            self.recommend()

    # --- model ------------------------------------------------------------
    def open_model(self, path: Path) -> None:
        path = Path(path).expanduser()
        if self.model_path is not None and self._info_obj is not None:
            self._before = (self.model_path, self.model_info, self._info_obj, self.recommendation)
        self.model_path = path
        self.model_info = {}
        self._info_obj = None
        self.recommendation = {}
        self.model_loading.emit(path)
        self.track(run_in_background(
            lambda _c: _inspect(path),
            done=lambda info, p=path: self._opened(p, info),
            failed=lambda msg, p=path: self._failed(p, msg),
            parent=self,
        ))

    def open_demo(self) -> None:
        """Prepare the demo model (reporting progress the first time), then open it."""
        if self.demo_busy:
            return

        def work(cancel):
            from engine.demo_progress import prepare_demo

            return prepare_demo(cancel)

        def ended(_outcome) -> None:
            self.demo_busy = False
            self.demo_preparing.emit(False)

        self.demo_busy = True
        self.demo_preparing.emit(True)
        task = run_in_background(work, done=self.open_model, failed=self.error.emit,
                                 progress=self.demo_progress.emit, parent=self)
        task.ended.connect(ended)
        self.track(task)

    def _opened(self, path: Path, info: Any) -> None:
        if path != self.model_path:
            return
        self._info_obj = info
        self._before = None
        self.model_info = as_dict(info)
        settings.remember_model(path)
        self.model_opened.emit(path, self.model_info)
        self.recommend()

    def _failed(self, path: Path, message: str) -> None:
        """The new model could not be read: say why, and keep the one that was open before."""
        if path != self.model_path:
            return
        self.model_path = None
        before, self._before = self._before, None
        if before is not None:
            self.model_path, self.model_info, self._info_obj, self.recommendation = before
        self.model_failed.emit(path, message)
        if before is not None:
            self.model_opened.emit(self.model_path, self.model_info)
            if self.recommendation:
                self.recommendation_changed.emit(self.recommendation)
        self.error.emit(message)

    # --- recommendation ---------------------------------------------------
    def set_context(self, n: int) -> None:
        self.context = int(n)
        self.recommend()

    def recommend(self) -> None:
        if self.model_path is None or self._info_obj is None:
            return  # runs again when the model has arrived
        if self._machine_obj is None:
            if self._machine_error:  # it will not come by itself: say why again, beside the model
                self.error.emit(self._machine_error)
                self.recommendation_failed.emit(NO_MACHINE)
            return  # runs again when the machine has arrived
        path, ctx, info, machine = self.model_path, self.context, self._info_obj, self._machine_obj
        self.track(run_in_background(
            lambda _c: _recommend(info, machine, ctx),
            done=lambda rec, p=path: self._recommended(p, rec),
            failed=lambda msg, p=path: self._not_recommended(p, msg),
            parent=self,
        ))

    def _not_recommended(self, path: Path, message: str) -> None:
        if path != self.model_path:
            return
        self.error.emit(message)
        self.recommendation_failed.emit(NO_RECOMMENDATION)

    def _recommended(self, path: Path, rec: dict[str, Any]) -> None:
        if path != self.model_path:
            return
        self.recommendation = rec
        self.recommendation_changed.emit(rec)


# --- engine calls (run on worker threads) -----------------------------------

def _detect_machine(_cancel) -> Any:
    from engine.hardware import detect_machine

    return detect_machine(settings.output_folder())


def _inspect(path: Path):
    from engine.inspect import inspect_model

    return inspect_model(path)


def _recommend(info: Any, machine: Any, context: int) -> dict[str, Any]:
    from engine.recommend import recommend, situation_text

    rec = recommend(info, machine, context)
    data = rec.to_dict()
    data["summary"] = situation_text(rec.situation, info, machine)
    return data


def _find_choices(_cancel) -> tuple[Path | None, list[tuple[str, Path]]]:
    from engine.demo import demo_model_dir
    from engine.inspect import cached_models

    return demo_model_dir(), cached_models()
