"""Quantization backends: one package each, found through the registry by the format's backend name."""

from engine.backends.base import Backend, OutputRecord, Plan, QuantizeRequest
from engine.backends.options import BnbOptions, GgufOptions
from engine.backends.registry import backend_for

__all__ = ["Backend", "BnbOptions", "GgufOptions", "OutputRecord", "Plan", "QuantizeRequest", "backend_for"]
