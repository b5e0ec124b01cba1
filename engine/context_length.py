"""The context lengths a user is offered, and how a typed one is brought into range (saying so)."""

from __future__ import annotations

MIN_CONTEXT = 256
PRESETS = (2048, 4096, 8192)


def context_presets(model_max: int | None) -> list[tuple[int, str]]:
    """(tokens, label) choices: 2k, 4k, 8k up to the model's maximum, then the maximum itself."""
    choices = [(n, f"{n // 1024}k") for n in PRESETS if not model_max or n < model_max]
    if model_max:
        choices.append((int(model_max), f"{_short(model_max)} (the model's maximum)"))
    return choices


def clamp_context(tokens: int, model_max: int | None) -> tuple[int, str]:
    """``tokens`` brought into [MIN_CONTEXT, model_max], with a sentence when it had to change ("" otherwise)."""
    if tokens < MIN_CONTEXT:
        return MIN_CONTEXT, f"Raised to {MIN_CONTEXT:,} tokens, the shortest context QuantDesk plans for."
    if model_max and tokens > model_max:
        return int(model_max), (f"Lowered to {int(model_max):,} tokens: the model was trained for at most that "
                                f"(you asked for {tokens:,}).")
    return int(tokens), ""


def parse_context(text: str) -> int | None:
    """A typed context length: "8192", "8,192", "8k" or "32K"; None when it is not one."""
    cleaned = text.strip().lower().replace(",", "").replace("_", "").replace(" ", "")
    cleaned = cleaned.split("(")[0].removesuffix("tokens")
    try:
        if cleaned.endswith("k"):
            return int(float(cleaned[:-1]) * 1024)
        return int(cleaned)
    except ValueError:
        return None


def _short(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else f"{n:,}"
