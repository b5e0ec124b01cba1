"""Perplexity, KL divergence and speed on real smollm2 weights through llama.cpp and transformers."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from engine.artifacts import read_sidecar
from engine.errors import QuantDeskError
from engine.evaluate.perplexity import perplexity, score_original, split_chunks, token_nll
from engine.evaluate.scorers import open_scorer
from engine.evaluate.texts import TEXT_NAMES, benchmark_text, builtin_text, default_text
from engine.jobs import run_job

CTX = 128
# About 650 tokens: five chunks of 128, enough for stable comparisons, quick on one core.
TEXT = default_text()[:3000]


def _scorer(path):
    return open_scorer(path, n_ctx=CTX, threads=1)


def _ppl(path, **kwargs):
    scorer = _scorer(path)
    try:
        return run_job(perplexity(scorer, TEXT, CTX, **kwargs))
    finally:
        scorer.close()


def test_gguf_and_hf_give_the_same_perplexity_for_the_same_weights(chat_ggufs, smollm2_dir):
    gguf = _ppl(chat_ggufs["F16"])
    hf = _ppl(smollm2_dir)
    assert gguf.tokens == hf.tokens == gguf.chunks * (CTX // 2 - 1)
    assert abs(gguf.ppl - hf.ppl) / hf.ppl < 0.01
    assert 1 < hf.ppl < 200 and 0 < hf.ppl_stderr < hf.ppl


def test_quantization_cost_is_ranked(chat_ggufs):
    base = _scorer(chat_ggufs["F16"])
    try:
        original = run_job(score_original(base, TEXT, CTX))
    finally:
        base.close()
    try:
        q8 = _ppl(chat_ggufs["Q8_0"], base=original)
        q4 = _ppl(chat_ggufs["Q4_K_M"], base=original)
    finally:
        original.close()
    assert q4.ppl > q8.ppl
    assert q4.kld_mean > q8.kld_mean > 0
    assert q4.kld_p99 > q4.kld_mean
    assert 50 < q4.same_top_pct <= q8.same_top_pct <= 100
    assert q8.base_ppl == q4.base_ppl


def test_chunks_follow_llama_cpp():
    tokens = list(range(10, 10 + 1000))
    chunks = split_chunks(tokens, 256, bos_id=1, add_bos=True)
    assert len(chunks) == 3  # the 232-token tail is left out
    assert [c[0] for c in chunks] == [1, 1, 1] and chunks[1][1:] == tokens[257:512]
    assert split_chunks(tokens, 256, bos_id=1, add_bos=False)[1][0] == tokens[256]
    with pytest.raises(QuantDeskError, match="needs at least 1024"):
        split_chunks(tokens[:1000], 512, None, False)


def test_nll_is_the_log_softmax():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 50)).astype(np.float32)
    targets = np.array([3, 0, 49, 7])
    expected = [-(row[t] - np.log(np.exp(row.astype(np.float64)).sum())) for row, t in zip(logits, targets, strict=True)]
    assert np.allclose(token_nll(logits, targets), expected, atol=1e-5)


def test_shipped_texts_are_project_texts_of_useful_size():
    for name in TEXT_NAMES:
        assert 4000 < len(builtin_text(name).encode()) < 16000
    bench = benchmark_text()
    assert bench == benchmark_text() and len(bench) == 90_000


def test_cli_eval_json_and_sidecar(chat_ggufs, tmp_path):
    model = tmp_path / "smollm2-Q8_0.gguf"
    model.symlink_to(chat_ggufs["Q8_0"])
    text = tmp_path / "sample.txt"
    text.write_text(default_text()[:1500])
    out = subprocess.run(
        [sys.executable, "-m", "engine", "eval", str(model), "--text", str(text), "--ctx", "64",
         "--base", str(chat_ggufs["F16"]), "--threads", "1", "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    for key in ("ppl", "ppl_stderr", "tokens", "kld_mean", "kld_p99", "same_top_pct", "prompt_tps", "gen_tps"):
        assert isinstance(data[key], (int, float)), key
    assert data["kld_mean"] > 0 and data["prompt_tps"] > 0 and data["gen_tps"] > 0
    record = read_sidecar(model)
    assert record is not None and record.evaluation["ppl"] == data["ppl"]
    assert record.evaluation["n_ctx"] == 64 and record.evaluation["text"] == str(text)


def test_cli_eval_without_base_has_no_kld_and_short_text_is_one_line(chat_ggufs, tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text("Too short to measure anything.")
    out = subprocess.run(
        [sys.executable, "-m", "engine", "eval", str(chat_ggufs["Q8_0"]), "--text", str(text), "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "choose a longer text or a smaller --ctx" in out.stderr.strip().splitlines()[-1]


def test_eval_in_process_without_base(chat_ggufs, tmp_path):
    from engine.evaluate.run import EvalRequest, evaluate

    model = tmp_path / "q4.gguf"
    model.symlink_to(chat_ggufs["Q4_K_M"])
    data = run_job(evaluate(EvalRequest(model=model, text=TEXT, n_ctx=CTX, threads=1, speed=False)))
    assert "kld_mean" not in data and data["ppl"] > 1
    assert read_sidecar(model).evaluation["ppl"] == data["ppl"]
