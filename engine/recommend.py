"""Which format to turn a model into on this machine: the decision tree of DESIGN.md as ranked options.

Public API:

- ``recommend(model, machine, ctx=None) -> Recommendation``: options best first
- ``Option`` / ``Recommendation`` dataclasses with ``to_dict()`` (the ``--json`` contract)

The tree, with F the model's FP16 size and V the usable GPU memory (all GPUs):

- no usable GPU: GGUF Q4_K_M, then Q5_K_M / Q6_K / Q8_0 when RAM allows
- V ≥ 2F: keep FP16; a Hopper GPU (compute capability 9.x) lists FP8 right after
- F ≤ V < 2F: bitsandbytes INT8 (FP8 first on Hopper)
- F/4 < V < F: 4-bit: AWQ, then GPTQ (GPTQ first for a mixture-of-experts model, which AWQ
  handles poorly), NF4 as the choice without calibration; GGUF Q4_K_M (with partial offload when
  it does not fit whole); FP8 first on Hopper when it fits
- V ≤ F/4: GGUF 4-bit with partial offload, or a smaller model
- under ~3B parameters: 4-bit hurts most, so 8-bit / 6-bit / FP16 come first everywhere

Options that would not fit sink below those that fit or fit tightly, keeping the
tree's order within each group. An option whose backend is missing stays in
place but says what to install (``available`` is False).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import QuantDeskError
from engine.estimate import Estimate, context_for, estimate, gguf_split
from engine.formats import FORMATS, Format
from engine.hardware import MachineInfo
from engine.inspect import ModelInfo
from engine.units import format_bytes

SMALL_MODEL_PARAMS = 3_000_000_000
EXACT_SIZE_LIMIT_S = 15.0  # llama.cpp's dry run of every GGUF option may take this long; else estimates stand
GPU_FITS, GPU_TIGHT = 0.90, 1.00  # share of VRAM
RAM_FITS, RAM_TIGHT = 0.80, 0.95  # share of RAM: the OS and other programs need the rest
FITS, TIGHT, NO = "fits", "tight", "no"

# The importance-matrix types (IQ*) rank above the k-quants of the same size: calibrated, they lose less.
_CPU_BIG = ["gguf:Q4_K_M", "gguf:Q5_K_M", "gguf:Q6_K", "gguf:Q8_0", "gguf:IQ4_XS", "gguf:Q4_K_S",
            "gguf:IQ3_M", "gguf:Q3_K_M", "gguf:IQ3_XXS", "gguf:IQ2_XS", "gguf:Q2_K", "hf:bnb-nf4", "hf:bnb-int8",
            "hf:fp16"]
_CPU_SMALL = ["gguf:Q8_0", "gguf:Q6_K", "gguf:Q5_K_M", "gguf:F16", "hf:fp16", "hf:bnb-int8", "gguf:Q4_K_M",
              "hf:bnb-nf4"]
_GPU_ROOMY = ["hf:fp16", "hf:fp8", "hf:bnb-int8", "gguf:Q8_0", "gguf:Q6_K", "gguf:Q5_K_M", "gguf:Q4_K_M",
              "hf:bnb-nf4"]
_GPU_FP16_SIZE = ["hf:fp8", "hf:bnb-int8", "gguf:Q8_0", "hf:fp16", "gguf:Q6_K", "gguf:Q5_K_M", "gguf:Q4_K_M",
                  "hf:bnb-nf4"]
_GPU_4BIT = ["hf:fp8", "hf:awq-4bit", "hf:gptq-4bit", "hf:bnb-nf4", "gguf:Q4_K_M", "gguf:Q5_K_M",
             "gguf:Q4_K_S", "gguf:IQ4_XS", "hf:bnb-int8", "gguf:Q6_K", "gguf:Q8_0", "gguf:Q3_K_M"]
_GPU_TINY = ["gguf:Q4_K_M", "gguf:IQ4_XS", "gguf:IQ3_M", "gguf:Q3_K_M", "gguf:IQ3_XXS", "gguf:Q2_K",
             "hf:bnb-nf4", "hf:awq-4bit", "hf:gptq-4bit", "gguf:Q5_K_M", "gguf:Q6_K"]
_CALIBRATED = ("hf:awq-4bit", "hf:gptq-4bit")
_IMATRIX_WHY = "Computed with an importance matrix from calibration text (--imatrix auto), it loses less."


def situation_text(situation: str, model: ModelInfo, machine: MachineInfo) -> str:
    """The tree's row for this machine and model, in one plain sentence with the numbers."""
    fp16, vram = format_bytes(model.parameters * 2), format_bytes(machine.vram_total_bytes)
    return {
        "cpu": "No usable GPU: GGUF runs fastest on the CPU.",
        "gpu-roomy": f"The GPU's {vram} holds at least twice the FP16 size ({fp16}): keep full precision.",
        "gpu-fp16-size": f"The GPU's {vram} holds about the FP16 size ({fp16}): 8-bit halves it with negligible loss.",
        "gpu-4bit": f"The GPU's {vram} is less than the FP16 size ({fp16}): 4-bit formats come first.",
        "gpu-tiny": f"The GPU's {vram} is a quarter of the FP16 size ({fp16}) or less: 4-bit with part of the "
        "model on the CPU, several GPUs, or a smaller model.",
    }[situation]


