"""The child-process side of FP8: rewrite the checkpoint tensor by tensor, then reload and check it.

Runs under ``engine.jobs.run_in_child``; talks to the parent only through the
reporter. Which tensors become FP8 is read from the model's real linear layers
(built on the meta device, so nothing is allocated); the scales and the E4M3
rounding are compressed-tensors' own (``calculate_qparams`` and its
float-quantized compressor), so the folder is what llm-compressor would write
for the FP8_DYNAMIC scheme. One tensor is in memory at a time while writing.
"""

from __future__ import annotations

import functools
import gc
import json
import re
import shutil
from pathlib import Path
from typing import Any

from engine.backends.child_report import PROBE_TEXT, TargetReporter, raise_if_disk_full
from engine.errors import QuantDeskError

# Files beside the weights a user expects to travel with the model (the weights and config are rewritten).
_COPIED_SUFFIXES = (".json", ".jinja", ".model", ".txt", ".tiktoken", ".py")
_NOT_COPIED = ("config.json", "model.safetensors.index.json")
# Mixture-of-experts routers stay in 16 bits, as vLLM expects.
_ROUTER = re.compile(r"(^|\.)(gate|router|shared_expert_gate)$")
_ST_DTYPES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32", "float8_e4m3fn": "F8_E4M3"}


def quantize_checkpoint(reporter: Any, source: str, part: str, name: str, threads: int | None) -> dict[str, Any]:
    """Write ``source`` as FP8 into ``part``, reload and check it; returns what the sidecar records."""
    import os

    report = TargetReporter(reporter)
    report.send("loading", 0.0, "Loading torch, transformers and compressed-tensors")
    os.environ["TQDM_DISABLE"] = "1"
    import torch
    import tqdm

    # This child reports through the reporter; compressed-tensors' own bars would only fill the terminal.
    tqdm.tqdm.__init__ = functools.partialmethod(tqdm.tqdm.__init__, disable=True)
    import transformers
    from transformers.utils import logging as hf_logging

    from engine.trust import forbid_remote_code

    forbid_remote_code()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        import compressed_tensors
    except Exception as err:
        raise QuantDeskError(
            f"compressed-tensors is installed but cannot be loaded ({type(err).__name__}: {err}); reinstall it "
            'with: pip install -U --force-reinstall "compressed-tensors>=0.20"'
        ) from None
    from loguru import logger

    logger.disable("compressed_tensors")
    src, out = Path(source), Path(part)
    report.send("loading", 0.5, f"Reading {src.name}'s layers")
    linears, ignored = linear_layers(src)
    out.mkdir(parents=True, exist_ok=True)
    try:
        quantized = _write_checkpoint(report, src, out, linears)
        report.send("saving", 0.0, f"Writing {name}'s config, tokenizer and chat template")
        _write_config(src, out, ignored)
        for path in src.iterdir():
            if path.is_file() and path.suffix in _COPIED_SUFFIXES and path.name not in _NOT_COPIED \
                    and not path.name.startswith("."):
                shutil.copy2(path, out / path.name)
    except OSError as err:
        raise_if_disk_full(err, name, out.parent)
        raise
    if not quantized:
        raise QuantDeskError(f"{src.name} has no linear layers FP8 can quantize; choose a GGUF type instead.")
    checked = verify_folder(out, report=report, name=name)
    if checked["reloaded_fp8_modules"] != len(quantized):
        raise QuantDeskError(
            f"The saved {name} reloaded with {checked['reloaded_fp8_modules']} of its {len(quantized)} FP8 layers; "
            'nothing was kept: upgrade them with: pip install -U transformers "compressed-tensors>=0.20"')
    return {"quantized_modules": len(quantized), "ignored_modules": ignored,
            **checked,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "compressed-tensors": compressed_tensors.__version__}}


