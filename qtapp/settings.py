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


def last_model() -> Path | None:
    """The model open when the window last closed (the newest recent one), if it is still there."""
    recent = recent_models()
    return Path(recent[0]) if recent and Path(recent[0]).exists() else None


def output_base() -> Path:
    """Where per-model output folders go: ``QuantDesk`` in the documents folder where there is one, else ~."""
    documents = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DocumentsLocation)
    home = Path.home()
    if documents and Path(documents).is_dir() and Path(documents) != home:
        return Path(documents) / "QuantDesk"
    return home / "QuantDesk"


def output_folder() -> str:
    """The folder whose free space the machine panel reports: the last one written into, else the base."""
    written = written_folders()
    return written[0] if written else str(output_base())


def _json(key: str, default):
    import json

    try:
        value = json.loads(str(_settings().value(key, "") or "null"))
    except ValueError:
        return default
    return value if isinstance(value, type(default)) else default


def _set_json(key: str, value) -> None:
    import json

    _settings().setValue(key, json.dumps(value))


def model_output_folder(model: Path, name: str) -> Path:
    """This model's output folder: the one its last successful job wrote into, else ``<base>/<name>``."""
    remembered = _json("model_output_folders", {}).get(str(model))
    return Path(remembered) if remembered else output_base() / name


def remember_output(model: Path, folder: Path) -> None:
    """A job from ``model`` into ``folder`` succeeded: make it the model's default, and list it from now on."""
    folders = _json("model_output_folders", {})
    folders[str(model)] = str(folder)
    _set_json("model_output_folders", folders)
    add_written_folder(folder)


def written_folders() -> list[str]:
    """Every folder QuantDesk wrote outputs into, newest first: Chat and Results look in all of them."""
    return [f for f in _json("written_folders", []) if isinstance(f, str)]


def add_written_folder(folder: Path) -> None:
    items = [str(folder)] + [f for f in written_folders() if f != str(folder)]
    _set_json("written_folders", items[:64])


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


def lmstudio_models_dir() -> str:
    """The LM Studio models folder the user chose; "" means the one LM Studio's own settings name."""
    return str(_settings().value("lmstudio_models_dir", "") or "")


def set_lmstudio_models_dir(folder: str) -> None:
    _settings().setValue("lmstudio_models_dir", str(folder or ""))