@dataclass
class Option:
    format: str
    label: str
    size_bytes: int
    peak_bytes: int
    device: str  # "cuda" | "cpu" | "split"
    fit: str  # "fits" | "tight" | "no"
    why: str
    available: bool = True
    install_hint: str | None = None
    gpu_layers: int | None = None  # GGUF split: layers on the GPU (llama.cpp -ngl)
    layers: int | None = None
    kv_cache_bytes: int = 0
    gpu_peak_bytes: int | None = None
    cpu_peak_bytes: int | None = None
    size_exact: bool = False  # size_bytes from llama.cpp's dry run, not estimated

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Recommendation:
    context: int
    situation: str
    options: list[Option]
    notes: list[str] = field(default_factory=list)
    model: ModelInfo | None = None
    machine: MachineInfo | None = None

    @property
    def best(self) -> Option | None:
        return self.options[0] if self.options else None

    def to_dict(self) -> dict[str, Any]:
        m, mc = self.model, self.machine
        return {
            "context": self.context,
            "situation": self.situation,
            "options": [o.to_dict() for o in self.options],
            "notes": list(self.notes),
            "model": None if m is None else {
                "path": m.path, "kind": m.kind, "architecture": m.architecture, "parameters": m.parameters,
                "fp16_bytes": m.parameters * 2, "context_length": m.context_length,
            },
            "machine": None if mc is None else {
                "ram_total_bytes": mc.ram_total_bytes, "vram_total_bytes": mc.vram_total_bytes,
                "gpus": [g.name for g in mc.gpus], "llama_gpu_offload": bool(mc.llama_gpu_offload),
                "overrides": dict(mc.overrides),
            },
        }


# --------------------------------------------------------------------------- availability


def _availability(fmt: Format) -> tuple[bool, str | None]:
    """(usable now, what to do otherwise) from the backend registry."""
    if fmt.backend == "none":
        return True, None
    from engine.backends.registry import backend_for

    try:
        backend = backend_for(fmt)
    except QuantDeskError:
        return False, "Not available in QuantDesk yet."
    hint = backend.install_hint()
    return hint is None, hint


# --------------------------------------------------------------------------- the tree


def _situation(model: ModelInfo, machine: MachineInfo) -> str:
    vram = machine.vram_total_bytes
    if not machine.gpus or vram <= 0:
        return "cpu"
    fp16 = model.parameters * 2
    if vram >= 2 * fp16:
        return "gpu-roomy"
    if vram >= fp16:
        return "gpu-fp16-size"
    if vram > fp16 / 4:
        return "gpu-4bit"
    return "gpu-tiny"


