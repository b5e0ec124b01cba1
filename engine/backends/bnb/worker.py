"""The child-process side of the bitsandbytes backend: quantize, save, reload, verify.

Runs under ``engine.jobs.run_in_child``; talks to the parent only through the
reporter. Each target is written into its temporary folder; the parent
renames it once every target has been verified.
"""

from __future__ import annotations

import gc
import logging
import shutil
from pathlib import Path
from typing import Any

from engine.backends.child_report import PROBE_TEXT, TargetReporter, child_device, raise_if_disk_full
from engine.errors import QuantDeskError

# Files beside the weights that a user expects to travel with the model.
_SUPPORT_FILES = ("chat_template.jinja", "chat_template.json", "generation_config.json")


class _WeightsBar:
    """Stands in for transformers' "Loading weights" bar: each tensor loaded is a quantize step."""

    def __init__(self, report: TargetReporter, iterable: Any = None, total: int | None = None, **_: Any) -> None:
        self._report = report
        self._iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n = 0

    def __iter__(self):
        for item in self._iterable:
            self.n += 1
            name = item[0] if isinstance(item, tuple) and item and isinstance(item[0], str) else None
            count = self.total or 0
            self._report.send(
                "quantizing", self.n / count if count else 0.5,
                f"Loading and quantizing {name or 'tensor'} ({self.n}/{count or '?'})",
                force=self.n == count, tensor_index=self.n, tensor_count=count or None, tensor_name=name,
            )
            yield item

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def __getattr__(self, _name: str) -> Any:
        return lambda *a, **k: None  # set_description, set_postfix, refresh, ...


def quantize_all(reporter: Any, source: str, jobs: list[dict[str, Any]], device: str,
                 threads: int | None) -> list[dict[str, Any]]:
    """Quantize ``source`` once per job into each job's ``part`` folder; returns what was verified."""
    from engine.trust import check_pickle, forbid_remote_code

    check_pickle(Path(source))
    first = TargetReporter(reporter, 0, jobs[0]["format"])
    first.send("loading", 0.0, "Loading torch, transformers and bitsandbytes")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    forbid_remote_code()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        import bitsandbytes  # noqa: F401
    except Exception as err:
        raise QuantDeskError(
            f"bitsandbytes is installed but cannot be loaded ({type(err).__name__}: {err}); reinstall it with: "
            'pip install -U --force-reinstall "bitsandbytes>=0.47"'
        ) from None
    device = child_device(torch, device, first, "This PyTorch build cannot use the GPU, so bitsandbytes runs on the "
                          "CPU; chatting with the result will be slow.")
    if threads:
        torch.set_num_threads(int(threads))
    versions = _versions(torch, transformers)
    results = []
    for index, job in enumerate(jobs):
        try:
            results.append(_quantize_one(TargetReporter(reporter, index, job["format"]), Path(source), job, device))
        except QuantDeskError:
            raise
        except Exception as err:
            raise_if_disk_full(err, job["name"], Path(job["part"]).parent)
            raise
        results[-1]["versions"] = versions
    return results


def _versions(torch: Any, transformers: Any) -> dict[str, str]:
    import bitsandbytes

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "bitsandbytes": bitsandbytes.__version__}


