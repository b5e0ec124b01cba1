"""The Hugging Face checkpoint a folder-writing backend (bitsandbytes, GPTQ/AWQ, FP8) starts from.

One set of refusals, each one sentence naming the method: a GGUF or other file
instead of a folder, no or unreadable config.json, an already-quantized
checkpoint, no weights, pickle-only weights where safetensors are needed; and
one way to choose the device from what was asked and what NVML sees.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.artifacts import read_sidecar
from engine.errors import QuantDeskError


@dataclass
class Checkpoint:
    folder: Path
    config: dict[str, Any]
    shards: list[Path]  # *.safetensors
    bins: list[Path]  # *.bin (pickle), used only where the method allows them


def open_checkpoint(source: Path, method: str, *, allow_bin: bool = False) -> Checkpoint:
    """Check that ``source`` is an unquantized Hugging Face checkpoint ``method`` can read; writes nothing."""
    folder = source.parent if source.is_file() and source.name == "config.json" else source
    if folder.is_file():
        if folder.suffix.lower() == ".gguf":
            raise QuantDeskError(
                f"{folder.name} is a GGUF file; {method} needs the original Hugging Face folder, "
                "so point to that folder or choose a GGUF type for this file."
            )
        raise QuantDeskError(f"{folder} is a file; point to the model's Hugging Face folder instead.")
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise QuantDeskError(
            f"{folder} has no config.json, so it is not a Hugging Face checkpoint; point to the model's folder."
        ) from None
    except (OSError, ValueError, RecursionError) as err:
        raise QuantDeskError(f"{config_path} cannot be read ({err}); re-download the model.") from None
    if not isinstance(config, dict):
        raise QuantDeskError(f"{config_path} is not a JSON object; re-download the model.")
    quant = config.get("quantization_config")
    if quant:
        done = quant.get("quant_method", "quantized") if isinstance(quant, dict) else "quantized"
        record = read_sidecar(folder)
        made = f" (made by QuantDesk from {record.source_name})" if record and record.source_name else ""
        raise QuantDeskError(
            f"{folder.name} is already quantized with {done}{made}; quantizing it again would lose "
            "quality, so point to the original FP16/BF16 checkpoint instead."
        )
    shards = sorted(folder.glob("*.safetensors"))
    bins = sorted(folder.glob("*.bin"))
    if not shards and not (allow_bin and bins):
        if bins or any(folder.glob("*.pt")):
            raise QuantDeskError(
                f"{folder.name} has only PyTorch .bin weights (pickle); {method} in QuantDesk reads "
                ".safetensors, so download the model's .safetensors files (most Hub models have them) "
                "or choose a GGUF type."
            )
        kinds = "*.safetensors or *.bin" if allow_bin else "*.safetensors"
        raise QuantDeskError(f"{folder} has no weights ({kinds}); download the complete model.")
    return Checkpoint(folder, config, shards, bins)


def plan_device(request: Any, method: str) -> str:
    """"cpu" or "cuda" from what was asked and the GPUs NVML can see; refuses CUDA without a GPU."""
    asked = str(getattr(request, "device", None) or "auto").lower()
    if asked not in ("auto", "cpu", "cuda"):
        raise QuantDeskError(f"Unknown device '{asked}'; choose cpu, cuda or auto.")
    if asked == "cpu":
        return "cpu"
    from engine.hardware import detect_gpus

    gpus = detect_gpus()
    if asked == "cuda" and not gpus:
        raise QuantDeskError(
            "CUDA was asked for, but this machine has no NVIDIA GPU the driver can see; "
            f"choose --device cpu ({method} works on the CPU, slowly) or a GGUF type."
        )
    return "cuda" if gpus else "cpu"
