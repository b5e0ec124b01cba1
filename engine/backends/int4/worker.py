"""The child-process side of GPTQ/AWQ: calibrate, quantize layer by layer, save, reload, verify.

Runs under ``engine.jobs.run_in_child``; talks to the parent only through the
reporter. gptqmodel's own progress bars and logs go to /dev/null (the
parent's terminal and the window get QuantDesk's events instead); its loop
reports each finished module and layer through the callbacks it offers
(``subset_callback`` / ``layer_callback``), which become ``quantizing`` events.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import time
from pathlib import Path
from typing import Any

from engine.backends.child_report import PROBE_TEXT, TargetReporter, child_device, raise_if_disk_full
from engine.errors import JobCancelled, QuantDeskError

_SUPPORT_FILES = ("chat_template.jinja", "chat_template.json", "generation_config.json")


class _LoopProgress:
    """gptqmodel's loop callbacks as ``calibrating`` / ``quantizing`` events; stops the loop on cancel."""

    def __init__(self, report: TargetReporter, method: str, layers: int, per_layer: int) -> None:
        self._report = report
        self._method = method
        self._layers = max(1, layers)
        self._total = max(1, layers * per_layer)
        self._done = 0
        self._started = False

    def _check(self) -> None:
        if self._report.cancelled:
            raise JobCancelled()

    def subset_event(self, *, stage: str, layer_idx: int, subset_index: int, subset_total: int,
                     module_names: list[str], processor: Any = None, **_: Any) -> None:
        self._check()
        if stage == "forward_start" and not self._started:
            self._started = True
            self._report.send("quantizing", 0.0, f"{self._method}: layer 1 of {self._layers}",
                              tensor_index=0, tensor_count=self._total)
        if stage == "quant_complete":
            self._done = min(self._total, self._done + len(module_names))
            name = f"layers.{layer_idx}.{module_names[-1]}" if module_names else None
            self._report.send("quantizing", self._done / self._total,
                              f"{self._method}: layer {layer_idx + 1} of {self._layers}, {name}",
                              force=False, tensor_index=self._done, tensor_count=self._total, tensor_name=name)

    def layer_complete(self, *, layer_idx: int, submodule_finalized: bool, **_: Any) -> None:
        self._check()
        if submodule_finalized:
            self._report.send("quantizing", min(1.0, self._done / self._total),
                              f"{self._method}: layer {layer_idx + 1} of {self._layers} done",
                              tensor_index=self._done, tensor_count=self._total,
                              layer_index=layer_idx + 1, layer_count=self._layers)


def quantize_all(reporter: Any, source: str, jobs: list[dict[str, Any]], device: str, threads: int | None,
                 calibration: dict[str, Any], compute_dtype: str, source_dtype: str) -> list[dict[str, Any]]:
    """Quantize ``source`` once per job into each job's ``part`` folder; returns what was verified."""
    from engine.trust import check_pickle, forbid_remote_code

    source = str(Path(source).resolve())
    jobs = [{**job, "part": str(Path(job["part"]).resolve())} for job in jobs]
    check_pickle(Path(source))
    first = TargetReporter(reporter, 0, jobs[0]["format"])
    first.send("loading", 0.0, "Reading the tokenizer and the calibration texts")
    calib = _calibration(first, Path(source), calibration)  # before the chdir below: the file may be relative
    first.send("loading", 0.3, "Loading torch, transformers and gptqmodel")
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, int(threads or 0))))
    with _quiet(), _private_cwd():
        import torch
        import transformers

        forbid_remote_code()
        device = child_device(torch, device, first, "This PyTorch build cannot use the GPU, so calibration runs "
                              "on the CPU, which takes much longer.")
        if device == "cuda":
            compute_dtype = source_dtype
        if threads:
            torch.set_num_threads(int(threads))
        try:
            import gptqmodel
        except Exception as err:
            raise QuantDeskError(
                f"gptqmodel is installed but cannot be loaded ({type(err).__name__}: {str(err)[:200]}); "
                'reinstall it with: pip install -U --force-reinstall "gptqmodel==7.6.0"'
            ) from None
        versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                    "gptqmodel": gptqmodel.__version__}
        results = []
        for index, job in enumerate(jobs):
            report = TargetReporter(reporter, index, job["format"])
            try:
                result = _quantize_one(report, Path(source), job, device, calib, compute_dtype, source_dtype)
            except (QuantDeskError, JobCancelled):
                raise
            except Exception as err:
                raise_if_disk_full(err, job["name"], Path(job["part"]).parent)
                raise
            result["versions"] = versions
            result["calibration"] = calib.record()
            results.append(result)
    return results