def _quantize_one(report: TargetReporter, source: Path, job: dict[str, Any], device: str) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    from transformers.utils import logging as hf_logging

    part = Path(job["part"])
    name = job.get("name") or part.name  # the folder's final name, for messages
    label = job["label"]
    settings = dict(job["bnb_config"])
    if "bnb_4bit_compute_dtype" in settings:
        settings["bnb_4bit_compute_dtype"] = getattr(torch, settings["bnb_4bit_compute_dtype"])
    config = BitsAndBytesConfig(**settings)
    # LLM.int8 works in float16 (bitsandbytes casts anything else on every call); 4-bit keeps the source's type.
    dtype = torch.float16 if settings.get("load_in_8bit") else _weights_dtype(source, device)
    device_map = "cuda" if device == "cuda" else "cpu"

    tokenizer = _load_tokenizer(source)  # before the long part: an output without one is of no use
    report.send("loading", 0.5, f"Reading the {source.name} shards for {label}")
    previous = hf_logging.set_tqdm_hook(
        lambda factory, args, kwargs: _WeightsBar(report, *args, **kwargs)
        if kwargs.get("desc") == "Loading weights" else factory(*args, **kwargs)
    )
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, quantization_config=config, device_map=device_map, dtype=dtype, **_safe_loading()
        )
    except Exception as err:
        from engine.trust import explain_loader_error

        translated = explain_loader_error(err, source.name)
        if translated:
            raise QuantDeskError(translated) from None
        raise
    finally:
        hf_logging.set_tqdm_hook(previous)
    model.eval()
    quantized = _count_quantized(model)
    if quantized == 0:
        raise QuantDeskError(
            f"bitsandbytes found no linear layers to quantize in {source.name}; this architecture is not "
            "supported by it, so choose a GGUF type instead."
        )

    # Saved before the first forward pass: on CPUs with AVX512-BF16, bitsandbytes repacks 4-bit
    # weights on the first forward and does not restore them exactly when saving afterwards.
    report.send("saving", 0.0, f"Saving {name}")
    part.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(part)
    _save_tokenizer(tokenizer, part, source, label)
    for name in _SUPPORT_FILES:
        if (source / name).is_file() and not (part / name).exists():
            shutil.copy2(source / name, part / name)
    probe = _probe_ids(tokenizer, model.config, model.device)
    with torch.no_grad():
        expected = model(probe).logits.float()
    del model
    _free_memory(torch)

    report.send("verifying", 0.0, f"Reloading {name} to check it")
    reloaded = AutoModelForCausalLM.from_pretrained(part, device_map=device_map, trust_remote_code=False)
    reloaded.eval()
    if _count_quantized(reloaded) != quantized:
        raise QuantDeskError(
            f"The saved {label} model reloaded without its quantized layers; nothing was kept. "
            'Upgrade them with: pip install -U transformers "bitsandbytes>=0.47"'
        )
    with torch.no_grad():
        logits = reloaded(probe.to(reloaded.device)).logits.float()
    if not torch.isfinite(logits).all():
        raise QuantDeskError(
            f"The saved {label} model produces invalid numbers (NaN/inf); nothing was kept. "
            "Try another compute dtype (e.g. fp32) or a GGUF type."
        )
    expected = expected.to(logits.device)
    agree = (logits.argmax(-1) == expected.argmax(-1)).float().mean().item()
    drift = ((logits - expected).norm() / expected.norm().clamp_min(1e-6)).item()
    if agree < 0.9 or drift > 0.05:
        raise QuantDeskError(
            f"The saved {label} model does not reproduce the model it was saved from "
            f"({agree:.0%} of next-token predictions agree, logits differ by {drift:.1%}); nothing was kept. "
            'Upgrade bitsandbytes (pip install -U "bitsandbytes>=0.47") or choose a GGUF type.'
        )
    report.send("verifying", 1.0, f"{name} reloads and predicts as saved")
    result = {
        "format": job["format"],
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "quantized_modules": quantized,
        "agreement": agree,
        "drift": drift,
    }
    del reloaded
    _free_memory(torch)
    return result


def _weights_dtype(source: Path, device: str) -> Any:
    """What the layers bitsandbytes leaves alone are kept in: the source's 16-bit type, else a 16-bit one."""
    import json

    import torch

    try:
        config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    name = str(config.get("dtype") or config.get("torch_dtype") or "")
    if name in ("bfloat16", "float16"):
        return getattr(torch, name)
    return torch.float16 if device == "cuda" else torch.bfloat16


def _count_quantized(model: Any) -> int:
    import bitsandbytes as bnb

    return sum(isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)) for m in model.modules())


def _safe_loading() -> dict[str, Any]:
    """from_pretrained arguments that keep a model's own code and (unless opted in) pickles out."""
    from engine.trust import pickle_allowed

    return {"trust_remote_code": False, **({} if pickle_allowed() else {"use_safetensors": True})}


def _load_tokenizer(source: Path) -> Any:
    """The source's tokenizer; one sentence when it has none or it does not load."""
    from transformers import AutoTokenizer

    from engine.trust import explain_loader_error

    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except QuantDeskError:
        raise
    except Exception as err:
        translated = explain_loader_error(err, source.name)
        if translated:
            raise QuantDeskError(translated) from None
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise QuantDeskError(
            f"{source.name}'s tokenizer does not load ({type(err).__name__}: {first}), and the output would be "
            "unusable without it; copy tokenizer.json and tokenizer_config.json from the original model "
            "into the folder and try again."
        ) from None


def _save_tokenizer(tokenizer: Any, part: Path, source: Path, label: str) -> None:
    """Save the tokenizer beside the weights and read it back; the job fails rather than ship without it."""
    from transformers import AutoTokenizer

    from engine.failures import is_disk_full

    try:
        tokenizer.save_pretrained(part)
        AutoTokenizer.from_pretrained(part, trust_remote_code=False)
    except Exception as err:
        if is_disk_full(err):
            raise
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise QuantDeskError(
            f"{source.name}'s tokenizer could not be saved with the {label} model ({type(err).__name__}: "
            f"{first}), so nothing was kept; check the source's tokenizer files or upgrade transformers."
        ) from None


def _probe_ids(tokenizer: Any, config: Any, device: Any) -> Any:
    import torch

    if tokenizer is not None:
        ids = tokenizer(PROBE_TEXT, return_tensors="pt")["input_ids"]
    else:
        vocab = int(getattr(config, "vocab_size", 0) or 32)
        ids = torch.arange(1, 17).remainder(vocab).unsqueeze(0)
    return ids.to(device)


def _free_memory(torch: Any) -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
