"""Calibration data: the built-in texts, a user's file, a mix; samples, BOS, what is recorded; one sentence per mistake."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine.calibration import CalibrationOptions, Encoder, build_calibration, hf_encoder, load_documents
from engine.errors import QuantDeskError
from engine.modelcard import read_chat_template


def _words_encoder(bos: int | None = 1, add_bos: bool = True) -> Encoder:
    """Whitespace words as token ids (ids from 10 up): enough to check windows and BOS exactly."""
    vocab: dict[str, int] = {}

    def encode(text: str) -> list[int]:
        return [vocab.setdefault(w, 10 + len(vocab)) for w in text.split()]

    return Encoder(encode, bos, add_bos)


def _text_file(tmp_path: Path, words: int, name: str = "notes.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n\n".join(" ".join(f"w{i}_{j}" for j in range(50)) for i in range(words // 50)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def smollm2_encoder(smollm2_dir: Path) -> Encoder:
    return hf_encoder(smollm2_dir)


def test_samples_are_spread_over_the_whole_text_with_bos_first(tmp_path):
    path = _text_file(tmp_path, 5000)
    cs = build_calibration(CalibrationOptions(data=str(path), samples=8, seq_len=100), _words_encoder(),
                           chat_template=None)
    assert len(cs.samples) == 8 and all(len(s) == 100 for s in cs.samples)
    assert all(s[0] == 1 for s in cs.samples)
    assert cs.stream_tokens == 5000 and not cs.overlapping and not cs.warnings
    # evenly spread: the last window ends at the end of the stream, the first starts at its start
    assert cs.samples[0][1] == 11 and cs.samples[-1][-1] == 10 + 4999
    record = cs.record()
    assert record["samples"] == 8 and record["seq_len"] == 100 and record["tokens"] == 800
    assert record["files"][0]["name"] == "notes.txt" and len(record["files"][0]["sha256"]) == 64
    assert record["sha256"] == cs.fingerprint()


def test_no_bos_when_the_tokenizer_adds_none(tmp_path):
    path = _text_file(tmp_path, 1000)
    cs = build_calibration(CalibrationOptions(data=str(path), samples=2, seq_len=50),
                           _words_encoder(add_bos=False), chat_template=None)
    assert cs.samples[0][0] == 10


def test_short_data_overlaps_and_says_so(tmp_path):
    path = _text_file(tmp_path, 500)
    cs = build_calibration(CalibrationOptions(data=str(path), samples=20, seq_len=100), _words_encoder(),
                           chat_template=None)
    assert len(cs.samples) == 20 and cs.overlapping
    assert any("samples overlap" in w for w in cs.warnings)


@pytest.mark.parametrize(("content", "message"), [
    (b"", "is empty"),
    (b"   \n\n  ", "is empty"),
    (b"\x7fELF\x02\x01\x01\x00\x00\x00binary", "is binary, not text"),
    ("caf\u00e9 cr\u00e8me".encode("latin-1"), "is not UTF-8 text"),
    (b"one two three", "only 3 tokens, fewer than one sample of 64"),
])
def test_unusable_files_get_one_sentence(tmp_path, content, message):
    path = tmp_path / "data.txt"
    path.write_bytes(content)
    with pytest.raises(QuantDeskError, match=message) as info:
        build_calibration(CalibrationOptions(data=str(path), samples=4, seq_len=64), _words_encoder(),
                          chat_template=None)
    assert "\n" not in str(info.value)


def test_missing_file_and_fifo_are_refused(tmp_path):
    with pytest.raises(QuantDeskError, match="does not exist"):
        load_documents(CalibrationOptions(data=str(tmp_path / "nope.txt")))
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    with pytest.raises(QuantDeskError, match="named pipe"):
        load_documents(CalibrationOptions(data=str(fifo)))


def test_jsonl_text_and_messages_and_a_bad_line(tmp_path):
    good = tmp_path / "chats.jsonl"
    good.write_text("\n".join([
        json.dumps({"text": "plain words here"}),
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}),
    ]), encoding="utf-8")
    docs = load_documents(CalibrationOptions(data=str(good)))
    assert docs.has_chat and len(docs.items) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"messages": [{"role": "bot", "content": 1}]}),
                   encoding="utf-8")
    with pytest.raises(QuantDeskError, match="line 2 of bad.jsonl has neither"):
        load_documents(CalibrationOptions(data=str(bad)))
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(QuantDeskError, match="line 1 of broken.jsonl is not valid JSON"):
        load_documents(CalibrationOptions(data=str(broken)))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"samples": 0}, "number of calibration samples must be a whole number from 1"),
    ({"samples": "many"}, "number of calibration samples"),
    ({"seq_len": 8}, "calibration sequence length must be a whole number from 32"),
])
def test_options_are_checked(kwargs, message):
    with pytest.raises(QuantDeskError, match=message):
        CalibrationOptions(**kwargs)


def test_builtin_texts_mix_every_kind():
    docs = load_documents(CalibrationOptions())
    kinds = {d.kind for d in docs.items}
    assert kinds == {"chat", "prose", "code", "languages"}
    # shuffled: the first documents are not all of one kind
    assert len({d.kind for d in docs.items[:12]}) >= 3


@pytest.mark.slow
def test_chat_model_renders_chats_with_its_own_template(smollm2_dir, smollm2_encoder):
    template = read_chat_template(smollm2_dir)
    assert template
    cs = build_calibration(CalibrationOptions(samples=16, seq_len=256), smollm2_encoder, chat_template=template,
                           model_name="SmolLM2")
    assert cs.chat_template and not cs.overlapping and not cs.warnings
    # SmolLM2's template opens each turn with <|im_start|>: its token id shows up in the samples
    im_start = smollm2_encoder.encode("<|im_start|>")
    assert len(im_start) == 1
    assert sum(s.count(im_start[0]) for s in cs.samples) >= 10
    assert cs.stream_tokens >= 128 * 512 // 2  # the built-in texts are not a toy


@pytest.mark.slow
def test_chat_model_on_plain_text_is_warned_and_a_mix_is_not(tmp_path, smollm2_dir, smollm2_encoder):
    path = _text_file(tmp_path, 3000, "wiki.txt")
    template = read_chat_template(smollm2_dir)
    plain = build_calibration(CalibrationOptions(data=str(path), samples=4, seq_len=128), smollm2_encoder,
                              chat_template=template, model_name="SmolLM2")
    assert any("SmolLM2 is a chat model but wiki.txt is plain text" in w for w in plain.warnings)
    mixed = build_calibration(CalibrationOptions(data=f"builtin+{path}", samples=4, seq_len=128), smollm2_encoder,
                              chat_template=template, model_name="SmolLM2")
    assert not mixed.warnings and mixed.chat_template
    assert mixed.record()["data"].endswith("+ wiki.txt")
