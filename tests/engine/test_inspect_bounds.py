"""Inspecting never blocks on special files and never trusts a safetensors header's sizes."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.errors import QuantDeskError
from engine.inspect import inspect_model, read_safetensors_header


def _inspect_within(path: Path, seconds: float) -> QuantDeskError:
    """inspect_model(path) run on a thread that must come back within ``seconds`` with a QuantDeskError."""
    box: dict[str, BaseException | None] = {"error": None}

    def run() -> None:
        try:
            inspect_model(path)
        except BaseException as err:  # noqa: BLE001 - examined below
            box["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if path.is_fifo():  # give the blocked open its writer, so the test run can end
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        raise AssertionError(f"inspect of {path} did not return within {seconds} s")
    assert isinstance(box["error"], QuantDeskError), box["error"]
    return box["error"]


@pytest.mark.parametrize("name", ["model.gguf", "config.json", "weights"])
def test_fifo_is_refused_at_once(tmp_path, name):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    err = _inspect_within(fifo, 5)
    assert str(err) == (f"{fifo} is a named pipe (FIFO), not a model file; point at a .gguf file, a config.json "
                        "or a model folder.")


def test_fifo_in_a_folder_is_refused(tmp_path):
    os.mkfifo(tmp_path / "model.gguf")
    err = _inspect_within(tmp_path, 5)
    assert "named pipe (FIFO)" in str(err)


def test_cli_on_a_fifo_is_one_line(tmp_path):
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    out = subprocess.run([sys.executable, "-m", "engine", "inspect", str(fifo)], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert [line for line in out.stderr.splitlines() if line.strip()] == [
        f"quantdesk: error: {fifo} is a named pipe (FIFO), not a model file; point at a .gguf file, a config.json or a model folder."]


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_device_is_refused():
    err = _inspect_within(Path("/dev/zero"), 5)
    assert "/dev/zero is a character device, not a model file" in str(err)


# --------------------------------------------------------------------------- safetensors headers


def _safetensors(path: Path, header: dict | bytes, data: int, length: int | None = None) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + b"\0" * data)
    return path


def _tensor(start: int, end: int, shape: list[int] | None = None, dtype: str = "F16") -> dict:
    return {"dtype": dtype, "shape": shape if shape is not None else [(end - start) // 2], "data_offsets": [start, end]}


def test_good_header_reads(tmp_path):
    path = _safetensors(tmp_path / "a.safetensors", {"__metadata__": {"format": "pt"}, "w": _tensor(0, 64)}, 64)
    assert read_safetensors_header(path)["w"]["shape"] == [32]


@pytest.mark.parametrize(
    ("header", "data", "why"),
    [
        ({"w": _tensor(0, 128)}, 64, "shorter than its header says"),
        ({"w": _tensor(64, 32)}, 64, "header is damaged"),
        ({"w": _tensor(0, 64, [33])}, 64, "header is damaged"),
        ({"w": {"dtype": "F16", "shape": [2], "data_offsets": [0, "4"]}}, 64, "header is damaged"),
        ({"w": {"dtype": "F16", "shape": [1e400], "data_offsets": [0, 4]}}, 64, "header is damaged"),
        ({"w": {"dtype": "F16", "shape": [-2], "data_offsets": [0, 4]}}, 64, "header is damaged"),
        ({"w": [1, 2]}, 64, "header is damaged"),
        ({"__metadata__": {"format": {"deep": 1}}}, 0, "header is damaged"),
        ([1, 2, 3], 0, "not a valid safetensors file"),
        (b"[" * 100_000 + b"]" * 100_000, 0, "header is not JSON"),
        (b"\xff\xfe{}", 0, "header is not JSON"),
    ],
)
def test_bad_headers_are_one_sentence(tmp_path, header, data, why):
    path = _safetensors(tmp_path / "b.safetensors", header, data)
    with pytest.raises(QuantDeskError, match=why):
        read_safetensors_header(path)


def test_header_length_is_capped_before_reading(tmp_path):
    path = _safetensors(tmp_path / "c.safetensors", b"{}", 0, length=2**40)
    started = time.perf_counter()
    with pytest.raises(QuantDeskError, match="claims 1099511627776 bytes"):
        read_safetensors_header(path)
    assert time.perf_counter() - started < 1


def test_header_longer_than_the_file(tmp_path):
    path = _safetensors(tmp_path / "d.safetensors", b"{}", 0, length=1000)
    with pytest.raises(QuantDeskError, match="truncated safetensors header"):
        read_safetensors_header(path)


def test_real_checkpoint_headers_pass(tiny_dir):
    info = inspect_model(tiny_dir)
    assert info.parameters > 0 and not info.parameters_estimated