def _calibration(report: TargetReporter, source: Path, options: dict[str, Any]) -> Any:
    """The calibration samples, built from the model's own tokenizer; its warnings go out as events."""
    from engine.calibration import CalibrationOptions, build_calibration, hf_encoder
    from engine.inspect import model_name
    from engine.modelcard import read_chat_template

    opts = CalibrationOptions(**options)
    report.send("calibrating", 0.0, f"Preparing {opts.samples} calibration samples of {opts.seq_len} tokens")
    calib = build_calibration(opts, hf_encoder(source), chat_template=read_chat_template(source),
                              model_name=model_name(source))
    for warning in calib.warnings:
        report.send("warning", 0.0, warning)
    report.send("calibrating", 0.5, f"Calibration: {len(calib.samples)} samples from {calib.described}")
    return calib


def _quantize_one(report: TargetReporter, source: Path, job: dict[str, Any], device: str, calib: Any,
                  compute_dtype: str, source_dtype: str) -> dict[str, Any]:
    import torch
    from gptqmodel import BACKEND, GPTQModel
    from gptqmodel.quantization.config import AWQConfig, GPTQConfig

    part = Path(job["part"])
    name, label, method = job["name"], job["label"], job["method"]
    settings = dict(job["settings"])
    fast_awq = False
    if method == "awq" and device == "cpu":
        from engine.backends.int4.awq_cpu import install

        fast_awq = install(source_dtype, float32_model=compute_dtype == "float32")
        if not fast_awq:  # another gptqmodel: its AWQ packs only from a 16-bit model
            compute_dtype = source_dtype
    config_cls = GPTQConfig if method == "gptq" else AWQConfig
    # Finished layers stay in memory: offloading them to disk would leave files behind a killed child.
    qconfig = config_cls(**settings, offload_to_disk=False)
    report.send("loading", 0.6, f"Loading {source.name} for {label}")
    try:
        model = GPTQModel.load(str(source), qconfig, device=device, dtype=getattr(torch, compute_dtype),
                               trust_remote_code=False)
    except Exception as err:
        from engine.trust import explain_loader_error

        translated = explain_loader_error(err, source.name)
        if translated:
            raise QuantDeskError(translated) from None
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise QuantDeskError(f"gptqmodel could not load {source.name} for {label} ({type(err).__name__}: "
                             f"{first}); choose a GGUF type or bnb-nf4 instead.") from None
    layers = int(getattr(model.model.config, "num_hidden_layers", 0) or getattr(
        getattr(model.model.config, "text_config", None), "num_hidden_layers", 0) or 1)
    per_layer = max(1, int(job.get("modules_per_layer") or 7))
    progress = _LoopProgress(report, method.upper(), layers, per_layer)
    model.layer_callback = progress
    model.subset_callback = progress
    samples = [{"input_ids": s, "attention_mask": [1] * len(s)} for s in calib.samples]
    report.send("calibrating", 0.8, f"Running {len(samples)} calibration samples through {source.name}")
    backend = BACKEND.AWQ_TORCH if method == "awq" and device == "cpu" else BACKEND.AUTO
    started = time.monotonic()
    model.quantize(samples, batch_size=1, backend=backend)
    quantize_s = time.monotonic() - started
    quantized = _count_quantized(model.model)
    if quantized == 0:
        raise QuantDeskError(f"gptqmodel quantized no layers of {source.name}; this architecture is not supported "
                             f"for {label}, so choose a GGUF type instead.")

    report.send("saving", 0.0, f"Saving {name}")
    recast = _restore_dtype(model.model, getattr(torch, source_dtype))
    part.mkdir(parents=True, exist_ok=True)
    model.save(str(part))
    for support in _SUPPORT_FILES:
        if (source / support).is_file() and not (part / support).exists():
            shutil.copy2(source / support, part / support)
    _tidy_config(part, source_dtype)
    del model
    _free_memory(torch)

    report.send("verifying", 0.0, f"Reloading {name} with transformers to check it")
    result = _verify(part, label, device)
    report.send("verifying", 1.0, f"{name} reloads with transformers and gives finite logits")
    result.update(format=job["format"], device=device, dtype=source_dtype, compute_dtype=compute_dtype,
                  quantized_modules=quantized, recast_tensors=recast, quantize_s=round(quantize_s, 1))
    if fast_awq:
        result["awq_search"] = "QuantDesk's float32 search for gptqmodel 7.6 (engine/backends/int4/awq_cpu.py)"
    return result


