"""The evaluation texts QuantDesk ships (written for the project) and the user's own files."""

from __future__ import annotations

from pathlib import Path

from engine.errors import QuantDeskError

TEXT_NAMES = ("prose", "chat", "code")
# Texts that stress tokenization (tables of numbers, tabs and deep indentation, non-Latin
# scripts): used to check that the transformers and llama.cpp paths agree. Not calibration texts.
VARIED_NAMES = ("technical", "indented", "scripts")
# About 20,000 tokens for a Llama-style tokenizer: what the perplexity benchmark uses.
BENCHMARK_CHARS = 90_000


def text_path(name: str) -> Path:
    from engine.resources import resource_path

    return resource_path("eval", f"{name}.txt")


def builtin_text(name: str) -> str:
    if name not in TEXT_NAMES + VARIED_NAMES:
        names = ", ".join(TEXT_NAMES + VARIED_NAMES)
        raise QuantDeskError(f"There is no built-in text '{name}'; choose one of {names}.")
    return text_path(name).read_text(encoding="utf-8")


def default_text() -> str:
    """All shipped texts once, in a fixed order: a few thousand tokens of prose, chat and code."""
    return "\n\n".join(builtin_text(n) for n in TEXT_NAMES)


def benchmark_text(chars: int = BENCHMARK_CHARS) -> str:
    """The shipped texts repeated in a fixed order up to ``chars`` characters.

    A repeat lies thousands of tokens back, far outside a 512-token chunk, so no
    chunk can see an earlier copy of itself.
    """
    parts: list[str] = []
    size = 0
    while size < chars:
        for name in TEXT_NAMES:
            piece = builtin_text(name) + "\n\n"
            parts.append(piece)
            size += len(piece)
    return "".join(parts)[:chars]


def read_text(path: Path | str | None) -> str:
    """The user's text file, or the shipped texts when none is given."""
    if path is None:
        return default_text()
    p = Path(path).expanduser()
    if p.stem in TEXT_NAMES + VARIED_NAMES and not p.exists():
        return builtin_text(p.stem)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise QuantDeskError(f"{p} does not exist; choose a plain-text file.") from None
    except UnicodeDecodeError:
        raise QuantDeskError(f"{p.name} is not UTF-8 text; choose a plain-text file.") from None
    except OSError as err:
        raise QuantDeskError(f"Cannot read {p} ({err.strerror}); check the path.") from None
    if not text.strip():
        raise QuantDeskError(f"{p.name} is empty; choose a text with a few thousand words.")
    return text
