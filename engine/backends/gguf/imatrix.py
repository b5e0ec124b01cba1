"""The importance matrix, computed from the calibration data with PyTorch, named as llama.cpp names weights.

llama.cpp's ``llama-imatrix`` records, for every matrix multiplication with a
weight of a ``blk.*`` tensor, the sum of x² of each input column over every
token (``in_sum2``) and the number of tokens (``counts``); the quantizer then
weights each column's rounding error by in_sum2 / counts. The same numbers
come out of forward pre-hooks on every ``nn.Linear`` of the Hugging Face model:
its input is the matmul's input. Each module is named by the converter's own
map (gguf-py's TensorNameMap for the converter's architecture), so entries
carry the GGUF tensor names. ``output.weight`` is left out, as llama-imatrix
leaves it out by default (llama.cpp quantizes it without the matrix); the
token embedding is a lookup, not a multiplication, and has none.

Runs in a child process (engine.jobs.run_in_child): it loads a whole model.
Measured on two busy cores (SmolLM2-135M, 16 × 256 tokens): float32 took
172 s, bfloat16 more than 420 s (torch's CPU matmuls are slower in bf16), so
the model is loaded in float32 when that fits in memory.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from engine.backends.gguf.imatrix_file import CALIBRATION_KEY, SOURCE_KEY, Entry, ImatrixData
from engine.calibration import CalibrationOptions
from engine.errors import JobCancelled, QuantDeskError
from engine.fingerprint import weights_fingerprint
from engine.jobs import ChildReporter

SUFFIX = ".imatrix.gguf"


def imatrix_path(out_dir: Path, model_name: str) -> Path:
    """Where a job's computed matrix lives (and is found again): beside the outputs."""
    return Path(out_dir) / f"{model_name}{SUFFIX}"


def is_ours(path: Path) -> bool:
    """An imatrix file QuantDesk wrote (its fingerprints are in the metadata), so a job may replace it."""
    from engine.gguf_header import read_gguf_header

    try:
        fields = read_gguf_header(path).fields
    except (OSError, QuantDeskError):
        return False
    return fields.get("general.type") == "imatrix" and isinstance(fields.get(SOURCE_KEY), str)


def cached_matches(path: Path, source_sha: str, calibration_sha: str) -> bool:
    if not path.is_file() or not is_ours(path):
        return False
    from engine.gguf_header import read_gguf_header

    fields = read_gguf_header(path).fields
    return fields.get(SOURCE_KEY) == source_sha and fields.get(CALIBRATION_KEY) == calibration_sha


def imatrix_worker(reporter: ChildReporter, source: str, options: CalibrationOptions, model_name: str,
                   threads: int, converter: str | None, final: str, part: str) -> dict[str, Any]:
    """Child entry point: build the calibration set, then reuse ``final`` or compute the matrix into ``part``.

    Sends ``warning`` (the calibration's), ``phase`` and ``sample`` messages.
    Returns ``{"cached", "record", "entries", "chunks"}``.
    """
    import logging

    from engine.calibration import build_calibration, hf_encoder
    from engine.modelcard import read_chat_template
    from engine.trust import check_pickle, forbid_remote_code

    logging.disable(logging.WARNING)
    src = Path(source)
    check_pickle(src)
    forbid_remote_code()
    reporter.send("phase", message="Preparing the calibration samples")
    calib = build_calibration(options, hf_encoder(src), chat_template=read_chat_template(src),
                              model_name=model_name)
    for warning in calib.warnings:
        reporter.send("warning", message=warning)
    record = calib.record()
    source_sha = weights_fingerprint(src)
    if cached_matches(Path(final), source_sha, record["sha256"]):
        from engine.backends.gguf.imatrix_file import read_imatrix

        data = read_imatrix(final)
        return {"cached": True, "record": record, "entries": len(data.entries), "chunks": data.chunk_count}
    data = compute_imatrix(reporter, src, calib.samples, threads, converter)
    data.datasets = [record["data"]]
    data.chunk_size = options.seq_len
    data.meta = {SOURCE_KEY: source_sha, CALIBRATION_KEY: record["sha256"]}
    from engine.backends.gguf.imatrix_file import write_gguf_imatrix

    write_gguf_imatrix(Path(part), data)
    reporter.finish({"cached": False, "record": record, "entries": len(data.entries), "chunks": data.chunk_count})


