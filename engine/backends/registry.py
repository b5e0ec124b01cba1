"""Finds the backend that produces a format, by the format's ``backend`` name.

Each backend is one package, named here as ``"module:Class"`` and imported
only when first asked for, under a lock: two worker threads starting at once
must never see a half-made backend.
"""

from __future__ import annotations

import importlib
import threading

from engine.backends.base import Backend
from engine.errors import QuantDeskError
from engine.formats import Format

BACKENDS: dict[str, str] = {
    "gguf": "engine.backends.gguf.backend:GgufBackend",
    "bnb": "engine.backends.bnb.backend:BnbBackend",
    "fp8": "engine.backends.fp8.backend:Fp8Backend",
    "gptq": "engine.backends.int4.backend:GptqBackend",
    "awq": "engine.backends.int4.backend:AwqBackend",
}

_LOADED: dict[str, Backend] = {}
_LOCK = threading.Lock()


def _load(name: str) -> Backend | None:
    with _LOCK:
        backend = _LOADED.get(name)
        if backend is None and name in BACKENDS:
            module, cls = BACKENDS[name].split(":")
            backend = getattr(importlib.import_module(module), cls)()
            if backend.name != name:
                raise RuntimeError(f"{BACKENDS[name]} calls itself {backend.name!r}, not {name!r}")
            _LOADED[name] = backend
        return backend


def backend_for(fmt: Format) -> Backend:
    """The backend that makes ``fmt``, or one sentence saying what to choose instead."""
    backend = _load(fmt.backend)
    if backend is None:
        raise QuantDeskError(
            f"QuantDesk cannot produce {fmt.label} yet; choose a GGUF type or bnb-int8 / bnb-nf4."
        )
    return backend
