"""Jobs: long tasks that report Progress events and honour a CancelToken.

A job is a generator: it yields ``Progress`` and returns its result. The
engine knows nothing about who listens; the CLI prints a bar, the GUI
subscribes, tests assert on the events.

Work that leaves the process goes through one bridge (``run_in_child`` for a
target with a reporter, ``job_in_child`` for a whole job generator): the C
quantizer has no cancel hook, a crash must not take the caller down, and
Python-heavy work must not hold the caller's GIL. Its rules are written above
``run_in_child``.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, NoReturn, TypeVar, get_args

from engine.errors import JobCancelled, QuantDeskError

R = TypeVar("R")
T = TypeVar("T")


# Every step a Progress event may name: a closed set, listed in README's --json contract.
Step = Literal[
    "warning", "load", "done",  # any job
    "convert", "quantize", "verify", "finish",  # GGUF
    "loading", "quantizing", "saving", "verifying", "finishing",  # bitsandbytes, GPTQ, AWQ, FP8
    "calibrating",  # GPTQ/AWQ: preparing the calibration samples and running them through the model
    "imatrix",  # GGUF: computing or reading the importance matrix
    "original", "perplexity", "speed",  # evaluation
    "check", "answers",  # the quick check after a quantize job
    "download", "export",  # quantdesk get, quantdesk export
    "demo",  # preparing the demo model
]
STEPS: frozenset[str] = frozenset(get_args(Step))


@dataclass
class Progress:
    """One progress event. ``fraction`` is the whole job's progress, 0..1."""

    step: Step
    fraction: float
    message: str = ""
    tensor_index: int | None = None
    tensor_count: int | None = None
    tensor_name: str | None = None
    bytes_done: int | None = None
    eta_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.step not in STEPS:
            raise ValueError(f"Unknown progress step {self.step!r}; add it to engine.jobs.Step and to "
                             "README's --json contract.")

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if v is not None and v != {}}
        return data


class CancelToken:
    """Thread-safe cancel flag shared between a job and whoever may stop it."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise JobCancelled()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


JobGen = Generator[Progress, None, R]


def run_job(
    gen: Generator[Progress, None, R],
    on_progress: Callable[[Progress], None] | None = None,
) -> R:
    """Drive a job generator to completion, handing each event to ``on_progress``.

    Whatever stops it early (``on_progress`` raising, a second Ctrl-C) closes
    the job at once, so its clean-up runs now rather than whenever it is freed.
    """
    try:
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            if on_progress is not None:
                on_progress(event)
    finally:
        gen.close()


def relay(
    source: Generator[T, Any, R] | Iterator[T],
    transform: Callable[[T], Progress | None] | None = None,
) -> Generator[Progress, None, R]:
    """``yield from source``, passing each item through ``transform`` (None drops it).

    Returns what ``source`` returned. Whatever ends the relay early (a cancel,
    an error, the consumer closing it) closes ``source`` too, so a child
    process behind it never outlives its reader.
    """
    try:
        while True:
            try:
                item = next(source)
            except StopIteration as stop:
                return stop.value
            event = item if transform is None else transform(item)
            if event is not None:
                yield event  # type: ignore[misc]
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


class EtaClock:
    """Estimates time left from the fraction done so far."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def eta(self, fraction: float) -> float | None:
        elapsed = time.monotonic() - self.start
        if fraction <= 0.01 or elapsed < 0.5:
            return None
        return max(0.0, elapsed * (1.0 - fraction) / fraction)


# --- the process bridge: the one way out of the process ------------------------
#
# Every piece of work that leaves the current process goes through here, in one
# of two shapes: a target taking a ChildReporter (``run_in_child``), or a whole
# job generator (``job_in_child``). Either way:
#   cancel:  the child's cancel flag is set (a shared byte, not an Event), the
#            child gets ``grace_s`` to stop by itself, then SIGTERM, then SIGKILL;
#   errors:  a QuantDeskError comes back as its sentence; anything else as
#            ChildFailed: one line, with the child's traceback as a field;
#   death:   every child ends when its parent dies (PR_SET_PDEATHSIG on Linux and
#            a watcher thread) and ignores SIGINT/SIGHUP: the parent owns cancel;
#   no wait on a dead process: messages travel over a one-way pipe whose write
#            end only the child holds, so end-of-file means the child is gone.

_CTX = mp.get_context("spawn")
_POLL_S = 0.05
_WATCH_S = 0.1
_KILL_WAIT_S = 1.0  # after SIGTERM, before SIGKILL
_HARD_EXIT_S = 3.0  # a job child's time to clean up once told to stop by a signal or its parent's death


class ChildFailed(QuantDeskError):
    """A child process failed with something other than a QuantDeskError.

    ``str(err)`` is the one line for the user; ``traceback`` is the child's own
    traceback, for a details pane or a bug report.
    """

    def __init__(self, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (str(self), self.traceback)


def one_line(err: BaseException) -> str:
    """The sentence for ``err``: a QuantDeskError's own, else its type and first line."""
    if isinstance(err, QuantDeskError):
        return str(err)
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else 'unexpected error'}"


