"""Turns the Quantize tab's choices into engine jobs on the queue, and keeps the artifact library in view."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

from qtapp import settings
from qtapp.job_work import evaluate_job, quantize_job
from qtapp.jobs import Job, JobQueue, JobSpec
from qtapp.session import Session
from qtapp.workers import Outcome, in_process, run_in_background

if TYPE_CHECKING:
    from qtapp.views.quantize import QuantizeChoice


class JobController(QObject):
    """Turns the user's quantize and evaluate requests into queued jobs; says what to show through signals."""

    error = Signal(str)  # a sentence for the banner; "" clears it
    evaluations_shown = Signal()  # an evaluation was queued: show its progress (on the Results tab)
    out_dir_suggested = Signal(Path)  # the open model's output folder
    unavailable_changed = Signal(dict)  # format id -> how to install its backend
    library_changed = Signal(list)  # the engine's comparison rows, original first
    models_changed = Signal(list, object)  # [(label, path)] for the chat panes, the one to prefer

    def __init__(self, session: Session, queue: JobQueue, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.queue = queue
        self.out_dir = settings.output_base()
        self.out_override: Path | None = None  # ``--out``: every output of this run goes there
        queue.finished.connect(self._job_finished)
        session.model_opened.connect(self._model_opened)

    def check_targets(self, format_ids: list[str]) -> None:
        """Grey out targets whose backend is missing here, with the engine's install hint."""
        ids = list(format_ids)
        self.session.track(run_in_background(lambda _c: _target_hints(ids),
                                             done=self.unavailable_changed.emit, parent=self))

    def set_out_dir(self, folder: Path) -> None:
        self.out_dir = Path(folder)

    def use_output_folder(self, folder: Path) -> None:
        """Write every output of this run into ``folder``, whichever model is open."""
        self.out_override = Path(folder).expanduser().resolve()
        settings.add_written_folder(self.out_override)
        self.out_dir_suggested.emit(self.out_override)

    def _model_opened(self, path: Path, _info: dict) -> None:
        """Each model has its own output folder, so two models never share a model card or Modelfile."""
        from engine.inspect import model_name

        folder = self.out_override or settings.model_output_folder(path, model_name(path))
        self.out_dir = folder
        self.out_dir_suggested.emit(folder)

    # --- quantize -------------------------------------------------------------
    def start_quantize(self, choice: QuantizeChoice) -> None:
        session = self.session
        if session.model_path is None or not session.model_info:
            self.error.emit("Open a model first: a Hugging Face folder, a config.json or a GGUF file.")
            return
        if not choice.targets:
            self.error.emit("Tick at least one target format, e.g. GGUF Q4_K_M.")
            return
        from engine.backends import QuantizeRequest
        from engine.formats import get_format

        self.out_dir = out_dir = choice.out_dir
        request = QuantizeRequest(
            source=session.model_path,
            targets=[get_format(t) for t in choice.targets],
            out_dir=out_dir,
            threads=choice.threads,
            device=choice.device,
            options=choice.options,
        )

        names = ", ".join(get_format(t).name for t in choice.targets)
        self.error.emit("")
        self.queue.add(JobSpec(f"{session.model_path.name} → {names}", in_process(quantize_job, request),
                               "quantize", out_dir, {"source": str(session.model_path)}))

    # --- evaluate ---------------------------------------------------------------
    def evaluate(self, paths: list[Path]) -> None:
        if not paths:
            self.error.emit("Select an artifact to evaluate first.")
            return
        title = "Evaluate " + ", ".join(Path(p).name for p in paths)
        work = in_process(evaluate_job, [Path(p) for p in paths], self.session.model_path)
        self.error.emit("")
        self.queue.add(JobSpec(title, work, "evaluate", None, {"paths": [str(p) for p in paths]}))
        self.evaluations_shown.emit()

    def _job_finished(self, job: Job, outcome: Outcome) -> None:
        if outcome.status == "error":
            self.error.emit(outcome.message)
        elif outcome.status == "ok":
            self.error.emit("")
            source = job.spec.meta.get("source")
            if job.spec.kind == "quantize" and source and job.spec.out_dir is not None:
                settings.remember_output(Path(source), job.spec.out_dir)
        self.refresh_artifacts()

    # --- the library ------------------------------------------------------------
    def refresh_artifacts(self, prefer: Path | None = None) -> None:
        source = self.session.model_path
        if source is None:
            return
        folders = list(dict.fromkeys([self.out_dir, *map(Path, settings.written_folders())]))
        self.session.track(run_in_background(
            lambda _c: _library(source, folders),
            done=lambda rows, p=prefer: self._show_library(source, rows, p),
            failed=self.error.emit, parent=self))

    def _show_library(self, source: Path, rows: list[dict[str, Any]], prefer: Path | None) -> None:
        if source != self.session.model_path:
            return
        self.library_changed.emit(rows)
        choices = [(f"{r['name']} ({'original' if r.get('original') else _label(r)})", Path(r["path"]))
                   for r in rows]
        self.models_changed.emit(choices, prefer)


def _label(row: dict[str, Any]) -> str:
    from engine.formats import FORMATS

    fmt = FORMATS.get(row.get("format", ""))
    return fmt.label if fmt else (row.get("format") or "original")


def _library(source: Path, folders: list[Path]) -> list[dict[str, Any]]:
    """The original and every artifact made from it, in any folder QuantDesk wrote into, as comparison rows."""
    from engine.artifacts import artifacts_of, describe
    from engine.evaluate.compare import compare_rows

    original = describe(source)
    made: dict[str, Any] = {}
    for folder in folders:
        for artifact in artifacts_of(source, folder):
            made.setdefault(str(Path(artifact.path).resolve()), artifact)
    artifacts = ([original] if original is not None else []) + sorted(made.values(), key=_made_order)
    rows = [row.to_dict() for row in compare_rows(artifacts)]
    if rows and original is not None:
        rows[0]["original"] = True
    return rows


def _made_order(artifact: Any) -> tuple[str, str]:
    """Oldest first, so the newest output is last (the chat picks it)."""
    return (getattr(artifact, "created_at", "") or "", artifact.path.name)


def _target_hints(format_ids: list[str]) -> dict[str, str]:
    from engine.backends import backend_for
    from engine.errors import QuantDeskError
    from engine.formats import FORMATS

    hints: dict[str, str] = {}
    for fid in format_ids:
        try:
            hint = backend_for(FORMATS[fid]).install_hint()
        except QuantDeskError as err:
            hint = str(err)
        if hint:
            hints[fid] = hint
    return hints
