"""engine.gguf_header, QuantDesk's one GGUF reader, on real GGUFs, truncated copies and crafted headers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import QuantDeskError
from engine.gguf_header import GGML_BLOCKS, LongArray, read_gguf_header
from tests.gguf_bytes import ARRAY, STRING, U8, U32, build_gguf, sample_gguf, string


def _write(tmp_path: Path, data: bytes, name: str = "model.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _copy_head(src: Path, dest: Path, n: int) -> Path:
    with src.open("rb") as fin, dest.open("wb") as fout:
        remaining = n
        while remaining:
            chunk = fin.read(min(remaining, 1 << 20))
            if not chunk:
                break
            fout.write(chunk)
            remaining -= len(chunk)
    return dest


# --------------------------------------------------------------------------- real files


def test_block_sizes_agree_with_gguf_py():
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    theirs = {int(t): GGML_QUANT_SIZES[t] for t in GGMLQuantizationType if t in GGML_QUANT_SIZES}
    common = set(theirs) & set(GGML_BLOCKS)
    assert len(common) >= 30
    assert {t: GGML_BLOCKS[t] for t in common} == {t: theirs[t] for t in common}


def test_real_gguf_agrees_with_ggufs_own_reader(tiny_gguf):
    from gguf import GGUFReader

    ours, theirs = read_gguf_header(tiny_gguf), GGUFReader(tiny_gguf)
    assert [(t.name, t.ggml_type, t.n_elements, t.n_bytes) for t in ours.tensors] == [
        (t.name, int(t.tensor_type), int(t.n_elements), int(t.n_bytes)) for t in theirs.tensors]
    assert [ours.data_offset + t.offset for t in ours.tensors] == [int(t.data_offset) for t in theirs.tensors]
    assert ours.alignment == theirs.alignment and ours.data_offset == theirs.data_offset
    assert ours.file_type == 1 and ours.parameters == sum(int(t.n_elements) for t in theirs.tensors)


def test_real_quantized_gguf_with_a_full_vocabulary_is_read_fast():
    from gguf import GGUFReader

    from engine.demo import smollm2_gguf_path

    path = smollm2_gguf_path()  # SmolLM2-135M-Instruct as shipped: Q4_1, 49k-token vocabulary
    started = time.perf_counter()
    header = read_gguf_header(path)
    elapsed = time.perf_counter() - started
    assert header.fields["tokenizer.ggml.tokens"] == LongArray(49152)
    assert header.file_type == 3 and header.file_size == path.stat().st_size
    theirs = GGUFReader(path)
    assert [(t.name, t.n_bytes, header.data_offset + t.offset) for t in header.tensors] == [
        (t.name, int(t.n_bytes), int(t.data_offset)) for t in theirs.tensors]
    assert elapsed < 2.0, f"{elapsed:.2f} s for the header of a 135M model"


def test_truncated_real_gguf_is_damaged_in_one_sentence(tmp_path):
    from engine.demo import smollm2_gguf_path

    src = smollm2_gguf_path()
    header = read_gguf_header(src)
    for n in (src.stat().st_size - 1, header.data_offset + 1000, header.data_offset - 5, 5000, 30):
        cut = _copy_head(src, tmp_path / f"cut-{n}.gguf", n)
        with pytest.raises(QuantDeskError, match=r"^cut-\d+\.gguf is a damaged or truncated GGUF file \(") as err:
            read_gguf_header(cut)
        assert str(err.value).endswith("; download or quantize it again.") and "\n" not in str(err.value)


@pytest.mark.parametrize("command", ["inspect", "quantize"])
def test_cli_reports_a_truncated_gguf_as_damaged(tmp_path, command):
    from engine.demo import smollm2_gguf_path

    src = smollm2_gguf_path()
    cut = _copy_head(src, tmp_path / "half.gguf", src.stat().st_size // 2)
    extra = ["--to", "Q4_K_M", "--out", str(tmp_path / "out")] if command == "quantize" else []
    out = subprocess.run([sys.executable, "-m", "engine", command, str(cut), *extra], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert [line for line in out.stderr.splitlines() if line.strip()] == [
        "quantdesk: error: half.gguf is a damaged or truncated GGUF file (the tensor 'blk.15.attn_output.weight' runs "
        "past the end of the file); download or quantize it again."]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# --------------------------------------------------------------------------- crafted headers


def test_crafted_sample_reads_completely(tmp_path):
    header = read_gguf_header(_write(tmp_path, sample_gguf()))
    f = header.fields
    assert (f["general.architecture"], f["llama.context_length"], f["general.flags"]) == ("llama", 2048, [True, False])
    assert f["tokenizer.ggml.tokens"] == LongArray(300) and f["tokenizer.nested"] == [[1, 2], ["a", "b"]]
    assert [(t.name, t.n_bytes) for t in header.tensors] == [
        ("token_embd.weight", 19200), ("blk.0.attn_norm.weight", 128), ("blk.0.attn_q.weight", 1088),
        ("blk.1.ffn_down.weight", 576)]
    assert header.data_offset % 32 == 0 and header.parameters == 32 * 300 + 32 + 32 * 32 + 256 * 4


def test_every_truncation_of_a_crafted_file_is_refused(tmp_path):
    data = sample_gguf()
    path = tmp_path / "cut.gguf"
    for n in range(0, len(data), 97):
        path.write_bytes(data[:n])
        with pytest.raises(QuantDeskError, match=r"cut\.gguf is (a damaged or truncated GGUF file|not a GGUF file)"):
            read_gguf_header(path)


@pytest.mark.parametrize(
    ("kv", "tensors", "why"),
    [
        ([("k", ARRAY, (ARRAY, [(ARRAY, [(ARRAY, [(U8, [1])])])]))], [], "nested too deeply"),
        ([("a", U32, 1), ("a", U32, 2)], [], "appears twice"),
        ([("general.alignment", U32, 24)], [], "not a power of two"),
        ([("k", 99, 0)], [], "unknown type 99"),
        ([], [("t", (30, 2), 8, 64)], "not whole blocks"),
        ([], [("t", (1, 1, 1, 1, 1), 0, 4)], "5 dimensions"),
        ([], [("t", (4,), 0, 16), ("t", (4,), 0, 16)], "appears twice"),
    ],
)
def test_malformed_headers_are_named(tmp_path, kv, tensors, why):
    with pytest.raises(QuantDeskError, match=why):
        read_gguf_header(_write(tmp_path, build_gguf(kv, tensors)))


def _with_counts(n_tensors: int, n_kv: int, body: bytes = b"") -> bytes:
    import struct

    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + body


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (_with_counts(0, 2**63), "metadata keys"),
        (_with_counts(2**40, 0), "tensors"),
        (_with_counts(10**6, 0), "ends inside the tensor list"),
        (_with_counts(0, 1, string("k") + (9).to_bytes(4, "little") + (8).to_bytes(4, "little")
                      + (2**60).to_bytes(8, "little")), "claims 1152921504606846976 elements"),
        (_with_counts(0, 1, string("k") + (9).to_bytes(4, "little") + (8).to_bytes(4, "little")
                      + (10**6).to_bytes(8, "little")), "ends inside an array of strings"),
        (_with_counts(0, 1, (2**62).to_bytes(8, "little")), "a metadata key is"),
        (_with_counts(0, 1, string("k") + (8).to_bytes(4, "little") + (2**50).to_bytes(8, "little")),
         "a metadata string is"),
    ],
)
def test_huge_counts_are_refused_without_allocating(tmp_path, data, why):
    started = time.perf_counter()
    with pytest.raises(QuantDeskError, match=why):
        read_gguf_header(_write(tmp_path, data + b"\0" * 64))
    assert time.perf_counter() - started < 1.0


def test_tensor_offset_past_the_end(tmp_path):
    import struct

    data = bytearray(build_gguf([], [("a", (8,), 0, 32), ("b", (8,), 0, 32)]))
    pos = data.index(string("b")) + len(string("b")) + 4 + 8 + 4
    data[pos:pos + 8] = struct.pack("<Q", 2**40)
    with pytest.raises(QuantDeskError, match="'b' runs past the end of the file"):
        read_gguf_header(_write(tmp_path, bytes(data)))


@pytest.mark.parametrize(
    ("version", "why"),
    [(0, r"damaged or truncated GGUF file \(its version is 0\)"), (1, "version 1"), (4, "version 4, newer"),
     (0x03000000, "big-endian")],
)
def test_versions(tmp_path, version, why):
    data = bytearray(sample_gguf())
    data[4:8] = version.to_bytes(4, "little")
    with pytest.raises(QuantDeskError, match=why):
        read_gguf_header(_write(tmp_path, bytes(data)))


def test_not_gguf_and_special_files(tmp_path):
    with pytest.raises(QuantDeskError, match="not a GGUF file"):
        read_gguf_header(_write(tmp_path, b"PK\3\4 a zip file"))
    fifo = tmp_path / "pipe.gguf"
    os.mkfifo(fifo)
    started = time.perf_counter()
    with pytest.raises(QuantDeskError, match="is a named pipe"):
        read_gguf_header(fifo)
    assert time.perf_counter() - started < 5


def test_importing_the_reader_stays_light():
    code = ("import sys, engine.gguf_header, engine.inspect\n"
            "print('HEAVY', [m for m in ('numpy', 'gguf', 'torch', 'transformers', 'llama_cpp') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_unknown_tensor_type_is_allowed_while_its_start_is_inside(tmp_path):
    header = read_gguf_header(_write(tmp_path, build_gguf([("general.architecture", STRING, "x")],
                                                          [("t", (4,), 250, 16)])))
    assert header.tensors[0].ggml_type == 250


def test_copy_of_a_real_gguf_is_read_from_any_folder(tmp_path, tiny_gguf):
    copy = shutil.copy(tiny_gguf, tmp_path / "copy.gguf")
    assert read_gguf_header(copy).parameters == read_gguf_header(tiny_gguf).parameters


def test_verify_reads_back_through_the_one_reader(tmp_path):
    from engine.backends.gguf.verify import verify_gguf
    from engine.demo import smollm2_gguf_path

    src = smollm2_gguf_path()
    header = read_gguf_header(src)
    assert verify_gguf(src, file_type=3, tensor_count=len(header.tensors), label="Q4_1") == header.parameters
    cut = _copy_head(src, tmp_path / "cut.gguf", src.stat().st_size - 4096)
    with pytest.raises(QuantDeskError, match=r"^The Q4_1 file came out damaged \(the tensor '[^']+' runs past the end "
                                             r"of the file\); nothing was kept, try again\.$"):
        verify_gguf(cut, file_type=3, tensor_count=len(header.tensors), label="Q4_1")


def test_verify_no_longer_subclasses_ggufs_reader():
    import engine.backends.gguf.verify as verify

    source = Path(verify.__file__).read_text()
    assert "_get_field_parts" not in source and "GGUFReader" not in source