class SharedFlag:
    """A yes/no shared with a child process through shared memory, without a lock.

    An Event's condition variable can leave one side waiting forever when the
    other dies holding its lock; a byte that is only ever set and polled cannot.
    Hand it to a child as an argument of ``run_in_child`` / ``job_in_child``.
    """

    def __init__(self) -> None:
        self._value = _CTX.RawValue("b", 0)

    def set(self) -> None:
        self._value.value = 1

    def is_set(self) -> bool:
        return bool(self._value.value)

    def wait(self, timeout: float) -> bool:
        """Poll until set or ``timeout`` seconds have passed; True when set."""
        end = time.monotonic() + timeout
        while not self.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(_POLL_S, left))
        return True


class ChildReporter:
    """Handed to a ``run_in_child`` target: sends messages to the parent, sees its cancel."""

    def __init__(self, conn: Any, flag: SharedFlag) -> None:
        self._conn = conn
        self._flag = flag
        self._lock = threading.Lock()  # native callbacks may report from threads of their own

    def send(self, kind: str, **payload: Any) -> None:
        with self._lock:
            self._conn.send(("message", kind, payload))

    @property
    def cancelled(self) -> bool:
        """The parent asked this child to stop (it ends the child itself after a grace period)."""
        return self._flag.is_set()

    def finish(self, value: Any) -> NoReturn:
        """Hand ``value`` to the parent as the result and end this process at once.

        Skips the interpreter's teardown, which takes seconds once torch is
        loaded; only for workers whose files are already closed.
        """
        with self._lock:
            _send_and_exit(self._conn, ("result", value), 0)


def run_in_child(
    target: Callable[..., Any],
    *args: Any,
    cancel: CancelToken | None = None,
    name: str = "worker",
    grace_s: float = 0.5,
) -> Generator[tuple[str, dict[str, Any]], None, Any]:
    """Run ``target(reporter, *args)`` in a spawned child process.

    Yields the ``(kind, payload)`` messages the child sends with
    ``reporter.send``; returns the target's return value. ``name`` says which
    process it is in the sentence a user sees when it dies.
    """
    return (yield from _bridge("call", target, args, cancel, name, grace_s, 0))


def job_in_child(
    job: Callable[..., Generator[Any, None, R]],
    *args: Any,
    cancel: CancelToken | None = None,
    name: str = "job",
    grace_s: float = 10.0,
    nice: int = 0,
) -> Generator[Any, None, R]:
    """Run the job generator ``job(cancel, *args)`` in a spawned child process.

    What the job yields (Progress events) comes through as it is, and what it
    returns is returned. On cancel the child's token is set and the job gets
    ``grace_s`` seconds to remove what it started. ``nice`` lowers the
    child's priority (and its own children's). ``job`` and ``args`` must pickle.
    """
    return (yield from _bridge("job", job, args, cancel, name, grace_s, nice))


def _bridge(mode: str, target: Callable[..., Any], args: tuple, cancel: CancelToken | None, name: str,
            grace_s: float, nice: int) -> Generator[Any, None, Any]:
    reader, writer = _CTX.Pipe(duplex=False)
    flag = SharedFlag()
    proc = _CTX.Process(target=_child_main, args=(writer, flag, os.getpid(), mode, nice, target, args),
                        name=f"quantdesk-{name}", daemon=True)
    asked: float | None = None

    def stopping() -> bool:
        return asked is not None or (cancel is not None and cancel.cancelled)

    try:
        proc.start()
        writer.close()  # the child holds the only write end now: end of file means it is gone
        while True:
            if asked is None and cancel is not None and cancel.cancelled:
                flag.set()
                asked = time.monotonic()
            if asked is not None and time.monotonic() - asked > grace_s:
                raise JobCancelled()
            if not reader.poll(_POLL_S):
                if proc.is_alive() or reader.poll(0):
                    continue
                _gone(proc, name, stopping())
            try:
                message = reader.recv()
            except (EOFError, OSError):  # the child died, maybe in the middle of a message
                _gone(proc, name, stopping())
            except Exception as err:  # noqa: BLE001 - a message that does not unpickle
                raise ChildFailed(f"The {name} process sent a message that could not be read ({one_line(err)}).",
                                  traceback.format_exc()) from None
            kind = message[0]
            if kind == "message":
                yield message[1], message[2]
            elif kind == "event":
                yield message[1]
            elif kind == "result":
                return message[1]
            elif kind == "cancelled":
                raise JobCancelled(message[1])
            elif stopping():
                raise JobCancelled()  # a worker hit by the cancel may report it as an error of its own
            else:
                text, trace = message[1], message[2]
                raise ChildFailed(text, trace) if trace else QuantDeskError(text)
    finally:
        wait = grace_s if asked is None else max(0.0, grace_s - (time.monotonic() - asked))
        _end(proc, flag, wait)
        writer.close()
        reader.close()


