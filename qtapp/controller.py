"""Turns the Quantize tab's choices into engine jobs on the queue, and keeps the artifact library in view."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject

from qtapp import settings
from qtapp.job_work import evaluate_job, quantize_job
from qtapp.views.jobs import JobSpec
from qtapp.workers import Outcome, in_process, run_in_background

if TYPE_CHECKING:
    from qtapp.main_window import MainWindow


class JobController(QObject):
    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.w = window
        queue = window.quantize.queue
        queue.job_finished.connect(self._job_finished)

    def check_targets(self) -> None:
        """Grey out targets whose backend is missing here, with the engine's install hint."""
        ids = list(self.w.quantize.boxes)
        self.w.session.track(run_in_background(lambda _c: _target_hints(ids),
                                               done=self.w.quantize.set_unavailable, parent=self))

    @property
    def out_dir(self) -> Path:
        return Path(self.w.quantize.out_dir.text().strip() or settings.output_folder()).expanduser()

    # --- quantize -------------------------------------------------------------
    def start_quantize(self) -> None:
        session, view = self.w.session, self.w.quantize
        if session.model_path is None or not session.model_info:
            self.w.show_error("Open a model first: a Hugging Face folder, a config.json or a GGUF file.")
            return
        targets = view.targets()
        if not targets:
            self.w.show_error("Tick at least one target format, e.g. GGUF Q4_K_M.")
            return
        from engine.backends import QuantizeRequest
        from engine.formats import get_format

        out_dir = self.out_dir
        settings.set_output_folder(str(out_dir))
        request = QuantizeRequest(
            source=session.model_path,
            targets=[get_format(t) for t in targets],
            out_dir=out_dir,
            threads=view.threads.value() or None,
            device=view.device.currentText(),
            options=view.options(),
        )

        names = ", ".join(get_format(t).name for t in targets)
        self.w.banner.dismiss()
        view.queue.add(JobSpec(f"{session.model_path.name} → {names}", in_process(quantize_job, request),
                               "quantize", out_dir,
                               {"source": str(session.model_path)}))

    # --- evaluate ---------------------------------------------------------------
    def evaluate(self, paths: list[Path]) -> None:
        session = self.w.session
        if not paths:
            self.w.show_error("Select an artifact to evaluate first.")
            return
        base = session.model_path

        title = "Evaluate " + ", ".join(Path(p).name for p in paths)
        work = in_process(evaluate_job, [Path(p) for p in paths], base)
        self.w.quantize.queue.add(JobSpec(title, work, "evaluate", None, {"paths": [str(p) for p in paths]}))
        self.w.tabs.setCurrentWidget(self.w.quantize)

    def _job_finished(self, spec: JobSpec, outcome: Outcome) -> None:
        if outcome.status == "error":
            self.w.show_error(outcome.message)
        self.refresh_artifacts()

    # --- the library ------------------------------------------------------------
    def refresh_artifacts(self, prefer: Path | None = None) -> None:
        source = self.w.session.model_path
        if source is None:
            return
        out_dir = self.out_dir
        self.w.session.track(run_in_background(
            lambda _c: _library(source, out_dir),
            done=lambda rows, p=prefer: self._show_library(source, rows, p),
            failed=self.w.show_error, parent=self))

    def _show_library(self, source: Path, rows: list[dict[str, Any]], prefer: Path | None) -> None:
        if source != self.w.session.model_path:
            return
        self.w.results.show_rows(rows)
        choices = [(f"{r['name']} ({'original' if r.get('original') else _label(r)})", Path(r["path"]))
                   for r in rows]
        self.w.chat.set_models(choices, prefer)


def _label(row: dict[str, Any]) -> str:
    from engine.formats import FORMATS

    fmt = FORMATS.get(row.get("format", ""))
    return fmt.label if fmt else (row.get("format") or "original")


def _library(source: Path, out_dir: Path) -> list[dict[str, Any]]:
    """The original and every artifact made from it, as the engine's comparison rows."""
    from engine.artifacts import artifacts_of, describe
    from engine.evaluate.compare import compare_rows

    original = describe(source)
    artifacts = ([original] if original is not None else []) + artifacts_of(source, out_dir)
    rows = [row.to_dict() for row in compare_rows(artifacts)]
    if rows and original is not None:
        rows[0]["original"] = True
    return rows


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
