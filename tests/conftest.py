"""Shared fixtures. Each fixtures module is owned by the feature that needs it."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Modules that others import come first, so pytest rewrites their asserts too.
pytest_plugins = [
    "tests.fixtures.models",
    "tests.fixtures.inspect",
    "tests.fixtures.gguf",
    "tests.fixtures.chat",
    "tests.fixtures.bnb",
    "tests.fixtures.gui",
]


def _has_cuda() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetCount() > 0
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    import pytest

    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