def _order(model: ModelInfo, machine: MachineInfo, situation: str) -> list[str]:
    small = model.parameters < SMALL_MODEL_PARAMS
    if situation == "cpu":
        order = list(_CPU_SMALL if small else _CPU_BIG)
    else:
        order = list({"gpu-roomy": _GPU_ROOMY, "gpu-fp16-size": _GPU_FP16_SIZE, "gpu-4bit": _GPU_4BIT,
                      "gpu-tiny": _GPU_TINY}[situation])
        gpu = machine.best_gpu
        cc = gpu.cc_tuple if gpu else (0, 0)
        if cc < (8, 9):  # FP8 tensor cores arrived with Ada (8.9) and Hopper (9.0)
            order = [f for f in order if f != "hf:fp8"]
        elif cc[0] < 9 and "hf:fp8" in order:  # Ada: a choice, not the first one
            order.remove("hf:fp8")
            order.insert(min(3, len(order)), "hf:fp8")
        if any(not _availability(FORMATS[f])[0] for f in _CALIBRATED):
            # "AWQ/GPTQ where available": without a backend they follow the formats QuantDesk can make
            order = [f for f in order if f not in _CALIBRATED] + [f for f in order if f in _CALIBRATED]
        if model.experts and "hf:awq-4bit" in order and "hf:gptq-4bit" in order:
            # AWQ's scale search handles routed experts poorly: GPTQ first for a mixture-of-experts model
            i, j = order.index("hf:awq-4bit"), order.index("hf:gptq-4bit")
            if i < j:
                order[i], order[j] = order[j], order[i]
        if small:  # 4-bit hurts small models most: 8-bit and 6-bit first
            order = [f for f in order if FORMATS[f].bits_per_weight >= 5] + [
                f for f in order if FORMATS[f].bits_per_weight < 5]
    order = [f for f in order if f in FORMATS]
    if model.kind == "gguf":  # a GGUF file can only be re-quantized by llama.cpp
        order = [f for f in order if f.startswith("gguf:")]
        if model.quantized and model.parameters:
            # Re-quantizing cannot bring back precision: only smaller types make sense.
            source_bpw = model.bytes_on_disk * 8 / model.parameters
            smaller = [f for f in order if FORMATS[f].bits_per_weight < 0.9 * source_bpw]
            order = smaller or order[-1:]
    return order


def _fit(peak: int, budget: int, fits: float, tight: float) -> str:
    if budget > 0 and peak <= budget * fits:
        return FITS
    if budget > 0 and peak <= budget * tight:
        return TIGHT
    return NO


def _place(model: ModelInfo, machine: MachineInfo, fmt: Format, n_ctx: int) -> tuple[Option, Estimate]:
    """Where ``fmt`` would run and whether it fits there."""
    ram, vram = machine.ram_total_bytes, machine.vram_total_bytes
    opt = Option(fmt.id, fmt.label, 0, 0, "cpu", NO, "", layers=model.layers)
    if machine.gpus:
        est = estimate(model, fmt, n_ctx, "cuda")
        fit = _fit(est.peak_bytes, vram, GPU_FITS, GPU_TIGHT)
        if fit != NO or fmt.family == "hf":
            opt.device, opt.fit, opt.gpu_peak_bytes = "cuda", fit, est.peak_bytes
            if fmt.family == "gguf":
                opt.gpu_layers = model.layers
        else:
            split = gguf_split(model, fmt, n_ctx, vram)
            if split.gpu_layers > 0:
                est = estimate(model, fmt, n_ctx, "cuda")
                opt.device, opt.gpu_layers = "split", split.gpu_layers
                opt.gpu_peak_bytes, opt.cpu_peak_bytes = split.gpu_bytes, split.cpu_bytes
                opt.fit = _fit(split.cpu_bytes, ram, RAM_FITS, RAM_TIGHT)
            else:
                est = estimate(model, fmt, n_ctx, "cpu")
                opt.device, opt.fit, opt.gpu_layers = "cpu", _fit(est.peak_bytes, ram, RAM_FITS, RAM_TIGHT), 0
                opt.cpu_peak_bytes = est.peak_bytes
    else:
        est = estimate(model, fmt, n_ctx, "cpu")
        opt.fit, opt.cpu_peak_bytes = _fit(est.peak_bytes, ram, RAM_FITS, RAM_TIGHT), est.peak_bytes
    opt.size_bytes, opt.peak_bytes, opt.kv_cache_bytes = est.size_bytes, est.peak_bytes, est.kv_cache_bytes
    return opt, est


