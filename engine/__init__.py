"""QuantDesk engine: everything the app does, without Qt.

Usable from the command line, the GUI, the tests and scripts alike.
"""

__version__ = "0.1.0"


def _quiet_library_loggers() -> None:
    """torchao (installed with gptqmodel) warns on every transformers import about GPU kernels a CPU build
    cannot load, and torch about its own deprecations: noise in a user's terminal, never their concern."""
    import logging

    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


_quiet_library_loggers()
