"""Context sizes are checked against the model's own maximum and the free memory before anything is allocated."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import QuantDeskError
from engine.estimate import check_context, context_for, runtime_bytes
from engine.inspect import inspect_model

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def real_gguf() -> Path:
    from engine.demo import smollm2_gguf_path

    return smollm2_gguf_path()  # SmolLM2-135M-Instruct, trained for 8192 tokens


def test_within_the_models_maximum_passes(real_gguf):
    assert check_context(inspect_model(real_gguf), 8192, None) == 8192


def test_above_the_models_maximum_names_it(real_gguf):
    with pytest.raises(QuantDeskError) as err:
        check_context(inspect_model(real_gguf), 100_000, None)
    assert str(err.value) == (f"{real_gguf.name} supports a context of at most 8192 tokens; "
                              "use --ctx 8192 or less.")


def test_beyond_free_memory_names_the_largest_that_fits(real_gguf):
    model = inspect_model(real_gguf)
    free = runtime_bytes(model, 3000) + 100  # room for a little over 3000 tokens
    with pytest.raises(QuantDeskError, match=r"use --ctx (\d+) or less \(the largest that fits\)\.$") as err:
        check_context(model, 8192, free)
    largest = int(str(err.value).rsplit("--ctx ", 1)[1].split()[0])
    assert 3000 <= largest < 3100
    assert runtime_bytes(model, largest) <= free < runtime_bytes(model, largest + 1)
    assert check_context(model, largest, free) == largest


def test_above_the_maximum_and_beyond_memory_names_the_smaller(real_gguf):
    model = inspect_model(real_gguf)
    with pytest.raises(QuantDeskError, match=r"at most 8192 tokens; 1000 is the largest that fits this machine's "
                                             r"free memory; use --ctx 1000 or less\."):
        check_context(model, 20_000, runtime_bytes(model, 1000))


def test_no_memory_at_all(real_gguf):
    with pytest.raises(QuantDeskError, match="too little free memory for even one token; close other programs"):
        check_context(inspect_model(real_gguf), 512, 1000)


def test_all_logits_count_for_perplexity(real_gguf):
    model = inspect_model(real_gguf)
    assert runtime_bytes(model, 512, logits_tokens=512) - runtime_bytes(model, 512) == 4 * 49152 * 511


def test_zero_and_negative_are_refused_by_both_paths(real_gguf):
    model = inspect_model(real_gguf)
    for fn in (lambda n: check_context(model, n, None), lambda n: context_for(model, n)):
        with pytest.raises(QuantDeskError, match="at least 1 token"):
            fn(0)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("command", ["chat", "eval"])
def test_cli_refuses_a_context_above_the_models_in_one_line(real_gguf, command):
    extra = ["--prompt", "Hi"] if command == "chat" else ["--no-speed"]
    started = time.monotonic()
    out = _cli(command, str(real_gguf), "--ctx", "1000000", *extra)
    lines = [line for line in out.stderr.splitlines() if line.strip() and not line.startswith("Loading")]
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert lines == [f"quantdesk: error: {real_gguf.name} supports a context of at most 8192 tokens; "
                     "use --ctx 8192 or less."]
    assert time.monotonic() - started < 120
