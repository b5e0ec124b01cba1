"""The importance matrix for GGUF: computed from the calibration data, written and read in llama.cpp's forms,
checked for coverage before quantizing, and used by llama.cpp's quantizer (real smollm2, real llama.cpp)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.backends.gguf.imatrix_file import (
    Entry,
    ImatrixData,
    read_imatrix,
    write_gguf_imatrix,
    write_legacy_imatrix,
)
from engine.errors import JobCancelled, QuantDeskError
from tests.fixtures.quantize import run_quantize

CALIB = {"calibration_samples": 8, "calibration_seq_len": 128}  # small: the claims hold already
KLD_CTX = 128  # 6 chunks of 128: about 380 scored tokens, enough for a 40% difference


@pytest.fixture(scope="module")
def imatrix_job(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """smollm2 → IQ3_XXS and Q4_K_M with a matrix computed from the built-in calibration texts."""
    out = tmp_path_factory.mktemp("imatrix")
    return run_quantize(smollm2_dir, "IQ3_XXS,Q4_K_M", out, imatrix="auto", threads=2, **CALIB)


@pytest.fixture(scope="module")
def reference(smollm2_gguf: dict[str, Path]):
    """The BF16 GGUF's distributions over a slice of the evaluation text: what KLD is measured against."""
    from engine.evaluate.perplexity import score_original
    from engine.evaluate.scorers import open_scorer
    from engine.evaluate.texts import default_text
    from engine.jobs import run_job

    base = open_scorer(smollm2_gguf["BF16"], n_ctx=KLD_CTX, threads=2)
    try:
        return run_job(score_original(base, default_text(), KLD_CTX, max_tokens=6 * KLD_CTX))
    finally:
        base.close()


def _kld(path: Path, reference) -> float:
    from engine.evaluate.perplexity import perplexity
    from engine.evaluate.scorers import open_scorer
    from engine.jobs import run_job

    scorer = open_scorer(path, n_ctx=KLD_CTX, threads=2)
    try:
        return float(run_job(perplexity(scorer, "", KLD_CTX, base=reference)).kld_mean)
    finally:
        scorer.close()


def _matrix(job: dict) -> Path:
    return job["out_dir"] / "smollm2.imatrix.gguf"


def _synthetic() -> ImatrixData:
    rng = np.random.default_rng(0)
    entries = {"blk.0.ffn_down.weight": Entry(rng.random((1, 64), dtype=np.float32) * 100, np.array([50.0], np.float32)),
               "blk.0.ffn_up_exps.weight": Entry(rng.random((4, 32), dtype=np.float32) * 10,
                                                  np.array([20.0, 0.0, 5.0, 8.0], np.float32))}
    return ImatrixData(entries, ["notes.txt"], chunk_count=3, chunk_size=32)


# --------------------------------------------------------------------------- the files (no model)


def test_gguf_and_legacy_files_give_llama_cpp_the_same_weights(tmp_path):
    data = _synthetic()
    write_gguf_imatrix(tmp_path / "m.imatrix.gguf", data)
    write_legacy_imatrix(tmp_path / "m.dat", data)
    gguf_back, dat_back = read_imatrix(tmp_path / "m.imatrix.gguf"), read_imatrix(tmp_path / "m.dat")
    assert not gguf_back.legacy and dat_back.legacy
    assert gguf_back.datasets == dat_back.datasets == ["notes.txt"]
    assert gguf_back.chunk_count == dat_back.chunk_count == 3 and gguf_back.chunk_size == 32
    for name, entry in data.entries.items():
        expected = entry.weights()
        assert np.allclose(gguf_back.entries[name].weights(), expected, rtol=1e-6)
        assert np.allclose(dat_back.entries[name].weights(), expected, rtol=1e-5)
    assert data.entries["blk.0.ffn_up_exps.weight"].weights()[32:64].tolist() == [1.0] * 32  # an unused expert


@pytest.mark.parametrize("content", [b"", b"GGUF\x03\x00\x00\x00" + b"\xff" * 40, b"\x05\x00\x00\x00abc",
                                     b"hello, this is a text file\n"])
