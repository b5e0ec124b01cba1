"""Seeded fuzz of the two header readers that face files from the internet: GGUF and safetensors.

Thousands of mutated headers (byte flips, huge counts and lengths, cuts,
deleted and repeated spans) must each end in the reader's answer or one
QuantDeskError, never another exception, within bounded time and memory.
"""

from __future__ import annotations

import contextlib
import json
import random
import struct
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from engine.errors import QuantDeskError
from engine.gguf_header import parse_gguf_header, read_gguf_header
from engine.inspect import check_safetensors_header, read_safetensors_header
from tests.gguf_bytes import sample_gguf

SEED = 20240613
CASES = 3000
_INTERESTING = (0, 1, 7, 255, 2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40, 2**62, 2**63, 2**64 - 1)


def mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not b:
            break
        pos, kind = rng.randrange(len(b)), rng.random()
        if kind < 0.35:
            b[pos] = rng.randrange(256)
        elif kind < 0.6 and pos + 8 <= len(b):
            b[pos:pos + 8] = struct.pack("<Q", rng.choice(_INTERESTING))
        elif kind < 0.7 and pos + 4 <= len(b):
            b[pos:pos + 4] = struct.pack("<I", rng.choice(_INTERESTING) & 0xFFFFFFFF)
        elif kind < 0.8:
            del b[pos:pos + rng.randint(1, 64)]
        elif kind < 0.9:
            span = bytes(b[pos:pos + rng.randint(1, 64)])
            b[pos:pos] = span * rng.randint(1, 8)
        else:
            del b[pos:]
    return bytes(b)


def _fuzz(seed_data: bytes, parse: Callable[[bytes], object], cases: int) -> dict[str, float]:
    rng = random.Random(SEED)
    worst, accepted = 0.0, 0
    tracemalloc.start()
    started = time.perf_counter()
    try:
        for i in range(cases):
            data = mutate(seed_data, rng)
            t0 = time.perf_counter()
            try:
                parse(data)
                accepted += 1
            except QuantDeskError as err:
                text = str(err)
                assert text and "\n" not in text, f"case {i}: {text!r}"
            except Exception as err:  # noqa: BLE001 - the point of the test
                raise AssertionError(f"case {i} raised {type(err).__name__}: {err}") from err
            worst = max(worst, time.perf_counter() - t0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {"total_s": time.perf_counter() - started, "worst_s": worst, "peak_bytes": peak, "accepted": accepted}


def test_fuzz_gguf_header_reader():
    seed_data = sample_gguf()
    stats = _fuzz(seed_data, lambda d: parse_gguf_header(d, len(d), Path("fuzz.gguf")), CASES)
    assert stats["total_s"] < 60 and stats["worst_s"] < 2.0, stats
    assert stats["peak_bytes"] < 32 * 1024**2, stats
    assert 0 < stats["accepted"] < CASES  # the mutations reach both the good and the bad paths


def test_fuzz_gguf_header_reader_through_files(tmp_path):
    rng = random.Random(SEED + 1)
    seed_data = sample_gguf()
    path = tmp_path / "fuzz.gguf"
    started = time.perf_counter()
    for _ in range(300):
        path.write_bytes(mutate(seed_data, rng))
        with contextlib.suppress(QuantDeskError):
            read_gguf_header(path)
    assert time.perf_counter() - started < 60


def _safetensors_seed() -> bytes:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for i in range(12):
        shape = [16, 8 * (i + 1)]
        size = shape[0] * shape[1] * 2
        header[f"model.layers.{i}.mlp.up_proj.weight"] = {"dtype": "BF16", "shape": shape,
                                                         "data_offsets": [offset, offset + size]}
        offset += size
    return json.dumps(header).encode()


def test_fuzz_safetensors_header_reader():
    seed_data = _safetensors_seed()
    data_size = 16 * 8 * 78 * 2
    stats = _fuzz(seed_data, lambda d: check_safetensors_header(d, data_size, Path("fuzz.safetensors")), CASES)
    assert stats["total_s"] < 60 and stats["worst_s"] < 2.0, stats
    assert stats["peak_bytes"] < 32 * 1024**2, stats
    assert 0 < stats["accepted"] < CASES


def test_fuzz_safetensors_files_with_mutated_length_and_body(tmp_path):
    rng = random.Random(SEED + 2)
    body = _safetensors_seed()
    whole = struct.pack("<Q", len(body)) + body + b"\0" * (16 * 8 * 78 * 2)
    path = tmp_path / "model.safetensors"
    started = time.perf_counter()
    for _ in range(300):
        path.write_bytes(mutate(whole[:len(body) + 64], rng) + whole[len(body) + 64:])
        with contextlib.suppress(QuantDeskError):
            read_safetensors_header(path)
    assert time.perf_counter() - started < 60


def test_deeply_nested_json_header_is_one_sentence():
    deep = b"[" * 200_000 + b"]" * 200_000
    try:
        check_safetensors_header(deep, 0, Path("deep.safetensors"))
    except QuantDeskError as err:
        assert "not a valid safetensors file" in str(err)
    else:
        raise AssertionError("a 200,000-deep header was accepted")


def test_fuzz_a_header_written_by_gguf_py(tiny_gguf):
    """The same mutations over a real writer's output (gguf.GGUFWriter), tensor data included."""
    seed_data = tiny_gguf.read_bytes()
    assert parse_gguf_header(seed_data, len(seed_data), tiny_gguf).tensors  # the seed itself is whole
    stats = _fuzz(seed_data, lambda d: parse_gguf_header(d, len(d), Path("fuzz.gguf")), 1000)
    assert stats["total_s"] < 60 and stats["worst_s"] < 2.0, stats
    assert stats["peak_bytes"] < 64 * 1024**2, stats
