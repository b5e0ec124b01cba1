"""Kill real jobs at every phase: no hang, one sentence, nothing left behind.

Real ``python -m engine quantize`` / ``eval`` processes on the tiny test model,
real signals. A worker (converter, quantizer, bitsandbytes worker, evaluation)
killed with SIGKILL must end the job in one sentence, non-zero, leaving the
output folder as it was; the parent killed with SIGKILL must take its workers
with it; SIGINT, SIGTERM and SIGHUP must end the job with exit 130 within
seconds, leaving nothing.

To hit a phase that lasts a fraction of a second on the tiny model, a worker
is run in slow motion (SIGSTOP / SIGCONT in short slices) until it is in that
phase, and hit while it is stopped there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow

USER_FILE = "mine.txt"


class Run:
    """A real ``python -m engine`` process, its output read on threads as it comes."""

    def __init__(self, *args: object) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "engine", *map(str, args)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.parent = psutil.Process(self.proc.pid)
        self.out: list[str] = []
        self.err: list[str] = []
        self.seen: set[int] = set()  # every worker pid ever seen
        for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=lambda s=stream, dest=lines: dest.extend(s), daemon=True).start()

    def workers(self) -> list[psutil.Process]:
        """The job's worker processes, oldest first (multiprocessing's resource tracker is not one)."""
        found = []
        try:
            children = self.parent.children()
        except psutil.NoSuchProcess:
            return []
        for child in children:
            try:
                if "resource_tracker" not in " ".join(child.cmdline()):
                    found.append(child)
            except psutil.NoSuchProcess:
                continue
        self.seen.update(p.pid for p in found)
        return sorted(found, key=lambda p: p.create_time())

    def until(self, predicate: Callable[[], object], what: str, timeout: float = 180.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = predicate()
            if value:
                return value
            if self.proc.poll() is not None:
                pytest.fail(f"the job ended (exit {self.proc.returncode}) before {what}: {''.join(self.err)[-2000:]}")
            time.sleep(0.02)
        pytest.fail(f"no {what} after {timeout} s: {''.join(self.err)[-2000:]}")

    def said(self, text: str) -> None:
        self.until(lambda: any(text in line for line in self.out), repr(text))

    def worker(self, index: int) -> psutil.Process:
        return self.until(lambda: len(w := self.workers()) > index and w[index], f"worker {index}")

    def ended(self, within: float) -> int:
        """The exit status, which must come within ``within`` seconds."""
        try:
            code = self.proc.wait(within)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {within} s later: {''.join(self.err)[-2000:]}")
        time.sleep(0.2)  # let the reader threads take the last lines
        return code

    def stop(self) -> None:
        """After the test: nothing of it may keep running, whatever happened."""
        for pid in [self.proc.pid, *self.seen]:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
        self.proc.wait(10)


@pytest.fixture
def runs():
    started: list[Run] = []

    def start(*args: object) -> Run:
        started.append(Run(*args))
        return started[-1]

    yield start
    for run in started:
        run.stop()


def slow_motion(proc: psutil.Process, predicate: Callable[[], bool], what: str, timeout: float = 180.0,
                slice_s: float = 0.02) -> None:
    """Run ``proc`` in short slices until ``predicate()`` holds, and leave it stopped right there."""
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            proc.suspend()
            if predicate():
                return
            proc.resume()
            time.sleep(slice_s)
    except psutil.NoSuchProcess:
        pytest.fail(f"the worker ended before {what}")
    pytest.fail(f"no {what} after {timeout} s")


def writing(proc: psutil.Process, folder: Path, part_of: str) -> Callable[[], bool]:
    """True while ``proc`` has a file of ``folder`` open whose name starts with ``part_of`` (a .part)."""
    def check() -> bool:
        try:
            return any(Path(f.path).parent == folder and Path(f.path).name.startswith(part_of)
                       and "part" in Path(f.path).name for f in proc.open_files())
        except psutil.NoSuchProcess:
            return False
    return check


def all_gone(pids: set[int], within: float) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive:
            return True
        time.sleep(0.05)
    return False


def one_sentence(run: Run) -> str:
    """The job's one error line on stderr (no traceback anywhere); returns the sentence."""
    err = "".join(run.err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("quantdesk: error: ")]
    assert len(lines) == 1, err
    return lines[0].removeprefix("quantdesk: error: ")


def last_event(run: Run) -> dict:
    return json.loads(run.out[-1])


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """The output folder, holding a file of the user's that must survive everything."""
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / USER_FILE).write_text("the user's own file")
    return folder


def as_it_was(folder: Path) -> bool:
    return sorted(os.listdir(folder)) == [USER_FILE] and (folder / USER_FILE).read_text() == "the user's own file"