def test_a_damaged_or_foreign_file_is_one_sentence(tmp_path, content):
    bad = tmp_path / "bad.imatrix.gguf"
    bad.write_bytes(content)
    with pytest.raises(QuantDeskError, match=r"bad\.imatrix\.gguf is not a usable importance matrix \(.*\); give") \
            as err:
        read_imatrix(bad)
    assert "\n" not in str(err.value)


def test_a_model_gguf_is_not_an_importance_matrix(smollm2_gguf):
    with pytest.raises(QuantDeskError, match="this GGUF is a model, not an importance matrix"):
        read_imatrix(smollm2_gguf["Q8_0"])


# --------------------------------------------------------------------------- refusals before anything starts


def test_imatrix_none_with_iq2_xs_is_refused_in_one_sentence(smollm2_dir, tmp_path):
    with pytest.raises(QuantDeskError, match=r"^GGUF IQ2_XS cannot be made without an importance matrix; drop "
                                             r"--imatrix none .* --imatrix FILE\.$"):
        run_quantize(smollm2_dir, "IQ2_XS", tmp_path / "out", imatrix="none")
    assert not (tmp_path / "out").exists()


def test_auto_from_a_gguf_source_says_to_give_a_file(smollm2_gguf, tmp_path):
    with pytest.raises(QuantDeskError, match=r"computes only from a Hugging Face model.*--imatrix FILE\.$"):
        run_quantize(smollm2_gguf["BF16"], "IQ2_XS", tmp_path / "out")


# --------------------------------------------------------------------------- a computed matrix, used


@pytest.mark.slow
def test_the_job_computes_keeps_and_records_the_matrix(imatrix_job):
    from engine.backends.gguf.imatrix_file import CALIBRATION_KEY, SOURCE_KEY

    events = imatrix_job["events"]
    samples = [e for e in events if e.step == "imatrix" and e.extra.get("sample")]
    assert [e.extra["sample"] for e in samples] == list(range(1, 9)) and samples[-1].eta_s is not None
    data = read_imatrix(_matrix(imatrix_job))
    assert len(data.entries) == 30 * 7 and "blk.29.ffn_down.weight" in data.entries  # every linear of every block
    assert "output.weight" not in data.entries and data.entries["blk.0.attn_q.weight"].counts.tolist() == [1024.0]
    assert data.chunk_count == 8 and data.chunk_size == 128 and data.datasets[0].startswith("built-in texts")
    assert {SOURCE_KEY, CALIBRATION_KEY} <= set(data.meta)
    side = json.loads((imatrix_job["out_dir"] / "smollm2-IQ3_XXS.gguf.quantdesk.json").read_text())
    record = side["options"]["imatrix"]
    assert record["source"] == "computed" and record["file"] == "smollm2.imatrix.gguf" and record["entries"] == 210
    assert record["calibration"]["samples"] == 8 and record["calibration"]["chat_template"] is True
    assert "smollm2.imatrix.gguf" in (imatrix_job["out_dir"] / "README.md").read_text()


@pytest.mark.slow
def test_iq3_xxs_loads_in_llama_cpp_generates_and_names_its_matrix(imatrix_job):
    from llama_cpp import Llama

    llm = Llama(model_path=str(imatrix_job["outputs"]["IQ3_XXS"]), n_ctx=128, n_threads=2, verbose=False, seed=0)
    try:
        meta = llm.metadata
        text = llm("The capital of France is", max_tokens=8, temperature=0.0)["choices"][0]["text"]
    finally:
        llm.close()
    assert meta["general.file_type"] == "23" and text.strip()
    assert meta["quantize.imatrix.file"] == "smollm2.imatrix.gguf"
    assert meta["quantize.imatrix.dataset"].startswith("built-in texts")
    assert meta["quantize.imatrix.entries_count"] == "210" and meta["quantize.imatrix.chunks_count"] == "8"