_FORMAT_WHY = {
    "hf:fp16": "Keeps the original weights: no quality loss.",
    "hf:bnb-int8": "bitsandbytes INT8 halves the FP16 memory with negligible loss.",
    "hf:bnb-nf4": "bitsandbytes NF4 (4-bit, double quantization) needs about a quarter of FP16; small loss.",
    "hf:fp8": "FP8 E4M3 runs natively on this GPU: half the FP16 memory, near-lossless.",
    "hf:awq-4bit": "AWQ 4-bit is calibrated on sample text: a quarter of FP16 with less loss than plain 4-bit.",
    "hf:gptq-4bit": "GPTQ 4-bit is calibrated on sample text: a quarter of FP16 with less loss than plain 4-bit.",
}
_CPU_NOTE = {
    "bnb": "bitsandbytes runs slowly on the CPU; GGUF is the faster choice there.",
    "gptq": "Made for GPUs (vLLM, transformers); on the CPU it runs slowly and GGUF is the faster choice.",
    "awq": "Made for GPUs (vLLM, transformers); on the CPU it runs slowly and GGUF is the faster choice.",
    "fp8": "Runs natively only on Ada and Hopper GPUs; elsewhere choose INT8 or a GGUF type.",
}


def _format_why(fmt: Format) -> str:
    if fmt.id in _FORMAT_WHY:
        return _FORMAT_WHY[fmt.id]
    text = f"{fmt.label}: {fmt.quality_note or 'llama.cpp quantization'}"
    if fmt.delta_ppl:
        text += f" (perplexity +{fmt.delta_ppl:g} on Llama-3-8B)"
    return text + "."


def _memory_why(opt: Option, machine: MachineInfo, n_ctx: int) -> str:
    ram, vram = format_bytes(machine.ram_total_bytes), format_bytes(machine.vram_total_bytes)
    need = format_bytes(opt.peak_bytes)
    if opt.device == "split":
        return (f"{opt.gpu_layers} of {opt.layers} layers fit on the GPU ({vram}); the rest runs on the CPU, "
                f"slower (about {format_bytes(opt.cpu_peak_bytes)} of {ram} RAM at {n_ctx} tokens).")
    cards = len(machine.gpus)
    gpu = f"the GPU's {vram}" if cards < 2 else f"the {cards} GPUs' {vram} together"
    where = gpu if opt.device == "cuda" else f"{ram} of RAM"
    if opt.fit == NO:
        return f"Does not fit: needs about {need} at {n_ctx} tokens, more than {where}."
    if opt.fit == TIGHT:
        return f"Fits tightly: about {need} at {n_ctx} tokens in {where}; close other programs or use a shorter context."
    return f"Needs about {need} at {n_ctx} tokens in {where}."


