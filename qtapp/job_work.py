"""The queue's engine jobs, as module-level functions a job process can import (no Qt here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.jobs import CancelToken


def quantize_job(cancel: CancelToken, request: Any):
    from engine.quantize import quantize

    return (yield from quantize(request, cancel))


def auto_quantize_job(cancel: CancelToken, request: Any, max_bytes: int):
    """"Best under … GB": the best GGUF that fits ``max_bytes``, chosen by measuring (engine.autopick)."""
    from engine.autopick import auto_quantize

    return (yield from auto_quantize(request, max_bytes, cancel=cancel))


def evaluate_job(cancel: CancelToken, paths: list[Path], base: Path | None):
    """Perplexity, KL divergence against the original (when it is not the model itself) and speed."""
    from engine.evaluate.run import EvalRequest, evaluate
    from engine.evaluate.texts import read_text
    from engine.jobs import Progress, relay

    text = read_text(None)
    results = []
    for i, path in enumerate(paths):
        same = base is not None and Path(path).resolve() == Path(base).resolve()
        request = EvalRequest(model=Path(path), text=text, base=None if same else base)

        def within(event: Progress, i: int = i, name: str = Path(path).name) -> Progress:
            event.fraction = (i + event.fraction) / len(paths)
            event.message = f"{name}: {event.message}"
            return event

        results.append((yield from relay(evaluate(request, cancel), within)))
    return results


def plan_get_job(cancel: CancelToken, repo_id: str, revision: str | None, token: str | None):
    """The Hub plan, in a process of its own so huggingface_hub reads HF_ENDPOINT and HF_HOME as they are now.

    A token typed into the window is first saved where huggingface_hub keeps its login
    (its own ``login``, which checks it with the Hub), so every later tool finds it too.
    """
    from engine.hub import plan_download
    from engine.hub.client import call_hub
    from engine.jobs import Progress

    if token:
        from huggingface_hub import login

        yield Progress("download", 0.0, "Checking the token with the Hugging Face Hub")
        call_hub(lambda: login(token=token, add_to_git_credential=False), "checking the token", repo_id,
                 revision, cancel)
    yield Progress("download", 0.0, f"Reading the file list of {repo_id}")
    return plan_download(repo_id, revision, token, cancel=cancel)


def get_job(cancel: CancelToken, plan: Any):
    """Download a planned repository into the Hugging Face cache; returns its snapshot folder."""
    from engine.hub import download

    return (yield from download(plan, cancel))


def lmstudio_job(cancel: CancelToken, plan: Any):
    """Link or copy a GGUF into LM Studio's models folder; returns where it is now."""
    from engine.export import place_in_lmstudio

    return (yield from place_in_lmstudio(plan, cancel))


def ollama_job(cancel: CancelToken, plan: Any):
    """``ollama create``; each line it prints arrives as a progress message (the job's log)."""
    from engine.export import create_in_ollama

    return (yield from create_in_ollama(plan, cancel))
