"""Quantization backends: one package each, found through the registry by the format's backend name."""

from engine.backends.base import Backend, OutputRecord, Plan, QuantizeRequest
from engine.backends.options import BnbOptions, GgufOptions, Int4Options
from engine.backends.registry import backend_for
from engine.calibration.options import CalibrationOptions

__all__ = ["Backend", "BnbOptions", "CalibrationOptions", "GgufOptions", "Int4Options", "OutputRecord", "Plan", "QuantizeRequest", "backend_for"]
