"""Finds backends by name or by the format they produce. Refuses duplicates."""

from __future__ import annotations

import importlib

from engine.backends.base import Backend
from engine.errors import QuantDeskError
from engine.formats import Format

# One module per backend; each calls register() on import.
_MODULES = ("engine.backends.gguf", "engine.backends.bnb")

_REGISTRY: dict[str, Backend] = {}
_loaded = False


def register(backend: Backend) -> Backend:
    if backend.name in _REGISTRY:
        raise ValueError(f"A backend named {backend.name!r} is already registered")
    for other in _REGISTRY.values():
        clash = set(other.formats) & set(backend.formats)
        if clash:
            raise ValueError(f"{backend.name} and {other.name} both claim {sorted(clash)}")
    _REGISTRY[backend.name] = backend
    return backend


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if err.name != mod:
                raise


def all_backends() -> list[Backend]:
    _load()
    return list(_REGISTRY.values())


def get_backend(name: str) -> Backend:
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise QuantDeskError(f"No backend named '{name}' is available in this build.") from None


def backend_for(fmt: Format) -> Backend:
    _load()
    for backend in _REGISTRY.values():
        if fmt.id in backend.formats:
            return backend
    if fmt.needs_imatrix:
        raise QuantDeskError(
            f"{fmt.label} needs an importance matrix, which QuantDesk cannot compute yet; "
            "choose IQ4_XS, Q3_K_M or Q2_K instead."
        )
    raise QuantDeskError(
        f"QuantDesk cannot produce {fmt.label} yet; choose a GGUF type or bnb-int8 / bnb-nf4."
    )