def _why(opt: Option, fmt: Format, model: ModelInfo, machine: MachineInfo, n_ctx: int, situation: str,
         first: bool) -> str:
    parts = []
    if first:
        parts.append(situation_text(situation, model, machine))
        if fmt.id == "hf:fp8" and situation != "gpu-roomy":
            parts.append("Hopper GPUs run FP8 natively, so it comes first.")
    parts.append(_format_why(fmt))
    if model.parameters < SMALL_MODEL_PARAMS and fmt.bits_per_weight < 5:
        parts.append("4-bit hurts small models (under 3B parameters) most.")
    elif model.parameters < SMALL_MODEL_PARAMS and first:
        parts.append("Small models lose most from 4-bit, so 8-bit and 6-bit come first.")
    if fmt.family == "gguf" and opt.device == "cpu" and situation == "cpu" and fmt.id == "gguf:Q4_K_M":
        parts.append("Fastest on the CPU.")
    if fmt.family == "hf" and opt.device == "cpu" and fmt.backend in _CPU_NOTE:
        parts.append(_CPU_NOTE[fmt.backend])
    if fmt.id == "hf:awq-4bit" and model.experts:
        parts.append("AWQ handles mixture-of-experts models poorly, so GPTQ comes before it.")
    elif fmt.id == "hf:gptq-4bit" and model.experts and first:
        parts.append("GPTQ rather than AWQ: AWQ handles mixture-of-experts models poorly.")
    if fmt.family == "gguf" and (fmt.needs_imatrix or fmt.name.startswith("IQ")):
        parts.append(_IMATRIX_WHY)
    elif fmt.id == "gguf:Q4_K_M" and situation == "cpu" and first:
        parts.append("An importance matrix (--imatrix auto) lowers its loss further at the same size.")
    parts.append(_memory_why(opt, machine, n_ctx))
    if fmt.family == "gguf" and opt.device in ("cuda", "split") and machine.llama_gpu_offload is False:
        parts.append("Needs a CUDA build of llama.cpp (see the note).")
    if opt.install_hint:
        parts.append(opt.install_hint)
    return " ".join(parts)


def recommend(model: ModelInfo, machine: MachineInfo, ctx: int | None = None, *, exact: bool = True,
              outputs: Path | None = None) -> Recommendation:
    """Ranked options for turning ``model`` into something ``machine`` can run at ``ctx`` tokens.

    With ``exact``, GGUF options get their exact file size from llama.cpp's dry
    run where there is a GGUF to run it on: the model itself, or a kept
    intermediate (F16/BF16/F32) made from it in ``outputs``.
    """
    if model.parameters <= 0:
        raise QuantDeskError(f"{model.path} reports no parameters; cannot size it. Check the model files.")
    n_ctx = context_for(model, ctx)
    notes: list[str] = []
    if ctx is not None and n_ctx < ctx:
        notes.append(f"The model was trained for {model.context_length} tokens; planning for {n_ctx}, not {ctx}.")
    situation = _situation(model, machine)
    options: list[Option] = []
    for fid in _order(model, machine, situation):
        fmt = FORMATS[fid]
        opt, _ = _place(model, machine, fmt, n_ctx)
        opt.available, opt.install_hint = _availability(fmt)
        if fmt.family == "gguf" and model.kind != "gguf" and not model.gguf_convertible:
            opt.available = False
            opt.install_hint = f"llama.cpp's converter does not support {model.architecture}."
        options.append(opt)
    if exact:
        _exact_sizes(model, machine, options, notes, outputs)
    # Keep the tree's order, but never rank something that cannot fit above something that can.
    options.sort(key=lambda o: o.fit == NO)
    for i, opt in enumerate(options):
        opt.why = _why(opt, FORMATS[opt.format], model, machine, n_ctx, situation, first=i == 0)
    if options and all(o.fit == NO for o in options):
        notes.append("Nothing fits this machine at this context: try a shorter context (--ctx) or a smaller model.")
    if model.kind == "config":
        notes.append("Planned from config.json alone: download the weights before quantizing.")
    if model.kind == "gguf" and model.quantized:
        notes.append(f"This file is already {model.quantized}: re-quantizing adds loss; start from F16/BF16 if you can.")
    elif model.quantized:
        notes.append(f"This checkpoint is already quantized ({model.quantized}); sizes assume its original precision.")
    if model.pickle_only:
        notes.append("Only pickle (.bin) weights: prefer a safetensors download.")
    if machine.gpus and machine.llama_gpu_offload is False and any(
            o.format.startswith("gguf:") and o.device != "cpu" for o in options):
        notes.append(
            "The installed llama.cpp cannot use the GPU; for GGUF on the GPU reinstall it with "
            'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python.'
        )
    return Recommendation(n_ctx, situation, options, notes, model, machine)


