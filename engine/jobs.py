"""Jobs: long tasks that report Progress events and honour a CancelToken.

A job is a generator: it yields ``Progress`` and returns its result. The
engine knows nothing about who listens; the CLI prints a bar, the GUI
subscribes, tests assert on the events.

Heavy native work runs in a child process (``run_in_child``): the C quantizer
has no cancel hook, a crash must not take the caller down, and Python-heavy
conversion must not hold the caller's GIL. Cancel ends the child.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from engine.errors import JobCancelled, QuantDeskError

R = TypeVar("R")
T = TypeVar("T")


@dataclass
class Progress:
    """One progress event. ``fraction`` is the whole job's progress, 0..1."""

    step: str
    fraction: float
    message: str = ""
    tensor_index: int | None = None
    tensor_count: int | None = None
    tensor_name: str | None = None
    bytes_done: int | None = None
    eta_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

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
    """Drive a job generator to completion, handing each event to ``on_progress``."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(event)


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


# --- child processes ---------------------------------------------------------

_CTX = mp.get_context("spawn")


class ChildReporter:
    """Handed to the function running in the child: sends messages to the parent."""

    def __init__(self, q: Any) -> None:
        self._q = q

    def send(self, kind: str, **payload: Any) -> None:
        self._q.put((kind, payload))

    def finish(self, value: Any) -> None:
        """Hand ``value`` to the parent as the result and end this process at once.

        Skips the interpreter's teardown, which takes seconds once torch is
        loaded; only for workers whose files are already closed.
        """
        self._q.put(("__result__", {"value": value}))
        self._q.close()
        self._q.join_thread()  # the result is in the pipe before the process goes
        os._exit(0)


def _child_main(q: Any, target: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    reporter = ChildReporter(q)
    try:
        result = target(reporter, *args, **kwargs)
        q.put(("__result__", {"value": result}))
    except QuantDeskError as err:
        q.put(("__error__", {"message": str(err), "user": True}))
    except BaseException as err:  # noqa: BLE001 - the parent reports it in one line
        q.put(
            (
                "__error__",
                {
                    "message": f"{type(err).__name__}: {err}",
                    "user": False,
                    "traceback": traceback.format_exc(),
                },
            )
        )


def run_in_child(
    target: Callable[..., Any],
    *args: Any,
    cancel: CancelToken | None = None,
    poll_s: float = 0.05,
    **kwargs: Any,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Run ``target(reporter, *args, **kwargs)`` in a spawned child process.

    Yields ``(kind, payload)`` messages the child sent with ``reporter.send``.
    The generator's return value is the child's return value. A cancel ends
    the child (terminate, then kill) within a second and raises JobCancelled;
    a child error raises QuantDeskError with one line.
    """
    q = _CTX.Queue()
    proc = _CTX.Process(target=_child_main, args=(q, target, args, kwargs), daemon=True)
    proc.start()
    result: Any = None
    try:
        while True:
            if cancel is not None and cancel.cancelled:
                _end(proc)
                raise JobCancelled()
            try:
                kind, payload = q.get(timeout=poll_s)
            except queue.Empty:
                if not proc.is_alive():
                    # Drain what arrived just before it ended.
                    try:
                        kind, payload = q.get(timeout=0.5)
                    except queue.Empty:
                        code = proc.exitcode
                        raise QuantDeskError(
                            f"The worker process stopped unexpectedly (exit code {code}); "
                            "check free memory and try again."
                        ) from None
                else:
                    continue
            if kind == "__result__":
                result = payload["value"]
                break
            if kind == "__error__":
                if payload.get("user"):
                    raise QuantDeskError(payload["message"])
                err = QuantDeskError(payload["message"])
                err.child_traceback = payload.get("traceback")  # type: ignore[attr-defined]
                raise err
            yield kind, payload
    finally:
        if proc.is_alive():
            proc.join(timeout=0.3)
            _end(proc)
        q.close()
    return result


def _end(proc: Any) -> None:
    if not proc.is_alive():
        return
    proc.terminate()
    proc.join(timeout=0.5)
    if proc.is_alive():
        proc.kill()
        proc.join(timeout=0.5)


def cpu_threads() -> int:
    """Threads to use by default: the physical cores, at least one."""
    try:
        import psutil

        return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    except Exception:  # pragma: no cover - psutil is a hard dependency
        return max(1, os.cpu_count() or 1)
