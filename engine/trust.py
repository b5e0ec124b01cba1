"""What QuantDesk will not run from a model folder: pickle weights unless the user opts in, remote code never.

Pickle files (.bin, .pt, .pth, .ckpt) can run code when they are loaded;
safetensors cannot. The opt-in is ``--allow-pickle`` on the commands that load
weights (quantize, chat, eval), which sets ``QUANTDESK_ALLOW_PICKLE=1`` so the
worker processes inherit it; the variable may also be set by hand.

A config.json whose ``auto_map`` points at Python files in the folder asks
transformers to import them. QuantDesk calls transformers with
``trust_remote_code=False`` and refuses such a model before loading it when
transformers has no built-in class for it. The messages torch and
transformers give about either are translated here into what the user can do.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from engine.errors import QuantDeskError

ALLOW_PICKLE_ENV = "QUANTDESK_ALLOW_PICKLE"
ALLOW_PICKLE_FLAG = "--allow-pickle"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
# Pickles a training run leaves beside the weights; they are never loaded as weights.
_NOT_WEIGHTS = ("training_args", "optimizer", "scheduler", "rng_state")
_MAX_CONFIG = 16 * 1024**2


def pickle_allowed() -> bool:
    """True when the user opted in to loading pickle weights."""
    return os.environ.get(ALLOW_PICKLE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def allow_pickle() -> None:
    """Record the opt-in for this process and every worker it starts."""
    os.environ[ALLOW_PICKLE_ENV] = "1"


def pickle_weights(folder: Path) -> list[Path]:
    """The pickle weight files of a folder that has no safetensors weights; empty when it has some."""
    try:
        if not folder.is_dir() or any(folder.glob("*.safetensors")):
            return []
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES
                      and not p.name.startswith(_NOT_WEIGHTS) and p.is_file())
    except OSError:
        return []


def pickle_refusal(name: str) -> str:
    return (f"{name} has only pickle weights (.bin/.pt), which can run code when loaded; download its "
            f".safetensors files instead, or add {ALLOW_PICKLE_FLAG} if you trust where they came from.")


def remote_code_refusal(name: str) -> str:
    return (f"{name} needs its own Python code to load (auto_map in its config.json or tokenizer_config.json), "
            "which QuantDesk never runs; choose a model whose architecture transformers supports, or a GGUF "
            "file of it.")


def check_pickle(folder: Path) -> None:
    """Refuse a folder whose only weights are pickles, unless the user opted in."""
    if not pickle_allowed() and pickle_weights(folder):
        raise QuantDeskError(pickle_refusal(folder.name))


def needs_remote_code(folder: Path) -> bool:
    """True when the folder's config.json maps its classes to its own Python files and transformers
    has no built-in class for its model type (imports transformers' configuration table only)."""
    config = _small_json(folder / "config.json")
    auto_map = config.get("auto_map") if isinstance(config, dict) else None
    if not auto_map:
        return False
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return str(config.get("model_type") or "") not in CONFIG_MAPPING_NAMES


def check_remote_code(folder: Path) -> None:
    if needs_remote_code(folder):
        raise QuantDeskError(remote_code_refusal(folder.name))


def forbid_remote_code() -> None:
    """Make transformers in this process unable to import a model folder's own Python code.

    Whatever ``trust_remote_code`` a caller passes (llama.cpp's converter passes
    True when it reads tokenizers), transformers' built-in classes are used
    where they exist and the model is refused with one sentence where not.
    """
    import sys

    import transformers.dynamic_module_utils as dynamic

    if getattr(dynamic, "_quantdesk_forbidden", False):
        return

    def resolve(trust_remote_code: Any, model_name: Any, has_local_code: bool, has_remote_code: bool,
                *args: Any, **kwargs: Any) -> bool:
        if has_remote_code and not has_local_code:
            raise QuantDeskError(remote_code_refusal(Path(str(model_name)).name))
        return False

    def no_dynamic_class(class_reference: Any, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        raise QuantDeskError(remote_code_refusal(Path(str(pretrained_model_name_or_path)).name))

    replacements = {"resolve_trust_remote_code": resolve, "get_class_from_dynamic_module": no_dynamic_class}
    originals = {name: getattr(dynamic, name, None) for name in replacements}
    # Patched at the source first, so modules imported later bind the guards; then in every module
    # that already imported the originals by name.
    for module in [dynamic, *[m for n, m in list(sys.modules.items()) if n.startswith("transformers.")]]:
        for name, guard in replacements.items():
            if originals[name] is not None and getattr(module, name, None) is originals[name]:
                setattr(module, name, guard)
    dynamic._quantdesk_forbidden = True  # type: ignore[attr-defined]


def explain_loader_error(err: BaseException | str, name: str) -> str | None:
    """What to do about torch's or transformers' complaint on ``weights_only`` or ``trust_remote_code``;
    None for any other failure."""
    text = str(err)
    lower = text.lower()
    if "trust_remote_code" in text or "custom code" in lower or "execute the configuration file" in lower:
        return remote_code_refusal(name)
    if "weights_only" in text or "weights only load failed" in lower:
        return (f"{name}'s pickle weights contain more than plain tensors, so torch will not load them safely; "
                "download its .safetensors files instead.")
    if "torch.load" in text and ("vulnerab" in lower or "upgrade torch" in lower or "v2.6" in text):
        return (f"Loading {name}'s pickle (.bin) weights safely needs torch 2.6 or newer; upgrade it with "
                "pip install -U torch, or download the model's .safetensors files instead.")
    return None


def _small_json(path: Path) -> Any:
    try:
        if not path.is_file() or path.stat().st_size > _MAX_CONFIG:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
