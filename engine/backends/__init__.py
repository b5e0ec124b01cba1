"""Quantization backends: one file each, found through the registry."""

from engine.backends.base import Backend, OutputRecord, QuantizeRequest
from engine.backends.registry import all_backends, backend_for, get_backend, register

__all__ = [
    "Backend",
    "OutputRecord",
    "QuantizeRequest",
    "all_backends",
    "backend_for",
    "get_backend",
    "register",
]