@pytest.fixture
def eval_model(tiny_nochat_gguf: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny GGUF: evaluation writes a sidecar beside the model."""
    folder = tmp_path / "model"
    folder.mkdir()
    return Path(shutil.copy2(tiny_nochat_gguf, folder / tiny_nochat_gguf.name))


def gguf_job(runs, tiny_dir: Path, out: Path) -> Run:
    return runs("quantize", tiny_dir, "--to", "Q4_K_M", "--out", out, "--json", "--threads", "1")


def bnb_job(runs, tiny_dir: Path, out: Path) -> Run:
    return runs("quantize", tiny_dir, "--to", "bnb-nf4", "--out", out, "--json", "--device", "cpu")


def eval_job(runs, model: Path) -> Run:
    return runs("eval", model, "--no-speed", "--threads", "1")


def reach(run: Run, phase: str, out: Path) -> psutil.Process:
    """Bring a job to ``phase``; returns the worker to hit (left stopped where a phase is short)."""
    if phase == "converter loading":
        converter = run.worker(0)
        time.sleep(0.5)  # importing torch and the converter takes seconds
        return converter
    if phase == "converter writing":
        converter = run.worker(0)
        run.said("Reading tensors")  # the file is opened soon after this
        slow_motion(converter, writing(converter, out, "tiny-BF16"), "BF16 file being written")
        return converter
    if phase == "quantizer waiting":
        quantizer = run.worker(1)  # started during the conversion, then waiting for its input
        reach(run, "converter writing", out).resume()
        return quantizer
    if phase == "quantizer writing":
        quantizer = run.worker(1)
        run.said('"step": "quantize"')
        slow_motion(quantizer, writing(quantizer, out, "tiny-Q4_K_M"), "Q4_K_M file being written")
        return quantizer
    if phase == "bitsandbytes loading":
        worker = run.worker(0)
        time.sleep(0.5)
        return worker
    if phase == "bitsandbytes saving":
        worker = run.worker(0)
        run.said('"step": "saving"')
        slow_motion(worker, lambda: any("bnb-nf4" in name for name in os.listdir(out)), "a .part folder")
        return worker
    if phase == "evaluation":
        worker = run.worker(0)
        run.until(lambda: any("chunk 1 of" in line for line in run.err), "first perplexity chunk")
        return worker
    raise AssertionError(phase)


GGUF_PHASES = ["converter loading", "converter writing", "quantizer waiting", "quantizer writing"]


@pytest.mark.parametrize("phase", GGUF_PHASES)
def test_gguf_worker_killed(phase, runs, tiny_dir, out):
    run = gguf_job(runs, tiny_dir, out)
    worker = reach(run, phase, out)
    worker.kill()
    start = time.monotonic()
    # A dead quantizer is noticed when its turn comes, once the conversion is done.
    assert run.ended(60 if phase == "quantizer waiting" else 10) == 2
    name = "quantizer" if phase.startswith("quantizer") else "converter"
    sentence = one_sentence(run)
    assert sentence.startswith(f"The {name} process was killed (SIGKILL) before it finished;"), sentence
    assert last_event(run) == {"event": "error", "message": sentence}
    assert as_it_was(out)
    assert all_gone(run.seen, 3.0)
    assert time.monotonic() - start < 60


def test_bitsandbytes_worker_killed_while_saving(runs, tiny_dir, out):
    run = bnb_job(runs, tiny_dir, out)
    reach(run, "bitsandbytes saving", out).kill()
    assert run.ended(10) == 2
    assert one_sentence(run).startswith("The bitsandbytes worker process was killed (SIGKILL) before it finished;")
    assert as_it_was(out)


def test_evaluation_killed(runs, eval_model):
    run = eval_job(runs, eval_model)
    reach(run, "evaluation", eval_model.parent).kill()
    assert run.ended(10) == 2
    assert one_sentence(run).startswith("The evaluation process was killed (SIGKILL) before it finished;")
    assert os.listdir(eval_model.parent) == [eval_model.name]  # no sidecar, no temporary file


@pytest.mark.parametrize("kind", ["gguf", "bitsandbytes", "evaluation"])
def test_workers_end_with_their_parent(kind, runs, tiny_dir, out, eval_model):
    if kind == "gguf":
        run = gguf_job(runs, tiny_dir, out)
        run.worker(1)  # converter and quantizer both running
    elif kind == "bitsandbytes":
        run = bnb_job(runs, tiny_dir, out)
        reach(run, "bitsandbytes loading", out)
    else:
        run = eval_job(runs, eval_model)
        reach(run, "evaluation", eval_model.parent)
    run.workers()
    run.parent.kill()
    run.ended(5)
    # Plain workers go at once; the evaluation child first stops what it was doing.
    assert all_gone(run.seen, 5.0), run.seen


@pytest.mark.parametrize(("phase", "sig"), [
    ("converter loading", "SIGINT"),
    ("converter writing", "SIGHUP"),
    ("quantizer writing", "SIGTERM"),
    ("bitsandbytes loading", "SIGTERM"),
    ("evaluation", "SIGINT"),
    ("evaluation", "SIGHUP"),
])
def test_signals_cancel_within_seconds(phase, sig, runs, tiny_dir, out, eval_model):
    """Each signal at two phases at least: the first one cancels, the job ends by itself, exit 130."""
    if phase.startswith("evaluation"):
        run, folder = eval_job(runs, eval_model), eval_model.parent
    elif phase.startswith("bitsandbytes"):
        run, folder = bnb_job(runs, tiny_dir, out), out
    else:
        run, folder = gguf_job(runs, tiny_dir, out), out
    worker = reach(run, phase, folder)
    run.workers()
    run.parent.send_signal(getattr(signal, sig))
    worker.resume()  # let it run on: the parent's cancel must end it
    assert run.ended(8) == 130
    assert one_sentence(run).startswith("Cancelled")
    if folder is out:
        assert last_event(run)["cancelled"] is True
        assert as_it_was(out)
    else:
        assert os.listdir(folder) == [eval_model.name]
    assert all_gone(run.seen, 3.0)