@pytest.mark.slow
def test_q4_k_m_with_the_matrix_is_closer_to_the_original(imatrix_job, smollm2_gguf, reference):
    with_matrix = _kld(imatrix_job["outputs"]["Q4_K_M"], reference)
    without = _kld(smollm2_gguf["Q4_K_M"], reference)  # the same BF16 through the same pipeline, no matrix
    print(f"Q4_K_M mean KLD vs BF16: {without:.4f} without, {with_matrix:.4f} with the importance matrix")
    assert with_matrix < 0.9 * without


@pytest.mark.slow
def test_a_second_job_finds_the_matrix_again(imatrix_job, smollm2_dir):
    """Same weights and calibration: the child reuses the file without loading the model; other samples do not."""
    from engine.backends.gguf.imatrix import imatrix_worker
    from engine.calibration import CalibrationOptions
    from engine.fsutil import part_path
    from engine.jobs import CancelToken, relay, run_in_child, run_job

    final = _matrix(imatrix_job)
    kinds: list[str] = []
    cancel = CancelToken()

    def seen(msg):
        kinds.append(msg[0])
        if msg[0] == "sample":
            cancel.cancel()

    for samples in (8, 9):
        child = run_in_child(imatrix_worker, str(smollm2_dir), CalibrationOptions(samples=samples, seq_len=128),
                             "smollm2", 2, None, str(final), str(part_path(final)), cancel=cancel)
        if samples == 8:
            result = run_job(relay(child, seen))
            assert result["cached"] is True and result["entries"] == 210 and "sample" not in kinds
        else:
            with pytest.raises(JobCancelled):  # computed anew: stopped at its first sample
                run_job(relay(child, seen))
            assert "sample" in kinds
    assert not part_path(final).exists()


# --------------------------------------------------------------------------- --imatrix FILE


@pytest.mark.slow
def test_our_file_and_a_legacy_dat_are_accepted_by_imatrix_file(imatrix_job, smollm2_gguf, tmp_path):
    dat = tmp_path / "smollm2.dat"
    write_legacy_imatrix(dat, read_imatrix(_matrix(imatrix_job)))
    for matrix, folder in ((_matrix(imatrix_job), tmp_path / "from-gguf"), (dat, tmp_path / "from-dat")):
        job = run_quantize(smollm2_gguf["BF16"], "Q4_K_M", folder, imatrix=str(matrix), threads=2)
        side = json.loads((folder / "smollm2-Q4_K_M.gguf.quantdesk.json").read_text())
        assert side["options"]["imatrix"] == {"source": "file", "file": matrix.name, "entries": 210, "chunks": 8}
        from engine.gguf_header import read_gguf_header

        fields = read_gguf_header(job["outputs"]["Q4_K_M"]).fields
        assert fields["quantize.imatrix.file"] == matrix.name and fields["general.file_type"] == 15


@pytest.mark.slow
def test_a_missing_tensor_is_named_before_anything_is_quantized(imatrix_job, smollm2_gguf, tmp_path):
    data = read_imatrix(_matrix(imatrix_job))
    del data.entries["blk.7.ffn_down.weight"]
    partial = tmp_path / "partial.imatrix.gguf"
    write_gguf_imatrix(partial, data)
    events = []
    with pytest.raises(QuantDeskError, match=r"^The importance matrix partial\.imatrix\.gguf has no entry for "
                                             r"blk\.7\.ffn_down\.weight, which IQ2_XS needs; use --imatrix auto"):
        run_quantize(smollm2_gguf["BF16"], "IQ2_XS", tmp_path / "out", imatrix=str(partial), threads=2,
                     on_progress=events.append)
    assert not [e for e in events if e.step == "quantize" and e.tensor_index]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_cancel_while_computing_the_matrix_leaves_nothing(smollm2_cut_dir, tmp_path):
    from engine.jobs import CancelToken

    cancel = CancelToken()
    out = tmp_path / "out"

    def on_progress(event):
        if event.step == "imatrix" and event.extra.get("sample") == 1:
            cancel.cancel()

    with pytest.raises(JobCancelled):
        run_quantize(smollm2_cut_dir, "IQ2_XS", out, cancel=cancel, on_progress=on_progress, threads=2, **CALIB)
    assert not out.exists() or not any(out.iterdir())
    shutil.rmtree(out, ignore_errors=True)
