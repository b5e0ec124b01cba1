"""Launch to first paint of the QuantDesk window, against a bare PySide6 window measured in the same run.

    python tests/benchmarks/startup.py [--runs 5]

Each launch is a fresh process started the way ``quantdesk`` (no arguments)
starts; the window prints the seconds from launch to its first paint and
quits. The reference is the smallest PySide6 program that paints a window.
Last line: {"first_paint_s_median": ..., ...}. Target: at most 1.0 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_BARE = r"""
import os, sys, time
t0 = float(os.environ["QUANTDESK_T0"])
from PySide6.QtCore import QEvent, QObject
from PySide6.QtWidgets import QApplication, QLabel
app = QApplication([])
class Watch(QObject):
    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.Paint:
            print(f"first_paint_s {time.time() - t0:.4f}", flush=True)
            app.quit()
        return False
label = QLabel("QuantDesk")
watch = Watch()
label.installEventFilter(watch)
label.resize(1280, 800)
label.show()
app.exec()
"""


def _launch(cmd: list[str]) -> tuple[float, list[str]]:
    env = dict(os.environ, QUANTDESK_EXIT_AFTER_PAINT="1")
    env.setdefault("QT_QPA_PLATFORM", "offscreen" if not os.environ.get("DISPLAY") else "")
    env["QUANTDESK_T0"] = repr(time.time())
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    seconds, heavy = None, []
    for line in out.stdout.splitlines():
        if line.startswith("first_paint_s "):
            seconds = float(line.split()[1])
        if line.startswith("heavy_modules_at_first_paint "):
            heavy = json.loads(line.split(" ", 1)[1])
    if seconds is None:
        raise SystemExit(f"no first paint reported by {cmd}:\n{out.stdout}\n{out.stderr}")
    return seconds, heavy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    app_cmd = [sys.executable, "-m", "qtapp.launch"]
    bare_cmd = [sys.executable, "-c", _BARE]
    _launch(app_cmd)  # warm the disk cache once, as a second start would be
    app, bare, heavy = [], [], set()
    for _ in range(args.runs):
        seconds, loaded = _launch(app_cmd)
        app.append(seconds)
        heavy.update(loaded)
        bare.append(_launch(bare_cmd)[0])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result = {
        "first_paint_s_median": round(statistics.median(app), 3),
        "first_paint_s_max": round(max(app), 3),
        "bare_pyside6_s_median": round(statistics.median(bare), 3),
        "ratio_to_bare": round(statistics.median(app) / statistics.median(bare), 2),
        "heavy_modules_at_first_paint": sorted(heavy),
        "runs": args.runs,
        "load_average_1min": load,
        "cpus": os.cpu_count(),
        "target_s": 1.0,
    }
    print(f"QuantDesk first paint: {app}")
    print(f"bare PySide6 window:   {bare}")
    print(json.dumps(result))
    return 0 if result["first_paint_s_median"] <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