def linear_layers(source: Path) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """{module name: (out, in)} of the linear layers to quantize, and the linear layers left in 16 bits.

    The model is built on the meta device from its config, so this costs no memory;
    the output layer (lm_head), mixture-of-experts routers and layers whose sizes
    FP8 kernels cannot tile (not multiples of 16) are left alone.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from engine.trust import explain_loader_error

    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    except Exception as err:
        translated = explain_loader_error(err, source.name)
        if translated:
            raise QuantDeskError(translated) from None
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise QuantDeskError(f"transformers does not know {source.name}'s architecture ({type(err).__name__}: "
                             f"{first}); upgrade transformers or choose a GGUF type.") from None
    head = model.get_output_embeddings()
    keep: dict[str, tuple[int, int]] = {}
    ignored: list[str] = []
    for module_name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        out_f, in_f = module.out_features, module.in_features
        if module is head or _ROUTER.search(module_name) or out_f % 16 or in_f % 16:
            ignored.append(module_name)
        else:
            keep[module_name] = (out_f, in_f)
    return keep, sorted(ignored)


def _write_checkpoint(report: TargetReporter, src: Path, out: Path, linears: dict[str, tuple[int, int]]) -> list[str]:
    """One output shard per source shard, same names; returns the modules written as FP8."""
    import torch
    from safetensors import safe_open

    from engine.inspect import read_safetensors_header

    shards = sorted(src.glob("*.safetensors"))
    headers = {shard: read_safetensors_header(shard) for shard in shards}
    total = sum(1 for h in headers.values() for k in h if k != "__metadata__")
    done = 0
    quantized: list[str] = []
    weight_map: dict[str, str] = {}
    for shard in shards:
        header = headers[shard]
        names = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
        layout = []  # (name, dtype, shape, source name or None when copied as bytes)
        for tensor in names:
            info = header[tensor]
            module = tensor.removesuffix(".weight")
            if tensor.endswith(".weight") and module in linears and info["dtype"] in ("BF16", "F16", "F32") \
                    and tuple(info["shape"]) == linears[module]:
                rows = int(info["shape"][0])
                layout.append((tensor, "F8_E4M3", info["shape"], tensor))
                layout.append((f"{module}.weight_scale", info["dtype"], [rows, 1], None))
                quantized.append(module)
            else:
                layout.append((tensor, info["dtype"], info["shape"], None))
        with safe_open(str(shard), "pt") as reader, open(shard, "rb") as raw, \
                _ShardWriter(out / shard.name, layout, header) as writer:
            data_start = 8 + int.from_bytes(raw.read(8), "little")
            for tensor in names:
                done += 1
                report.send("quantizing", done / total, f"Quantizing {tensor} ({done}/{total})",
                            force=done == total, tensor_index=done, tensor_count=total, tensor_name=tensor)
                module = tensor.removesuffix(".weight")
                if writer.is_quantized(tensor):
                    weight, scale = quantize_weight(reader.get_tensor(tensor))
                    if not bool(torch.isfinite(scale).all()):
                        raise QuantDeskError(f"{src.name}'s {tensor} holds NaN or infinite values; re-download "
                                             "the model (FP8 cannot represent them).")
                    writer.write(tensor, weight)
                    writer.write(f"{module}.weight_scale", scale)
                else:
                    writer.copy(tensor, raw, data_start)
        for tensor, *_ in layout:
            weight_map[tensor] = shard.name
    index = src / "model.safetensors.index.json"
    if index.is_file():
        data = json.loads(index.read_text(encoding="utf-8"))
        size = sum((out / s.name).stat().st_size for s in shards)
        data["metadata"] = {**(data.get("metadata") or {}), "total_size": size}
        data["weight_map"] = dict(sorted(weight_map.items()))
        (out / index.name).write_text(json.dumps(data, indent=2), encoding="utf-8")
    return quantized


def quantize_weight(weight: Any) -> tuple[Any, Any]:
    """(E4M3 weight, per-row scale in the weight's type), as compressed-tensors' FP8_DYNAMIC computes them."""
    import torch
    from compressed_tensors.compressors.naive_quantized.base import FloatQuantizationCompressor
    from compressed_tensors.quantization.utils import calculate_qparams

    scheme = fp8_scheme()
    with torch.no_grad():
        low, high = torch.aminmax(weight, dim=1, keepdim=True)
        scale, zero = calculate_qparams(low, high, scheme.weights)
        packed = FloatQuantizationCompressor.compress(
            {"weight": weight, "weight_scale": scale, "weight_zero_point": zero}, scheme)
    return packed["weight"], packed["weight_scale"]


@functools.cache
def fp8_scheme() -> Any:
    from compressed_tensors.quantization import preset_name_to_scheme

    from engine.backends.fp8.plan import SCHEME

    return preset_name_to_scheme(SCHEME, ["Linear"])


def quantization_config(ignored: list[str]) -> dict[str, Any]:
    """config.json's ``quantization_config``: what llm-compressor writes for FP8_DYNAMIC, read by transformers and vLLM."""
    import compressed_tensors
    from compressed_tensors.quantization import QuantizationConfig

    config = QuantizationConfig(config_groups={"group_0": fp8_scheme()}, ignore=ignored,
                                format="float-quantized", quantization_status="compressed")
    return {"quant_method": "compressed-tensors", "version": compressed_tensors.__version__,
            "sparsity_config": {}, "transform_config": {}, **config.model_dump(exclude={"quant_method"})}


def _write_config(src: Path, out: Path, ignored: list[str]) -> None:
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    config["quantization_config"] = quantization_config(ignored)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


class _ShardWriter:
    """A .safetensors file written front to back: the header from the layout first, then each tensor's bytes."""

    def __init__(self, path: Path, layout: list[tuple[str, str, list[int], str | None]],
                 source_header: dict[str, Any]) -> None:
        self._path = path
        self._quantized = {src for _n, _d, _s, src in layout if src is not None}
        self._source = source_header
        self._offsets: dict[str, tuple[int, int]] = {}
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for tensor, dtype, shape, _src in layout:
            numel = 1
            for dim in shape:
                numel *= int(dim)
            size = numel * {"F8_E4M3": 1, "BF16": 2, "F16": 2, "F32": 4}.get(dtype, 0)
            if _src is None and tensor in source_header:  # copied as it is
                start, end = source_header[tensor]["data_offsets"]
                size = int(end) - int(start)
            header[tensor] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
            self._offsets[tensor] = (offset, offset + size)
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        self._header = raw + b" " * (-len(raw) % 8)
        self._data_start = 8 + len(self._header)
        self._order = [t for t, *_ in layout]
        self._next = 0

    def __enter__(self) -> _ShardWriter:
        self._file = open(self._path, "wb")  # noqa: SIM115 - closed in __exit__
        self._file.write(len(self._header).to_bytes(8, "little") + self._header)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._file.close()

    def is_quantized(self, tensor: str) -> bool:
        return tensor in self._quantized

    def write(self, tensor: str, value: Any) -> None:
        import torch

        self._expect(tensor)
        data = value.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
        start, end = self._offsets[tensor]
        if data.nbytes != end - start:
            raise RuntimeError(f"{tensor}: {data.nbytes} bytes, expected {end - start}")
        self._file.write(memoryview(data))

    def copy(self, tensor: str, reader: Any, data_start: int) -> None:
        """The source tensor's bytes, unchanged, read in pieces from the open source shard."""
        self._expect(tensor)
        start, end = self._source[tensor]["data_offsets"]
        reader.seek(data_start + int(start))
        left = int(end) - int(start)
        while left:
            chunk = reader.read(min(left, 64 * 1024**2))
            if not chunk:
                raise QuantDeskError(f"{self._path.name} of the source ends early; re-download the model.")
            self._file.write(chunk)
            left -= len(chunk)

    def _expect(self, tensor: str) -> None:
        expected = self._order[self._next]
        if tensor != expected:
            raise RuntimeError(f"wrote {tensor} where {expected} belongs")
        self._next += 1


def verify_folder(folder: Path, *, report: TargetReporter | None = None, name: str = "") -> dict[str, Any]:
    """Open every shard, reload the folder with transformers and run it once on a short text.

    Raises QuantDeskError (one sentence) when a shard is unreadable, the folder
    does not reload, or the predictions are not finite numbers.
    """
    import torch
    from safetensors import safe_open

    name = name or folder.name
    if report:
        report.send("verifying", 0.0, f"Reading {name} back")
    shards = sorted(folder.glob("*.safetensors"))
    try:
        if not shards:
            raise FileNotFoundError("no .safetensors file")
        for shard in shards:
            with safe_open(str(shard), "pt") as reader:
                reader.keys()
        if report:
            report.send("verifying", 0.2, f"Reloading {name} with transformers")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(folder, device_map="cpu", trust_remote_code=False,
                                                     use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except Exception as err:  # noqa: BLE001 - safetensors', torch's and transformers' errors become one sentence
        first = (str(err).strip().splitlines() or [""])[0][:160]
        raise QuantDeskError(f"The FP8 model {name} does not reload ({type(err).__name__}: {first}); nothing was "
                             "kept: check the disk and its free space, then quantize again.") from None
    model.eval()
    loaded = sum(hasattr(m, "quantization_scheme") for m in model.modules())
    ids = tokenizer(PROBE_TEXT, return_tensors="pt")["input_ids"]
    if report:
        report.send("verifying", 0.5, f"Running {name} once (transformers expands FP8 to 16 bits on a CPU)")
    with torch.no_grad():
        logits = model(ids).logits.float()
    finite = bool(torch.isfinite(logits).all())
    del model
    gc.collect()
    if not finite:
        raise QuantDeskError(f"The FP8 model {name} produces invalid numbers (NaN/inf); nothing was kept: "
                             "choose Q8_0 or INT8 for this model.")
    if report:
        report.send("verifying", 1.0, f"{name} reloads and gives finite predictions")
    return {"reloaded_fp8_modules": loaded}
