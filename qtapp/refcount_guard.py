"""Keeps None, True and False alive under PySide6 6.12.0 on Python 3.11.

PySide6 6.12.0 drops one reference too many each time a signal calls a Python
slot (the slot's return value, None) and each time Python emits a signal (its
result, True or False). From Python 3.12 these three objects are immortal and
nothing happens; on 3.11 their count reaches zero after a few thousand signals
and the interpreter aborts ("none_dealloc" / "bool_dealloc"). PySide6 6.11.3
does not do this (checked on Python 3.11.7), so pinning it is the real fix;
until then this guard tops their counts up on a timer. It is inert elsewhere.

Slots must return None under the faulty release: any other returned object
would be freed twice. The window's slots do.
"""

from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QCoreApplication, QObject, QTimer

HEADROOM = 20_000  # references kept in hand above the starting count
_SINGLETONS = (None, True, False)
_guard: RefcountGuard | None = None


def needed() -> bool:
    import PySide6

    return sys.version_info < (3, 12) and PySide6.__version__.startswith("6.12.")


class RefcountGuard(QObject):
    def __init__(self, parent: QObject) -> None:
        super().__init__(parent)
        self._incref = ctypes.pythonapi.Py_IncRef
        self._incref.argtypes = [ctypes.py_object]
        self._incref.restype = None
        self._targets = [sys.getrefcount(obj) + HEADROOM for obj in _SINGLETONS]
        self.top_up()
        self._timer = QTimer(self, interval=50)
        self._timer.timeout.connect(self.top_up)
        self._timer.start()

    def top_up(self) -> None:
        for obj, target in zip(_SINGLETONS, self._targets, strict=True):
            missing = target - sys.getrefcount(obj)
            for _ in range(max(0, missing)):
                self._incref(obj)


def install() -> None:
    """Start the guard once per application when the installed PySide6 needs it."""
    global _guard
    app = QCoreApplication.instance()
    if _guard is not None or app is None or not needed():
        return
    _guard = RefcountGuard(app)
