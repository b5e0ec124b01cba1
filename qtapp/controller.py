"""Turns the Quantize tab's choices into engine jobs on the queue, and keeps the artifact library in view."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

from qtapp import settings
from qtapp.job_work import (
    auto_quantize_job,
    evaluate_job,
    get_job,
    lmstudio_job,
    ollama_job,
    plan_get_job,
    quantize_job,
)
from qtapp.jobs import Job, JobQueue, JobSpec
from qtapp.session import Session
from qtapp.workers import Outcome, Task, in_process, run_in_background

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
    jobs_shown = Signal()  # a job was queued whose card the user should see (on the Quantize tab)
    get_planned = Signal(dict)  # the Hub plan, as ``quantdesk get --json`` prints it
    get_plan_failed = Signal(str, bool)  # the engine's sentence, and whether a token may help
    note = Signal(str)  # something that went well and is worth saying (the banner, in blue)
    command_shown = Signal(str, str, str)  # title, what it does, the command to copy
    copy_confirm = Signal(str, object)  # the question, the LM Studio plan: a large copy is asked first

    def __init__(self, session: Session, queue: JobQueue, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.queue = queue
        self.out_dir = settings.output_base()
        self.out_override: Path | None = None  # ``--out``: every output of this run goes there
        self.plan: Any = None  # the Hub plan last shown, until it is downloaded or replaced
        self._plan_task: Task | None = None
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
        if not choice.targets and choice.max_bytes is None:
            self.error.emit("Tick at least one target format, e.g. GGUF Q4_K_M.")
            return
        from engine.backends import QuantizeRequest
        from engine.errors import QuantDeskError
        from engine.formats import get_format

        targets = [] if choice.max_bytes is not None else choice.targets
        try:
            request = QuantizeRequest(
                source=session.model_path,
                targets=[get_format(t) for t in targets],
                out_dir=choice.out_dir,
                threads=choice.threads,
                device=choice.device,
                options=choice.options,
                check=choice.check,
            )
        except QuantDeskError as err:  # a mistyped advanced option: the sentence, no job
            self.error.emit(str(err))
            return
        self.out_dir = out_dir = choice.out_dir

        self.error.emit("")
        if choice.max_bytes is not None:  # "Best under … GB": as ``quantize --to auto --max-size``
            from engine.units import format_bytes

            self.queue.add(JobSpec(f"{session.model_path.name} → best under {format_bytes(choice.max_bytes)}",
                                   in_process(auto_quantize_job, request, choice.max_bytes), "quantize", out_dir,
                                   {"source": str(session.model_path)}))
            return
        names = ", ".join(get_format(t).name for t in targets)
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
            if job.spec.kind == "get":
                self.session.find_choices()
                self.session.open_model(Path(outcome.value))
                return
            if job.spec.meta.get("done_note"):
                self.note.emit(job.spec.meta["done_note"])
        if job.spec.kind in ("quantize", "evaluate"):
            self.refresh_artifacts()

    def retry(self, job: Job) -> None:
        """Run a cancelled or failed job again: a download resumes where it stopped."""
        self.error.emit("")
        self.queue.add(job.spec)
        self.jobs_shown.emit()

    # --- get a model from the Hub ---------------------------------------------------
    def plan_get(self, repo_id: str, revision: str = "", token: str = "") -> None:
        """Read the repository's file list and config.json (no weights) and plan it for this machine.

        It runs in a process of its own, as the download does, so huggingface_hub reads
        the environment (HF_ENDPOINT, HF_HOME, HF_TOKEN) as it is now. A token typed in
        is saved by huggingface_hub's own login first.
        """
        self.cancel_plan()
        self.plan = None
        repo_id = repo_id.strip()
        if not repo_id:
            self.get_plan_failed.emit("Type the model's name on the Hub, e.g. Qwen/Qwen2.5-1.5B-Instruct.", False)
            return
        work = in_process(plan_get_job, repo_id, revision.strip() or None, token.strip() or None)
        task = run_in_background(work, parent=self, name="plan a download",
                                 failed=lambda message: self._plan_failed(task, message))
        task.succeeded.connect(lambda plan: self._planned(task, plan))
        self._plan_task = self.session.track(task)

    def cancel_plan(self) -> None:
        if self._plan_task is not None and self._plan_task.running:
            self._plan_task.cancel()
        self._plan_task = None

    @property
    def planning(self) -> bool:
        return self._plan_task is not None and self._plan_task.running

    def _planned(self, task: Task, plan: Any) -> None:
        if task is not self._plan_task:
            return  # a plan the user no longer waits for
        self.plan = plan
        self.error.emit("")
        data = plan.to_dict()
        data["summary"] = plan.summary()
        self.get_planned.emit(data)

    def _plan_failed(self, task: Task, message: str) -> None:
        if task is not self._plan_task:
            return
        self.error.emit(message)
        self.get_plan_failed.emit(message, _token_may_help(message))

    def start_get(self) -> None:
        """Download the plan last shown, as a job in the queue; the model opens when it ends."""
        plan, self.plan = self.plan, None
        if plan is None:
            self.error.emit("Show the plan first: type the model's name and press Show plan.")
            return
        self.error.emit("")
        self.queue.add(JobSpec(f"Get {plan.repo_id} from Hugging Face", in_process(get_job, plan), "get",
                               None, {"repo_id": plan.repo_id}))
        self.jobs_shown.emit()

    # --- hand a GGUF on ------------------------------------------------------------
    def use_in_lmstudio(self, gguf: Path) -> None:
        """Link (or copy, asking first when it is large) the file into LM Studio's models folder."""
        folder = settings.lmstudio_models_dir() or None

        def plan(_cancel):
            from engine.export import plan_lmstudio

            return plan_lmstudio(Path(gguf), folder)

        self.session.track(run_in_background(plan, done=self._lmstudio_planned, failed=self.error.emit,
                                             parent=self))

    def _lmstudio_planned(self, plan: Any) -> None:
        from engine.units import format_bytes

        if plan.method == "present":
            self.error.emit("")
            self.note.emit(f"{plan.source.name} is already in LM Studio's models folder: {plan.target}")
        elif plan.large:
            self.copy_confirm.emit(
                f"LM Studio's models folder ({plan.target.parent.parent.parent}) is on another disk, so "
                f"{plan.source.name} cannot be linked there: it would be copied, {format_bytes(plan.size_bytes)} "
                "more on that disk. Copy it?", plan)
        else:
            self.place_in_lmstudio(plan)

    def place_in_lmstudio(self, plan: Any) -> None:
        self.error.emit("")
        note = f"{plan.source.name} is in LM Studio's models folder ({plan.target}); it shows in LM Studio's list."
        self.queue.add(JobSpec(f"{plan.source.name} → LM Studio", in_process(lmstudio_job, plan), "export",
                               plan.target.parent, {"target": "lmstudio", "done_note": note}))
        self.jobs_shown.emit()

    def add_to_ollama(self, gguf: Path) -> None:
        """``ollama create`` as a job where Ollama is installed; otherwise the command to copy."""

        def plan(_cancel):
            from engine.export import plan_ollama

            return plan_ollama(Path(gguf))

        self.session.track(run_in_background(plan, done=self._ollama_planned, failed=self.error.emit,
                                             parent=self))

    def _ollama_planned(self, plan: Any) -> None:
        self.error.emit("")
        notes = " ".join(plan.notes)
        if plan.ollama is None:
            self.command_shown.emit(
                "Add to Ollama",
                f"Ollama is not installed here (no ollama on PATH). Once it is, this command adds "
                f"{plan.gguf.name} to Ollama as {plan.name}; the Modelfile beside the file carries its chat "
                f"template, stop tokens and sampling defaults. {notes}".strip(),
                plan.command)
            return
        self.queue.add(JobSpec(f"{plan.gguf.name} → Ollama as {plan.name}", in_process(ollama_job, plan),
                               "export", None, {"target": "ollama", "done_note": f"Added to Ollama: ollama run "
                                                f"{plan.name}"}))
        self.jobs_shown.emit()

    def serve_with_llama(self, gguf: Path) -> None:
        """The ``llama-server`` command for this machine: the context and GPU layers from QuantDesk's estimate."""

        def plan(_cancel):
            from engine.export import server_command

            return server_command(Path(gguf))

        self.session.track(run_in_background(plan, done=self._serve_planned, failed=self.error.emit,
                                             parent=self))

    def _serve_planned(self, cmd: Any) -> None:
        self.error.emit("")
        text = (f"Runs {cmd.gguf.name} as a local chat server with {cmd.context:,} tokens of context "
                f"(-c {cmd.context}) and {cmd.gpu_layers} layers on the GPU (-ngl {cmd.gpu_layers}): {cmd.reason}. "
                f"Then open http://127.0.0.1:{cmd.port} in a browser. " + " ".join(cmd.notes))
        self.command_shown.emit("Serve with llama.cpp", text.strip(), cmd.command)

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


def _token_may_help(message: str) -> bool:
    """The engine's sentence asks for a login: gated, private, or a token the Hub refused."""
    text = message.lower()
    return "gated" in text or "log in" in text or "token" in text or "(403)" in text


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
