"""Preparing the demo model as a Job: the first run takes about a minute, so it reports real progress.

``engine.demo.ensure_demo_model`` does the work; this wraps it so a listener
sees the dequantized tensor count climb (transformers' own per-tensor loop)
and an ETA, instead of a spinner.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any

from engine.jobs import CancelToken, JobGen, Progress

LOAD_SHARE = 0.08  # importing torch and transformers, reading the GGUF
TENSOR_SHARE = 0.80  # dequantizing, one step per tensor
SAVE_FRACTION = LOAD_SHARE + TENSOR_SHARE


def prepare_demo(cancel: CancelToken | None = None, folder: Path | None = None) -> JobGen[Path]:
    """Build the demo model once (yielding Progress); later calls return at once.

    The build itself has no cancel hook; ``cancel`` is honoured before it starts.
    """
    from engine.demo import demo_model_dir, is_built

    folder = folder or demo_model_dir()
    if is_built(folder):
        return folder
    if cancel is not None and cancel.cancelled:
        from engine.errors import JobCancelled

        raise JobCancelled("The demo model was not prepared.")
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    threading.Thread(target=_build, args=(folder, events), daemon=True, name="quantdesk-demo").start()
    start = time.monotonic()
    yield Progress(step="demo", fraction=0.0, message="Loading the packaged SmolLM2 weights")
    fraction = 0.0
    while True:
        try:
            kind, value = events.get(timeout=0.5)
        except queue.Empty:
            continue
        if kind == "tensor":
            index, count = value
            fraction = LOAD_SHARE + TENSOR_SHARE * index / max(1, count)
            elapsed = time.monotonic() - start
            eta = elapsed / fraction * (1 - fraction) if fraction > LOAD_SHARE else None
            yield Progress(step="demo", fraction=fraction, message="Dequantizing the weights",
                           tensor_index=index, tensor_count=count, eta_s=eta)
            if index == count:
                yield Progress(step="demo", fraction=SAVE_FRACTION, message="Saving the model")
        elif kind == "error":
            raise value
        else:
            yield Progress(step="done", fraction=1.0, message="The demo model is ready")
            return value


_LISTENER: list[queue.Queue] = []  # the build being followed (one at a time)


def _build(folder: Path, events: queue.Queue) -> None:
    _LISTENER[:] = [events]
    try:
        _count_tensors()
        from engine.demo import ensure_demo_model

        events.put(("done", ensure_demo_model(folder)))
    except BaseException as err:  # noqa: BLE001 - handed to the generator, which raises it
        events.put(("error", err))
    finally:
        _LISTENER.clear()


def _count_tensors() -> None:
    """Follow transformers' per-tensor dequantizing loop (its progress bar) while the demo is built."""
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        return
    inner = gguf_utils.tqdm
    if getattr(inner, "_quantdesk_counter", False):
        return

    def counting(iterable=None, *args: Any, **kwargs: Any):
        items = list(iterable or [])
        bar = inner(items, *args, **kwargs)
        for i, item in enumerate(bar, 1):
            yield item
            for listener in list(_LISTENER):
                listener.put(("tensor", (i, len(items))))

    counting._quantdesk_counter = True  # type: ignore[attr-defined]
    gguf_utils.tqdm = counting