def _gone(proc: Any, name: str, cancelled: bool) -> NoReturn:
    proc.join(_KILL_WAIT_S)
    if cancelled:
        raise JobCancelled() from None
    code = proc.exitcode
    if code is not None and code < 0:
        try:
            how = f"was killed ({signal.Signals(-code).name})"
        except ValueError:
            how = f"was killed (signal {-code})"
    else:
        how = f"stopped unexpectedly (exit code {code})"
    raise QuantDeskError(
        f"The {name} process {how} before it finished; check free memory "
        "(the system ends processes when it runs out) and try again."
    ) from None


def _end(proc: Any, flag: SharedFlag, wait: float) -> None:
    """Ask, wait, terminate, kill: the one way a child is ended. Never waits more than ``wait`` + 2 s."""
    if proc.is_alive():
        flag.set()
        proc.join(wait)
    if proc.is_alive():
        proc.terminate()
        proc.join(_KILL_WAIT_S)
    if proc.is_alive():
        proc.kill()
        proc.join(_KILL_WAIT_S)


# --- the child's side -----------------------------------------------------------


def _child_main(conn: Any, flag: SharedFlag, parent: int, mode: str, nice: int, target: Callable[..., Any],
                args: tuple) -> None:
    cancel = _child_setup(flag, parent, mode, nice)
    try:
        if mode == "job":  # a failed send (the parent is gone) closes the job: its clean-up still runs
            value = run_job(target(cancel, *args), lambda event: conn.send(("event", event)))
        else:
            value = target(ChildReporter(conn, flag), *args)
        outcome, code = ("result", value), 0
    except JobCancelled as err:
        outcome, code = ("cancelled", str(err)), 1
    except ChildFailed as err:
        outcome, code = ("error", str(err), err.traceback), 1
    except QuantDeskError as err:
        outcome, code = ("error", str(err), ""), 1
    except BaseException as err:  # noqa: BLE001 - the parent reports it in one sentence
        from engine.failures import explain

        outcome, code = ("error", explain(err), traceback.format_exc()), 1
    _send_and_exit(conn, outcome, code)


def _child_setup(flag: SharedFlag, parent: int, mode: str, nice: int) -> CancelToken:
    """Leave Ctrl-C to the parent, end with it, and turn its cancel flag into this process's token."""
    # Ctrl-C and a closed terminal reach the whole process group; the parent turns them into a cancel.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    mp.current_process().daemon = False  # a job child starts children of its own
    if nice:
        with contextlib.suppress(OSError, AttributeError):
            os.nice(nice)
    cancel = CancelToken()
    if mode == "job":
        # A job child removes what it started before it goes: SIGTERM (also sent when
        # the parent dies) cancels it and leaves it a few seconds to do so.
        def stop(_signum: int, _frame: Any) -> None:
            cancel.cancel()
            _exit_soon()

        signal.signal(signal.SIGTERM, stop)
        _die_with_parent(signal.SIGTERM)
    else:
        _die_with_parent(signal.SIGKILL)  # its parent removes what it wrote
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(flag, parent, cancel, mode), daemon=True,
                     name="quantdesk-parent-watch").start()
    return cancel


def _die_with_parent(sig: int) -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG


def _watch_parent(flag: SharedFlag, parent: int, cancel: CancelToken, mode: str) -> None:
    """Where PR_SET_PDEATHSIG is missing (or was sent by a thread, not the process, ending)."""
    while True:
        if os.getppid() != parent:
            if mode != "job":
                os._exit(1)
            cancel.cancel()
            _exit_soon()
            return
        if flag.is_set():
            cancel.cancel()
        time.sleep(_WATCH_S)


_EXITING: list[threading.Timer] = []


def _exit_soon() -> None:
    if not _EXITING:
        timer = threading.Timer(_HARD_EXIT_S, os._exit, args=(1,))
        timer.daemon = True
        _EXITING.append(timer)
        timer.start()


def _send_and_exit(conn: Any, message: tuple, code: int) -> NoReturn:
    """Tell the parent how it ended, then go without the interpreter's slow teardown."""
    try:
        conn.send(message)
    except (BrokenPipeError, ConnectionError, EOFError):
        pass  # the parent is gone: nobody to tell
    except Exception as err:  # noqa: BLE001 - e.g. a result that does not pickle
        with contextlib.suppress(Exception):
            conn.send(("error", one_line(err), traceback.format_exc()))
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        conn.close()
    os._exit(code)


# --- signals ----------------------------------------------------------------------

_CANCEL_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


@contextmanager
def cancel_on_signals(cancel: CancelToken) -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP cancel the job; a second one interrupts it at once.

    The job then ends its children and removes what it started, within
    seconds. Only the main thread owns signals; elsewhere this does nothing.
    """
    previous: dict[int, Any] = {}

    def handler(_signum: int, _frame: Any) -> None:
        if cancel.cancelled:
            raise KeyboardInterrupt
        cancel.cancel()

    for sig in _CANCEL_SIGNALS:
        with contextlib.suppress(ValueError):  # not the main thread: the caller owns the signals
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def cpu_threads() -> int:
    """Threads to use by default: the physical cores, at least one."""
    try:
        import psutil

        return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    except Exception:  # pragma: no cover - psutil is a hard dependency
        return max(1, os.cpu_count() or 1)
