"""QuantDesk engine: everything the app does, without Qt.

Usable from the command line, the GUI, the tests and scripts alike.
"""

__version__ = "0.1.0"