def _count_quantized(model: Any) -> int:
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear

    return sum(isinstance(m, BaseQuantLinear) for m in model.modules())


def _restore_dtype(model: Any, dtype: Any) -> int:
    """Put the tensors gptqmodel left unquantized (embeddings, norms) back in the source's type.

    Calibrating on the CPU holds the model in float32; saved as it is, those tensors
    would be twice their size. The quantized layers' scales are float16 either way.
    """
    count = 0
    for param in model.parameters():
        if param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)
            count += 1
    config = model.config
    with contextlib.suppress(Exception):
        config.dtype = dtype
    return count


def _tidy_config(part: Path, dtype: str) -> None:
    """The saved config names the source's type; no local path of this machine travels with the model."""
    import json

    path = part / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["dtype"] = dtype
    config.pop("torch_dtype", None)
    meta = config.get("quantization_config", {}).get("meta")
    if isinstance(meta, dict):
        meta.pop("offload_to_disk_path", None)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    qpath = part / "quantize_config.json"
    if qpath.is_file():
        qconfig = json.loads(qpath.read_text(encoding="utf-8"))
        if isinstance(qconfig.get("meta"), dict):
            qconfig["meta"].pop("offload_to_disk_path", None)
        qpath.write_text(json.dumps(qconfig, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _verify(part: Path, label: str, device: str) -> dict[str, Any]:
    """Reload with plain transformers (as a user would) and check the logits on a probe text."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(part, device_map="cuda" if device == "cuda" else "cpu",
                                                     trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(part, trust_remote_code=False)
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise QuantDeskError(
            f"The saved {label} model does not reload with transformers ({type(err).__name__}: {first}); "
            f'nothing was kept. Upgrade them with: pip install -U transformers optimum "gptqmodel==7.6.0"'
        ) from None
    model.eval()
    reloaded = _count_quantized(model)
    ids = tokenizer(PROBE_TEXT, return_tensors="pt")["input_ids"].to(model.device)
    with torch.no_grad():
        logits = model(ids).logits.float()
    if reloaded == 0:
        raise QuantDeskError(f"The saved {label} model reloaded without its quantized layers; nothing was kept. "
                             'Upgrade them with: pip install -U transformers optimum "gptqmodel==7.6.0"')
    if not torch.isfinite(logits).all():
        raise QuantDeskError(f"The saved {label} model produces invalid numbers (NaN/inf); nothing was kept. "
                             "Try --damp 0.1, more calibration samples, or a GGUF type.")
    # How sure the model is of the next token on a plain sentence: a sanity figure for the record.
    probs = logits[0, :-1].log_softmax(-1)
    nll = -probs.gather(-1, ids[0, 1:].unsqueeze(-1).to(probs.device)).mean().item()
    del model
    _free_memory(torch)
    return {"reloaded_modules": reloaded, "probe_nll": round(nll, 4)}


@contextlib.contextmanager
def _private_cwd():
    """gptqmodel writes a ``logs/`` folder into the current directory: give it a temporary one."""
    import tempfile

    previous = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="quantdesk-gptqmodel-") as scratch:
        os.chdir(scratch)
        try:
            yield
        finally:
            os.chdir(previous)


@contextlib.contextmanager
def _quiet():
    """gptqmodel's banners, bars and tables go to /dev/null instead of the user's terminal."""
    if os.environ.get("QUANTDESK_WORKER_LOGS"):
        yield
        return
    import sys

    saved = []
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for fd in (1, 2):
            saved.append((fd, os.dup(fd)))
            os.dup2(devnull, fd)
        yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


def _free_memory(torch: Any) -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
