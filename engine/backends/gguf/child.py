"""What every GGUF worker process does first: leave cancelling to the parent, die with it, stay quiet."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time


def child_setup() -> None:
    """Call at the top of a worker running under engine.jobs.run_in_child.

    Ctrl-C in a terminal reaches the whole process group; the parent turns it
    into a clean cancel and ends this process itself, so the child ignores it.
    If the parent dies without ending us (killed hard), we end too rather than
    keep writing a file nobody will finish.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.disable(logging.WARNING)  # the converter logs each tensor; progress events replace that
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent already died between fork and prctl
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="parent-watch").start()


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)