# --------------------------------------------------------------------------- exact GGUF sizes


def gguf_input(model: ModelInfo, outputs: Path | None = None) -> Path | None:
    """The GGUF a dry run can start from: the model itself, or a kept intermediate of it in ``outputs``."""
    if model.kind == "gguf":
        return Path(model.path)
    if outputs is None or not Path(outputs).is_dir():
        return None
    from engine.artifacts import list_artifacts

    source = Path(model.path).resolve()
    for art in list_artifacts(Path(outputs)):
        if art.format in ("gguf:BF16", "gguf:F16", "gguf:F32") and art.source and Path(art.source) == source:
            return art.path
    return None


def exact_gguf_sizes(input_file: Path, format_ids: list[str], *, requantize: bool = False,
                     limit_s: float = EXACT_SIZE_LIMIT_S) -> dict[str, int]:
    """Each GGUF format's exact file size from llama.cpp's dry run of ``input_file`` (nothing is written).

    Empty when llama.cpp is missing or refuses, or when the run takes longer than
    ``limit_s`` (a very large file): the estimates then stand.
    """
    import threading

    from engine.backends.gguf.quantize import dry_run_worker
    from engine.jobs import CancelToken, run_in_child, run_job

    fids = [f for f in format_ids if FORMATS[f].gguf_ftype is not None]
    if not fids:
        return {}
    jobs = [{"type": FORMATS[f].name, "ftype": int(FORMATS[f].gguf_ftype or 0), "options": {},
             "requantize": requantize} for f in fids]
    cancel = CancelToken()
    timer = threading.Timer(limit_s, cancel.cancel)
    timer.start()
    try:
        sizes = run_job(run_in_child(dry_run_worker, str(input_file), jobs, 2, cancel=cancel, name="quantizer"))
    except Exception:  # noqa: BLE001 - cancelled, missing or refused: the estimates stand
        return {}
    finally:
        timer.cancel()
    return dict(zip(fids, sizes, strict=True))


def _exact_sizes(model: ModelInfo, machine: MachineInfo, options: list[Option], notes: list[str],
                 outputs: Path | None) -> None:
    """Replace the GGUF options' estimated file sizes (and the weights' share of the peak) with the dry run's."""
    source = gguf_input(model, outputs)
    gguf = [o for o in options if o.format.startswith("gguf:")]
    if source is None or not gguf:
        return
    sizes = exact_gguf_sizes(source, [o.format for o in gguf], requantize=bool(model.quantized))
    for opt in gguf:
        size = sizes.get(opt.format)
        if size is None:
            continue
        diff = size - opt.size_bytes
        opt.size_bytes, opt.size_exact = size, True
        opt.peak_bytes += diff
        if opt.device == "cuda" and opt.gpu_peak_bytes is not None:
            opt.gpu_peak_bytes += diff
            opt.fit = _fit(opt.gpu_peak_bytes, machine.vram_total_bytes, GPU_FITS, GPU_TIGHT)
        elif opt.device == "cpu":
            opt.cpu_peak_bytes = opt.peak_bytes
            opt.fit = _fit(opt.peak_bytes, machine.ram_total_bytes, RAM_FITS, RAM_TIGHT)
    if sizes:
        notes.append(f"GGUF file sizes are exact: llama.cpp's dry run of {Path(source).name} (nothing written).")
