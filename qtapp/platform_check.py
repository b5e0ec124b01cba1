"""Before Qt starts: the system libraries Qt's xcb platform plugin loads, checked from Python.

Qt aborts (exit 134, a raw "could not load the Qt platform plugin" message)
when one is missing; ``libxcb-cursor0`` is the usual one on Debian and Ubuntu.
Checking first lets ``quantdesk`` print one sentence with the install command.
No Qt import here: this runs before PySide6 is loaded.
"""

from __future__ import annotations

import ctypes
import os
import sys

# soname -> the Debian/Ubuntu package that provides it (what Qt 6's xcb plugin links against).
XCB_LIBRARIES: dict[str, str] = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-render.so.0": "libxcb-render0",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxcb.so.1": "libxcb1",
}


def platform_will_be_xcb(environ: dict[str, str] | None = None, platform: str | None = None) -> bool:
    """Whether Qt will pick its xcb plugin: Linux, and neither offscreen/wayland asked for nor a Wayland session."""
    env = os.environ if environ is None else environ
    if (platform or sys.platform) != "linux":
        return False
    asked = env.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip()
    if asked:
        return asked == "xcb"
    return not (env.get("WAYLAND_DISPLAY") and env.get("XDG_SESSION_TYPE") == "wayland")


def missing_libraries(libraries: dict[str, str] | None = None) -> list[str]:
    """The sonames in ``libraries`` that the dynamic loader cannot open here."""
    missing = []
    for soname in libraries or XCB_LIBRARIES:
        try:
            ctypes.CDLL(soname)
        except OSError:
            missing.append(soname)
    return missing


def xcb_problem(libraries: dict[str, str] | None = None, environ: dict[str, str] | None = None) -> str | None:
    """One sentence saying what to install when the window could not start on X11; None when it can."""
    if not platform_will_be_xcb(environ):
        return None
    table = libraries or XCB_LIBRARIES
    missing = missing_libraries(table)
    if not missing:
        return None
    packages = " ".join(dict.fromkeys(table[name] for name in missing))
    return (f"QuantDesk's window needs system libraries that are missing here ({', '.join(missing)}); "
            f"install them with: sudo apt install {packages}")
