"""Entry point of the frozen app: the same as the ``quantdesk`` console script (qtapp.launch:main).

``freeze_support`` must run first: jobs start spawned child processes, and in a
frozen app a child is this same executable started with multiprocessing's
arguments instead of a Python interpreter.
"""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    from qtapp.launch import main

    sys.exit(main())
