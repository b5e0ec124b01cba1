"""What the window remembers between runs (QSettings): folders, recent models, threads."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, QStandardPaths

RECENT_MAX = 8


def _settings() -> QSettings:
    return QSettings("QuantDesk", "QuantDesk")


def recent_models() -> list[str]:
    value = _settings().value("recent_models", [])
    if isinstance(value, str):
        value = [value]
    return [v for v in (value or []) if v]


def remember_model(path: Path) -> list[str]:
    items = [str(path)] + [p for p in recent_models() if p != str(path)]
    items = items[:RECENT_MAX]
    s = _settings()
    s.setValue("recent_models", items)
    s.setValue("last_open_folder", str(path.parent if path.is_file() else path.parent))
    return items


def last_open_folder() -> str:
    return str(_settings().value("last_open_folder", str(Path.home())))


def output_folder() -> str:
    default = Path(QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DocumentsLocation)
                   or Path.home()) / "QuantDesk"
    return str(_settings().value("output_folder", str(default)))


def set_output_folder(folder: str) -> None:
    _settings().setValue("output_folder", folder)


def threads(default: int) -> int:
    try:
        return int(_settings().value("threads", default))
    except (TypeError, ValueError):
        return default


def set_threads(n: int) -> None:
    _settings().setValue("threads", int(n))


def value(key: str, default=None):
    return _settings().value(key, default)


def set_value(key: str, val) -> None:
    _settings().setValue(key, val)
