"""Calibration data shared by every calibrated backend (GPTQ, AWQ, the GGUF importance matrix)."""

from engine.calibration.data import Document, Documents, builtin_documents, load_documents
from engine.calibration.options import DEFAULT_SAMPLES, DEFAULT_SEQ_LEN, CalibrationOptions
from engine.calibration.samples import CalibrationSet, Encoder, build_calibration, hf_encoder

__all__ = [
    "DEFAULT_SAMPLES", "DEFAULT_SEQ_LEN", "CalibrationOptions", "CalibrationSet", "Document", "Documents",
    "Encoder", "build_calibration", "builtin_documents", "hf_encoder", "load_documents",
]
