"""The one process bridge (engine.jobs): real spawned children, real signals, nothing mocked.

The targets below run in the child processes, so they live at module level.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from engine.errors import JobCancelled, QuantDeskError
from engine.jobs import (
    CancelToken,
    ChildFailed,
    Progress,
    SharedFlag,
    job_in_child,
    run_in_child,
    run_job,
)

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- child side


def _counting_job(cancel, n):
    for i in range(n):
        yield Progress(step="quantize", fraction=(i + 1) / n, message=f"pid {os.getpid()}", tensor_index=i,
                       extra={"type": "Q4_K_M"})
    return {"n": n, "pid": os.getpid()}


def _job_that_cleans_up(cancel, marker):
    """Stands for a job that must remove its partial output when cancelled."""
    try:
        yield Progress(step="convert", fraction=0.0, message=str(os.getpid()))
        while True:
            cancel.raise_if_cancelled()
            time.sleep(0.02)
    finally:
        Path(marker).write_text("cleaned up")


def _job_raises(cancel, user):
    yield Progress(step="load", fraction=0.0)
    if user:
        raise QuantDeskError("The source has no tokenizer; add tokenizer.json.")
    return {}["missing"]


def _job_with_a_worker(cancel):
    """A job child that starts a worker of its own (as the window's job process does)."""
    return (yield from run_in_child(_sleeper, cancel=cancel))


def _sleeper(reporter, ignore_term=False):
    if ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    reporter.send("pid", pid=os.getpid())
    time.sleep(120)


def _ignores_sigint(reporter):
    reporter.send("pid", pid=os.getpid())
    time.sleep(1.0)  # the test sends SIGINT meanwhile
    return "still here"


def _fails(reporter):
    raise ValueError("bad value\nsecond line")


def _user_error(reporter):
    raise QuantDeskError("The source has no tokenizer; add tokenizer.json.")


def _big_message(reporter):
    reporter.send("pid", pid=os.getpid())
    reporter.send("blob", data=b"x" * 20_000_000)  # blocks in write: the parent is not reading yet
    return "never"


def _waits_for_go(reporter, go):
    reporter.send("waiting", pid=os.getpid())
    if not go.wait(30):
        return "timed out"
    return "went"


# --------------------------------------------------------------------------- helpers


def _next_in_thread(gen, timeout):
    """``next(gen)`` on a thread, so that a hang fails the test instead of freezing it."""
    box: dict = {}

    def run():
        try:
            box["value"] = next(gen)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            box["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"the bridge still waits after {timeout} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


def _gone(pid, within):
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------- tests


def test_job_in_child_forwards_progress_as_is_and_returns_the_value():
    events: list[Progress] = []
    result = run_job(job_in_child(_counting_job, 3), events.append)
    assert result["n"] == 3 and result["pid"] != os.getpid()
    assert events == [Progress(step="quantize", fraction=(i + 1) / 3, message=f"pid {result['pid']}",
                               tensor_index=i, extra={"type": "Q4_K_M"}) for i in range(3)]


def _niceness(cancel):
    yield Progress(step="load", fraction=0.0)
    return os.nice(0)


def test_job_child_runs_niced():
    assert run_job(job_in_child(_niceness, nice=5)) == min(19, os.nice(0) + 5)


def test_a_consumer_that_goes_away_ends_the_child():
    gen = run_in_child(_waits_for_go, SharedFlag())
    kind, payload = next(gen)
    assert kind == "waiting"
    gen.close()
    assert _gone(payload["pid"], 0.5)  # ended by the time close() returned, not left waiting


@pytest.mark.parametrize("mode", ["call", "job"])
def test_other_errors_are_one_line_with_the_traceback_as_a_field(mode):
    with pytest.raises(ChildFailed) as caught:
        if mode == "call":
            run_job(run_in_child(_fails))
        else:
            run_job(job_in_child(_job_raises, False))
    err = caught.value
    assert "\n" not in str(err)
    # One sentence that says what to do and names what went wrong (engine.failures.explain).
    assert ("ValueError: bad value" if mode == "call" else "KeyError: 'missing'") in str(err)
    assert str(err).endswith("download them again.")
    assert err.traceback.startswith("Traceback") and ("_fails" if mode == "call" else "_job_raises") in err.traceback
    assert not hasattr(err, "child_traceback")
    copy = pickle.loads(pickle.dumps(err))
    assert (str(copy), copy.traceback) == (str(err), err.traceback)


@pytest.mark.parametrize("mode", ["call", "job"])
def test_user_errors_come_back_as_their_sentence(mode):
    with pytest.raises(QuantDeskError) as caught:
        if mode == "call":
            run_job(run_in_child(_user_error))
        else:
            run_job(job_in_child(_job_raises, True))
    assert type(caught.value) is QuantDeskError
    assert str(caught.value) == "The source has no tokenizer; add tokenizer.json."


def test_cancel_is_cooperative_first(tmp_path):
    marker = tmp_path / "marker"
    cancel = CancelToken()
    gen = job_in_child(_job_that_cleans_up, str(marker), cancel=cancel, grace_s=10.0)
    child = int(next(gen).message)
    cancel.cancel()
    start = time.monotonic()
    with pytest.raises(JobCancelled):
        _next_in_thread(gen, 15)
    assert time.monotonic() - start < 5.0  # well inside the grace period: it stopped by itself
    assert marker.read_text() == "cleaned up"
    assert _gone(child, 2.0)


@pytest.mark.parametrize("ignore_term", [False, True])
def test_cancel_terminates_after_the_grace_period_then_kills(ignore_term):
    cancel = CancelToken()
    gen = run_in_child(_sleeper, ignore_term, cancel=cancel, grace_s=0.5)
    child = next(gen)[1]["pid"]
    cancel.cancel()
    start = time.monotonic()
    with pytest.raises(JobCancelled):
        _next_in_thread(gen, 10)
    took = time.monotonic() - start
    # The grace period, then SIGTERM; when SIGTERM is ignored, SIGKILL a second later.
    assert (1.4 if ignore_term else 0.4) < took < (2.5 if ignore_term else 1.5)
    assert _gone(child, 0.5)  # ended before JobCancelled reached the caller


def test_child_killed_mid_message_is_one_sentence_not_a_hang():
    gen = run_in_child(_big_message, name="converter")
    child = next(gen)[1]["pid"]
    time.sleep(0.5)  # the child is now blocked writing its 20 MB message into the pipe
    assert psutil.Process(child).status() != psutil.STATUS_ZOMBIE
    os.kill(child, signal.SIGKILL)
    with pytest.raises(QuantDeskError) as caught:
        _next_in_thread(gen, 10)
    assert str(caught.value).startswith("The converter process was killed (SIGKILL) before it finished;")
    assert not isinstance(caught.value, (ChildFailed, JobCancelled))


def test_child_ignores_sigint_the_parent_owns_cancel():
    gen = run_in_child(_ignores_sigint)
    child = next(gen)[1]["pid"]
    os.kill(child, signal.SIGINT)
    assert run_job(gen) == "still here"


def test_go_flag_is_polled_across_processes():
    go = SharedFlag()
    gen = run_in_child(_waits_for_go, go)
    assert next(gen)[0] == "waiting"
    go.set()
    assert run_job(gen) == "went"


def test_killing_a_job_child_ends_its_own_workers():
    gen = job_in_child(_job_with_a_worker)
    worker = next(gen)[1]["pid"]  # the worker's "pid" message, forwarded as it is
    job_child = psutil.Process(worker).ppid()
    assert job_child != os.getpid()
    os.kill(job_child, signal.SIGKILL)
    with pytest.raises(QuantDeskError, match=r"^The job process was killed \(SIGKILL\)"):
        _next_in_thread(gen, 10)
    assert _gone(worker, 2.0)


_PARENT = textwrap.dedent("""
    import sys
    from engine.jobs import job_in_child, run_in_child
    from tests.engine.test_jobs_bridge import _job_that_cleans_up, _sleeper

    if sys.argv[1] == "call":
        gen = run_in_child(_sleeper)
        print(next(gen)[1]["pid"], flush=True)
    else:
        gen = job_in_child(_job_that_cleans_up, sys.argv[2])
        print(next(gen).message, flush=True)
    import time
    time.sleep(120)
""")


@pytest.mark.parametrize("mode", ["call", "job"])
def test_children_end_when_their_parent_is_killed(mode, tmp_path):
    marker = tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, mode, str(marker)], stdout=subprocess.PIPE,
                              text=True, env=env, cwd=ROOT)
    try:
        child = int(parent.stdout.readline())
        parent.kill()
        parent.wait(5)
        assert _gone(child, 5.0)
        if mode == "job":  # the job child cancelled itself and removed what it started
            assert marker.read_text() == "cleaned up"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_progress_steps_are_a_closed_set():
    with pytest.raises(ValueError, match="Unknown progress step 'quantising'"):
        Progress(step="quantising", fraction=0.5)  # type: ignore[arg-type]