def compute_imatrix(reporter: ChildReporter | None, source: Path, samples: list[list[int]], threads: int,
                    converter: str | None, dtype: str = "auto") -> ImatrixData:
    """Run every sample through the model with hooks on its linear layers; entries named as in the GGUF."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    if reporter is not None:
        reporter.send("phase", message="Loading the model")
    model = _load_model(source, dtype)
    names = gguf_names(model, source, converter)
    if not names:
        raise QuantDeskError(
            f"None of {source.name}'s layers could be matched to llama.cpp's tensor names, so no importance "
            "matrix can be computed; give one made by llama-imatrix with --imatrix FILE."
        )
    sums: dict[str, Any] = {}
    counts: dict[str, int] = {}

    def hook(name: str) -> Any:
        def pre(_module: Any, args: tuple[Any, ...]) -> None:
            x = args[0].detach()
            x = x.reshape(-1, x.shape[-1]).to(torch.float32)
            total = (x * x).sum(dim=0, dtype=torch.float64)
            if name in sums:
                sums[name] += total
            else:
                sums[name] = total
            counts[name] = counts.get(name, 0) + int(x.shape[0])
        return pre

    handles = [module.register_forward_pre_hook(hook(gguf)) for module, gguf in names]
    body = getattr(model, getattr(model, "base_model_prefix", ""), None)
    run = body if isinstance(body, torch.nn.Module) and body is not model else model  # skips the lm_head
    started = time.monotonic()
    try:
        with torch.inference_mode():
            for i, sample in enumerate(samples):
                if reporter is not None and reporter.cancelled:
                    raise JobCancelled()
                run(input_ids=torch.tensor([sample], dtype=torch.long), use_cache=False)
                if reporter is not None:
                    done = i + 1
                    eta = (time.monotonic() - started) / done * (len(samples) - done)
                    reporter.send("sample", index=done, count=len(samples), eta_s=eta)
    finally:
        for h in handles:
            h.remove()
    import numpy as np

    entries = {name: Entry(sums[name].numpy().astype(np.float32).reshape(1, -1),
                           np.array([float(counts[name])], dtype=np.float32)) for name in sorted(sums)}
    return ImatrixData(entries, chunk_count=len(samples), chunk_size=len(samples[0]) if samples else 0)


def _load_model(source: Path, dtype: str) -> Any:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    from engine.trust import explain_loader_error, pickle_allowed

    transformers.utils.logging.disable_progress_bar()  # progress is the job's own events
    if dtype == "auto":
        dtype = "float32" if _fits_in_float32(source) else "bfloat16"
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(source), dtype=getattr(torch, dtype), trust_remote_code=False, low_cpu_mem_usage=True,
            **({} if pickle_allowed() else {"use_safetensors": True}))
    except QuantDeskError:
        raise
    except Exception as err:  # noqa: BLE001 - transformers' failures become one sentence
        text = explain_loader_error(err, source.name)
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise QuantDeskError(text or f"transformers could not load {source.name} to compute the importance "
                             f"matrix ({type(err).__name__}: {first}); give one with --imatrix FILE.") from None
    model.eval()
    return model


def _fits_in_float32(source: Path) -> bool:
    """float32 doubles a bf16 model's memory: use it while that leaves a quarter of the free RAM."""
    import psutil

    weights = sum(p.stat().st_size for p in Path(source).glob("*.safetensors")) or \
        sum(p.stat().st_size for p in Path(source).glob("*.bin"))
    return weights * 2 < psutil.virtual_memory().available * 0.75


def gguf_names(model: Any, source: Path, converter: str | None) -> list[tuple[Any, str]]:
    """(module, GGUF weight name) for every linear layer in a ``blk.N`` block, by the converter's own map."""
    import gguf
    import torch

    arch = _gguf_arch(source, converter)
    n_blocks = int(getattr(model.config, "num_hidden_layers", 0) or getattr(model.config, "n_layer", 0) or 0)
    if arch is None or not n_blocks:
        return []
    tmap = gguf.get_tensor_name_map(arch, n_blocks)
    out = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        mapped = tmap.get_name(f"{name}.weight", try_suffixes=(".weight",))
        if mapped and mapped.startswith("blk."):
            out.append((module, mapped))
    return out


def _gguf_arch(source: Path, converter: str | None) -> Any:
    """The converter's architecture for the source (gguf.MODEL_ARCH), None when it names none."""
    import json

    from engine.backends.gguf.convert import _api, load_converter

    mod = load_converter(converter)
    model_base, get_arch, get_class, model_type = _api(mod)
    try:
        hparams = json.loads((source / "config.json").read_text(encoding="utf-8"))
        name = get_arch(hparams, model_type.TEXT) if model_type is not None else get_arch(hparams)
        return getattr(get_class(name), "model_arch", None)
    except Exception:  # noqa: BLE001 - an architecture the converter does not know: the plan refused it already
        return None
