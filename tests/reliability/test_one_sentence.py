"""Damaged and hostile inputs through the real command line: one sentence, exit 2, the user's files untouched.

Every case starts a real ``python -m engine`` process on files made here: a
malformed, deeply nested or huge config.json, broken index files, damaged
sidecars, pickle-only weights, a config that asks for remote code, a full
disk. Each asserts the exit status, a single stderr line without a traceback,
the ``error`` event of ``--json``, and that the folder the user pointed at is
byte-identical afterwards.
"""

from __future__ import annotations

import json
import os
import shlex
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from engine.artifacts import SIDECAR_SUFFIX, read_sidecar, sidecar_path, update_evaluation, write_sidecar
from engine.modelcard import MODELFILE_NAME, render_card, render_modelfile, write_model_card

ROOT = Path(__file__).resolve().parents[2]
LLAMA_CONFIG = ROOT / "tests" / "fixtures" / "configs" / "llama-2-7b.json"


def run_cli(*args: str | Path, stdout: int | None = None, timeout: float = 180,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    environ.pop("QUANTDESK_DEBUG", None)
    environ.pop("QUANTDESK_ALLOW_PICKLE", None)
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], capture_output=stdout is None,
                          stdout=stdout, stderr=subprocess.PIPE if stdout is not None else None,
                          text=True, timeout=timeout, env=environ, cwd=ROOT)


def assert_one_sentence(proc: subprocess.CompletedProcess, *, json_mode: bool = False, code: int = 2) -> str:
    """The failure is one line on stderr (and one error event on stdout with --json); returns the sentence."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    # Progress lines ("Loading ...") may come first; the failure itself is the last line, and the only error.
    errors = [line for line in lines if line.startswith("quantdesk: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and proc.stderr.endswith("\n"), proc.stderr
    message = errors[0].removeprefix("quantdesk: error: ")
    assert message[-1] in ".?", message  # a sentence, not a fragment of a traceback
    if json_mode:
        events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        assert events and events[-1]["event"] == "error", proc.stdout
        assert events[-1]["message"] == message
    return message


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for folders): compared before and after."""
    found: dict[str, bytes | None] = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            found[key] = os.readlink(path).encode()
        elif path.is_dir():
            found[key] = None
        elif path.stat().st_size > 1024**2:
            found[key] = f"{path.stat().st_size} bytes, mtime {path.stat().st_mtime_ns}".encode()
        else:
            found[key] = path.read_bytes()
    return found


def model_folder(tmp_path: Path, config: dict | str | bytes | None = None, name: str = "model") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    if config is None:
        config = json.loads(LLAMA_CONFIG.read_text())
    if isinstance(config, dict):
        config = json.dumps(config)
    if isinstance(config, str):
        config = config.encode()
    (folder / "config.json").write_bytes(config)
    return folder


def safetensors_bytes(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


# --------------------------------------------------------------------------- config.json

NESTED = '{"hidden_size": ' + "[" * 200_000 + "]" * 200_000 + "}"


@pytest.mark.parametrize(
    ("config", "expect"),
    [
        ("{not json", "not valid JSON"),
        (NESTED, "nested far too deeply"),
        (b"\xff\xfe\x00garbage", "not JSON"),
        ('{"hidden_size": "big", "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": 10}', "sizes"),
        ("[1, 2, 3]", "expected a JSON object"),
        ('{"hidden_size": 1e400, "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": 10}', "sizes"),
        ('{"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": ' + "9" * 5000 + "}",
         "download"),
        ('{"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": 10, '
         '"head_dim": [1], "architectures": ["LlamaForCausalLM"]}', "malformed value"),
        ('{"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": 10, '
         '"architectures": {"a": 1}}', "malformed value"),
        ('{"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": 10, '
         '"n_shared_experts": "x", "num_experts": 4}', "malformed value"),
    ],
    ids=["not-json", "deeply-nested", "not-text", "string-size", "a-list", "infinite", "5000-digits",
         "list-head-dim", "dict-architectures", "string-experts"],
)
def test_malformed_config_is_one_sentence(tmp_path, config, expect):
    folder = model_folder(tmp_path, config)
    before = snapshot(tmp_path)
    for command in ("inspect", "recommend"):
        message = assert_one_sentence(run_cli(command, folder))
        assert expect in message and "config.json" in message
        message = assert_one_sentence(run_cli(command, folder / "config.json", "--json"), json_mode=True)
        assert expect in message
    assert snapshot(tmp_path) == before


def test_huge_config_is_refused_without_reading_it(tmp_path):
    folder = model_folder(tmp_path)
    with (folder / "config.json").open("r+b") as fh:
        fh.truncate(64 * 1024**2)  # sparse: a huge file that costs no disk
    before = snapshot(tmp_path)
    message = assert_one_sentence(run_cli("inspect", folder, "--json"), json_mode=True)
    assert "larger than any config.json" in message
    assert snapshot(tmp_path) == before


def test_config_and_index_that_are_fifos_are_not_waited_on(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    os.mkfifo(folder / "config.json")
    assert_one_sentence(run_cli("inspect", folder, timeout=60))
    folder = model_folder(tmp_path, name="sharded")
    os.mkfifo(folder / "model.safetensors.index.json")
    (folder / "model-00001-of-00001.safetensors").write_bytes(safetensors_bytes({}))
    assert run_cli("inspect", folder, "--json", timeout=60).returncode in (0, 2)


# --------------------------------------------------------------------------- index and safetensors headers


@pytest.mark.parametrize(
    ("index", "expect"),
    [
        ("{broken", "not valid JSON"),
        ('{"weight_map": []}', "damaged"),
        ('{"weight_map": {"w": 5}}', "damaged"),
        ('{"weight_map": {"w": "../../../etc/passwd"}}', "outside its folder"),
        ('{"weight_map": {"w": "/etc/passwd"}}', "outside its folder"),
        ('{"weight_map": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested far too deeply"),
        ("[]", "damaged"),
    ],
    ids=["not-json", "list-map", "int-shard", "relative-escape", "absolute-escape", "nested", "a-list"],
)
def test_broken_index_is_one_sentence(tmp_path, index, expect):
    folder = model_folder(tmp_path)
    (folder / "model.safetensors.index.json").write_text(index)
    (folder / "model-00001-of-00001.safetensors").write_bytes(safetensors_bytes({}))
    before = snapshot(tmp_path)
    message = assert_one_sentence(run_cli("inspect", folder))
    assert expect in message and "index" in message
    message = assert_one_sentence(run_cli("recommend", folder, "--json"), json_mode=True)
    assert expect in message
    assert snapshot(tmp_path) == before


def test_safetensors_header_with_wrong_types_is_one_sentence(tmp_path):
    folder = model_folder(tmp_path)
    header = {"w": {"dtype": "F32", "shape": ["many"], "data_offsets": [0, 4]}}
    (folder / "model.safetensors").write_bytes(safetensors_bytes(header, b"\0" * 4))
    before = snapshot(folder)
    assert_one_sentence(run_cli("inspect", folder))
    assert_one_sentence(run_cli("inspect", folder, "--json"), json_mode=True)
    out = tmp_path / "out"
    assert_one_sentence(run_cli("quantize", folder, "--to", "Q8_0", "--out", out, "--json"), json_mode=True)
    assert snapshot(folder) == before
    assert not out.exists() or list(out.iterdir()) == []


# --------------------------------------------------------------------------- sidecars


def _outputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    folder = tmp_path / "out"
    folder.mkdir()
    good = folder / "m-Q8_0.gguf"
    bad = folder / "m-Q4_K_M.gguf"
    for path in (good, bad):
        path.write_bytes(b"GGUF" + b"\0" * 60)
    write_sidecar(good, format="gguf:Q8_0", source=tmp_path / "m")
    write_sidecar(bad, format="gguf:Q4_K_M", source=tmp_path / "m")
    (tmp_path / "m").mkdir()  # the source they name
    return folder, good, bad


DAMAGED = {
    "not-json": b'{"format": "gguf:Q4_K_M", ',
    "wrong-types": json.dumps({"format": 4, "size_bytes": "big", "evaluation": [1, 2]}).encode(),
    "evaluation-a-list": json.dumps({"format": "gguf:Q4_K_M", "source": "", "evaluation": []}).encode(),
    "nested": b'{"options": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "not-utf8": b"\xff\xfe\xfa",
    "a-list": b"[]",
}


@pytest.mark.parametrize("damage", sorted(DAMAGED))
def test_damaged_sidecar_is_skipped_with_one_warning(tmp_path, damage):
    folder, good, bad = _outputs(tmp_path)
    sidecar_path(bad).write_bytes(DAMAGED[damage])
    before = snapshot(tmp_path)

    listed = run_cli("list", folder)
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    warnings = listed.stderr.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("quantdesk: warning: Skipped m-Q4_K_M.gguf")
    assert good.name in listed.stdout and bad.name not in listed.stdout

    as_json = run_cli("list", folder, "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert [a["name"] for a in data["artifacts"]] == [good.name] and len(data["warnings"]) == 1

    everything = run_cli("list", folder, "--all", "--json")
    names = {a["name"]: a["tracked"] for a in json.loads(everything.stdout)["artifacts"]}
    assert names == {good.name: True, bad.name: False}  # still shown, as made elsewhere

    compared = run_cli("compare", folder)
    assert compared.returncode == 0 and "Traceback" not in compared.stderr, compared.stderr
    assert len(compared.stderr.splitlines()) == 1 and "m-Q4_K_M.gguf" in compared.stderr
    assert good.name in compared.stdout and bad.name not in compared.stdout
    compared = run_cli("compare", tmp_path / "m", "--json")  # by source: the outputs folder is a child
    assert compared.returncode == 0 and [r["name"] for r in json.loads(compared.stdout)] == [good.name]
    assert snapshot(tmp_path) == before


def test_huge_sidecar_is_skipped_without_reading_it(tmp_path):
    folder, good, bad = _outputs(tmp_path)
    with sidecar_path(bad).open("r+b") as fh:
        fh.truncate(256 * 1024**2)
    listed = run_cli("list", folder, timeout=60)
    assert listed.returncode == 0 and "bytes" in listed.stderr and len(listed.stderr.splitlines()) == 1


def test_every_sidecar_damaged_leaves_compare_one_sentence(tmp_path):
    folder, good, bad = _outputs(tmp_path)
    for path in (good, bad):
        sidecar_path(path).write_text("{")
    before = snapshot(tmp_path)
    proc = run_cli("compare", folder, "--json")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len([x for x in lines if x.startswith("quantdesk: warning: ")]) == 2
    assert lines[-1].startswith("quantdesk: error: No QuantDesk outputs found")
    assert json.loads(proc.stdout.splitlines()[-1])["event"] == "error"
    assert snapshot(tmp_path) == before


def test_evaluation_results_survive_a_damaged_sidecar(tmp_path):
    folder, good, bad = _outputs(tmp_path)
    for damage in DAMAGED.values():
        sidecar_path(bad).write_bytes(damage)
        record = update_evaluation(bad, {"ppl": 12.5, "n_ctx": 64})
        assert record.evaluation["ppl"] == 12.5
        again = read_sidecar(bad)
        assert again is not None and again.evaluation == {"ppl": 12.5, "n_ctx": 64}
        assert again.format == "gguf:Q4_K_M"  # read back from the file's name
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [good.name, bad.name, good.name + SIDECAR_SUFFIX, bad.name + SIDECAR_SUFFIX])


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["not-json", "evaluation-a-list"])
def test_eval_keeps_its_results_when_the_sidecar_is_damaged(tmp_path, tiny_nochat_gguf, damage):
    from engine.evaluate.texts import default_text

    model = tmp_path / "tiny-F16.gguf"
    model.symlink_to(tiny_nochat_gguf)
    sidecar_path(model).write_bytes(DAMAGED[damage])
    text = tmp_path / "sample.txt"
    text.write_text(default_text()[:1500])
    proc = run_cli("eval", model, "--text", text, "--ctx", "32", "--no-speed", "--threads", "1", "--json",
                   timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    record = read_sidecar(model)
    assert record is not None and record.evaluation["ppl"] == data["ppl"] and record.format == "gguf:F16"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([model.name, sidecar_path(model).name, text.name])


def test_sidecar_write_on_a_full_disk_leaves_the_old_one(tmp_path):
    """A real full file system (a 1 MiB tmpfs): the old sidecar stays whole, no temporary file is left."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        art = mount / "m-Q8_0.gguf"
        art.write_bytes(b"GGUF")
        write_sidecar(art, format="gguf:Q8_0", source=tmp_path / "m")
        old = sidecar_path(art).read_bytes()
        filler = mount / "filler"
        with filler.open("wb", buffering=0) as fh, pytest.raises(OSError):
            while True:
                fh.write(b"\0" * 65536)
        with pytest.raises(OSError) as err:
            update_evaluation(art, {"ppl": 1.0, "notes": "x" * 200_000})
        assert err.value.errno == 28
        assert sidecar_path(art).read_bytes() == old
        assert sorted(p.name for p in mount.iterdir()) == sorted([art.name, sidecar_path(art).name, "filler"])
    finally:
        subprocess.run(["umount", str(mount)], check=False)


# --------------------------------------------------------------------------- disk full and OS errors


def test_disk_full_on_stdout_says_disk_full(tmp_path):
    """/dev/full answers every write with ENOSPC, as a full disk does."""
    folder, _good, _bad = _outputs(tmp_path)
    with open("/dev/full", "w") as full:
        proc = run_cli("list", folder, "--json", stdout=full)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("quantdesk: error: disk full"), proc.stderr


def test_unreadable_config_is_one_sentence(tmp_path):
    folder = model_folder(tmp_path)
    (folder / "config.json").chmod(0)
    if os.access(folder / "config.json", os.R_OK):
        pytest.skip("running as root: permissions do not stop reads")
    assert_one_sentence(run_cli("inspect", folder))


# --------------------------------------------------------------------------- pickle weights and remote code

MARKER = "quantdesk-pickle-ran"


def _pickle_that_runs_code(marker: Path) -> bytes:
    """A pickle that creates ``marker`` when loaded: what a hostile .bin can do."""
    import pickle

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    return pickle.dumps(Payload())


def test_pickle_only_weights_are_refused(tmp_path):
    folder = model_folder(tmp_path)
    marker = tmp_path / MARKER
    (folder / "pytorch_model.bin").write_bytes(_pickle_that_runs_code(marker))
    before = snapshot(folder)
    for argv in (["chat", folder, "--prompt", "hi"], ["chat", folder, "--prompt", "hi", "--json"],
                 ["eval", folder, "--no-speed", "--json"]):
        message = assert_one_sentence(run_cli(*argv), json_mode="--json" in argv)
        assert "pickle" in message and "--allow-pickle" in message
    assert not marker.exists() and snapshot(folder) == before


@pytest.mark.slow
def test_pickle_only_weights_are_refused_by_quantize(tmp_path, tiny_dir):
    folder = model_folder(tmp_path, (tiny_dir / "config.json").read_text())
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((tiny_dir / name).read_bytes())
    marker = tmp_path / MARKER
    (folder / "pytorch_model.bin").write_bytes(_pickle_that_runs_code(marker))
    before = snapshot(folder)
    out = tmp_path / "out"
    message = assert_one_sentence(run_cli("quantize", folder, "--to", "Q8_0", "--out", out, "--json", timeout=300),
                                  json_mode=True)
    assert "pickle" in message and "--allow-pickle" in message
    assert not marker.exists() and snapshot(folder) == before


def test_allow_pickle_is_offered_where_weights_load():
    for command in ("quantize", "chat", "eval"):
        proc = run_cli(command, "--help")
        assert proc.returncode == 0 and "--allow-pickle" in proc.stdout, command


def test_remote_code_never_runs(tmp_path):
    marker = tmp_path / "remote-code-ran"
    config = {
        "model_type": "quantdesk-hostile", "architectures": ["HostileForCausalLM"],
        "auto_map": {"AutoConfig": "hostile.HostileConfig", "AutoModelForCausalLM": "hostile.HostileForCausalLM"},
        "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": 100,
    }
    folder = model_folder(tmp_path, config)
    (folder / "hostile.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\n")
    (folder / "model.safetensors").write_bytes(safetensors_bytes({}))
    before = snapshot(folder)
    for argv in (["chat", folder, "--prompt", "hi"], ["eval", folder, "--no-speed", "--json"]):
        message = assert_one_sentence(run_cli(*argv), json_mode="--json" in argv)
        assert "never runs" in message and "auto_map" in message
    assert not marker.exists() and snapshot(folder) == before


GUARD_SCRIPT = """
import json, sys
from pathlib import Path
from engine.errors import QuantDeskError
if sys.argv[3] == "guarded":
    from engine.trust import forbid_remote_code
    forbid_remote_code()
from transformers import AutoConfig, AutoTokenizer
custom, tokenizer = Path(sys.argv[1]), Path(sys.argv[2])
try:
    AutoConfig.from_pretrained(custom, trust_remote_code=True)
    print("config loaded")
except QuantDeskError as err:
    print("refused:", err)
try:
    print(type(AutoTokenizer.from_pretrained(tokenizer, trust_remote_code=True)).__name__)
except Exception as err:
    print("failed:", type(err).__name__)
"""


def test_remote_code_cannot_run_even_when_a_caller_trusts_it(tmp_path, tiny_dir):
    """llama.cpp's converter passes trust_remote_code=True when it reads a tokenizer: the guard still holds."""
    marker = tmp_path / "remote-code-ran"
    touch = f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
    custom = model_folder(tmp_path, {"model_type": "quantdesk-hostile", "auto_map": {"AutoConfig": "hostile.C"}},
                          name="custom")
    (custom / "hostile.py").write_text(touch)
    tokenizer = tmp_path / "tokenizer"
    tokenizer.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (tokenizer / name).write_bytes((tiny_dir / name).read_bytes())
    settings = json.loads((tokenizer / "tokenizer_config.json").read_text())
    settings["auto_map"] = {"AutoTokenizer": ["hostile.HostileTokenizer", None]}
    (tokenizer / "tokenizer_config.json").write_text(json.dumps(settings))
    (tokenizer / "hostile.py").write_text(touch)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run(mode: str) -> str:
        return subprocess.run([sys.executable, "-c", GUARD_SCRIPT, str(custom), str(tokenizer), mode],
                              capture_output=True, text=True, timeout=300, env=env, cwd=ROOT).stdout

    out = run("guarded")
    assert "refused: custom needs its own Python code" in out and "failed" not in out, out
    assert not marker.exists()
    run("unguarded")  # the control: without the guard, transformers imports the folder's code
    assert marker.exists()


def test_loader_messages_are_translated():
    from engine.failures import translate_message
    from engine.trust import explain_loader_error

    remote = ("Loading x requires you to execute the configuration file in that repo on your local machine. "
              "Make sure you have read the code there to avoid malicious use, then set the option "
              "`trust_remote_code=True` to remove this error.")
    assert "never runs" in explain_loader_error(ValueError(remote), "x")
    pickled = "Weights only load failed. In PyTorch 2.6, we changed the default value of the `weights_only`"
    assert ".safetensors" in explain_loader_error(RuntimeError(pickled), "x")
    assert explain_loader_error(ValueError("shapes differ"), "x") is None
    assert "never runs" in translate_message(f"ValueError: {remote}")


# --------------------------------------------------------------------------- terminal output


def test_control_characters_in_metadata_never_reach_the_terminal(tmp_path):
    config = json.loads(LLAMA_CONFIG.read_text())
    config["architectures"] = ["Llama\x1b[2J\x1b]0;owned\x07ForCausalLM\nSecond line"]
    config["torch_dtype"] = "float16\x9b31m"
    folder = model_folder(tmp_path, config, name="evil\x1b[31mname")
    proc = run_cli("inspect", folder)
    assert proc.returncode == 0, proc.stderr
    assert not any(ch in proc.stdout for ch in "\x1b\x07\x9b")
    assert "Llama[2J]0;ownedForCausalLM Second line" in proc.stdout
    keys = ("Model", "Kind", "Architecture", "Parameters", "Data type", "Context", "Layers", "Heads",
            "Tokenizer", "Chat template", "GGUF convertible")
    assert all(line.startswith(keys) for line in proc.stdout.splitlines()), proc.stdout
    proc = run_cli("recommend", folder, "--cpu-only")
    assert proc.returncode == 0 and "\x1b" not in proc.stdout


def test_error_sentences_carry_no_control_characters(tmp_path):
    folder = tmp_path / "bad\x1b[2Jname\nFROM x"
    folder.mkdir()
    (folder / "config.json").write_text("{")
    message = assert_one_sentence(run_cli("inspect", folder))
    assert "\x1b" not in message and "not valid JSON" in message


# --------------------------------------------------------------------------- model card and Modelfile


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """(command, value) pairs read the way Ollama reads a Modelfile.

    A value starts after the command (and, for PARAMETER, its name) and ends at
    the first line break where, spaces trimmed, it is complete: a bare value
    always is, a "..." value once it ends with a quote, a triple-quoted value once
    it ends with three quotes. There is no escape character.
    """
    def complete(value: str) -> bool:
        if value.startswith('"""'):
            return len(value) >= 6 and value.endswith('"""')
        if value.startswith('"'):
            return len(value) >= 2 and value.endswith('"')
        return True

    def unquote(value: str) -> str:
        if value.startswith('"""'):
            return value[3:-3]
        return value[1:-1] if value.startswith('"') else value

    def line_end(i: int) -> int:
        ends = [j for j in (text.find("\n", i), text.find("\r", i)) if j >= 0]
        return min(ends, default=len(text))

    commands: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in " \t\r\n":
            i += 1
            continue
        if text[i] == "#":
            i = line_end(i)
            continue
        start = i
        while i < n and text[i].isalpha():
            i += 1
        name = text[start:i].lower()
        assert name and i < n and text[i] in " \t", f"not a command at {start}: {text[start:start + 30]!r}"
        i += 1
        if name == "parameter":
            start = i
            while i < n and (text[i].isalnum() or text[i] == "_"):
                i += 1
            name = text[start:i]
            assert name and i < n and text[i] in " \t"
            i += 1
        start = i
        while True:
            end = line_end(i)
            value = text[start:end].strip()
            if complete(value):
                commands.append((name, unquote(value)))
                i = end
                break
            assert end < n, f"unterminated value for {name}"
            i = end + 1
    return commands


HOSTILE_SYSTEM = 'You are helpful."""\nFROM /etc/passwd\nSYSTEM """pwned'
HOSTILE_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    f"<|im_start|>system\n{HOSTILE_SYSTEM}<|im_end|>"
)


def test_modelfile_system_prompt_stays_in_its_block():
    text = render_modelfile("smollm2-Q4_K_M.gguf", HOSTILE_TEMPLATE)
    commands = parse_modelfile(text)
    names = [name for name, _ in commands]
    assert names[:3] == ["from", "template", "system"] and set(names[3:]) == {"stop"}
    assert dict(commands)["from"] == "./smollm2-Q4_K_M.gguf"
    system = dict(commands)["system"]
    assert "FROM /etc/passwd" in system and system.startswith("You are helpful.")
    assert '"""' not in system


@pytest.mark.parametrize("quotes", ['"', '""', '"""', '""""', '"""""" ', '" """ "'])
def test_any_run_of_quotes_stays_in_its_block(quotes):
    template = f"<|im_start|>system\n{quotes}x{quotes}\nFROM /etc/passwd {quotes}<|im_end|>"
    commands = parse_modelfile(render_modelfile("a.gguf", template))
    assert [n for n, _ in commands].count("from") == 1 and dict(commands)["from"] == "./a.gguf"


@pytest.mark.parametrize("name", ["my model.gguf", 'a" b.gguf', '"""x""".gguf', " lead and trail .gguf ",
                                  "it's $(x) `y`.gguf"])
def test_modelfile_from_names_the_file_exactly(name):
    commands = parse_modelfile(render_modelfile(name, HOSTILE_TEMPLATE))
    assert [n for n, _ in commands].count("from") == 1 and dict(commands)["from"] == f"./{name}"


def test_modelfile_is_not_written_for_a_name_with_a_line_break():
    assert render_modelfile('a"\nFROM /etc/passwd.gguf', None) is None
    assert render_modelfile("a\rFROM b.gguf", None) is None


def test_written_modelfile_and_card_quote_what_came_from_the_user(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    name = "it's $(touch pwned); rm -rf ~ `x`.gguf"
    art = folder / name
    art.write_bytes(b"GGUF")
    write_sidecar(art, format="gguf:Q4_K_M", source=tmp_path / "src|x")
    card = write_model_card(folder, source=tmp_path / "src|x", chat_template=HOSTILE_TEMPLATE)
    text = card.read_text()

    commands = parse_modelfile((folder / MODELFILE_NAME).read_text())
    assert [n for n, _ in commands].count("from") == 1 and dict(commands)["from"] == f"./{name}"
    assert "FROM /etc/passwd" in dict(commands)["system"]

    shell = [line for line in text.splitlines() if line.startswith(("llama-cli", "llama-server"))]
    assert len(shell) == 2 and all(shlex.split(line)[2] == name for line in shell)
    python = next(line for line in text.splitlines() if line.startswith("llm = Llama("))
    import ast

    call = ast.parse(python).body[0].value
    assert call.keywords[0].value.value == name
    row = next(line for line in text.splitlines() if line.startswith("| ``"))
    assert row.count(" | ") == 4  # the table keeps its five columns
    # The Modelfile shown in the card sits in a fence its own text cannot close.
    fence = next(line for line in text.splitlines()[text.splitlines().index("## Run it with Ollama"):]
                 if line.startswith("```") and line.strip("`") == "")
    assert fence == "```"


def test_card_for_a_bitsandbytes_folder_quotes_its_name():
    from engine.artifacts import Artifact

    art = Artifact(path=Path("/x/my \"nf4\" model"), format="hf:bnb-nf4", source="", size_bytes=10)
    text = render_card([art], source=None, chat_template=None, modelfile=None)
    import ast

    line = next(x for x in text.splitlines() if x.startswith("model = "))
    assert ast.parse(line).body[0].value.args[0].value == 'my "nf4" model'


# --------------------------------------------------------------------------- conversion and bitsandbytes workers


def _small_disk(mount: Path, size: str) -> None:
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")


@pytest.mark.slow
@pytest.mark.parametrize("size", ["1m", "12m"], ids=["full-in-the-header", "full-in-the-tensors"])
def test_disk_full_during_conversion_says_disk_full(tmp_path, tiny_dir, size):
    """The real converter in its real child process, writing onto a small tmpfs until it is full."""
    from engine.backends.gguf.convert import convert_worker
    from engine.errors import QuantDeskError
    from engine.jobs import run_in_child

    mount = tmp_path / "small"
    _small_disk(mount, size)
    try:
        with pytest.raises(QuantDeskError) as err:
            for _ in run_in_child(convert_worker, str(tiny_dir), str(mount / "tiny-F16.gguf.part"), "F16", None, {}):
                pass
        message = str(err.value)
        assert message.startswith("disk full while writing tiny-F16.gguf.part"), message
        assert "tokenizer" not in message and "\n" not in message
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def _tiny_copy(tiny_dir: Path, dest: Path) -> Path:
    dest.mkdir()
    for path in tiny_dir.iterdir():
        if not path.name.startswith("."):
            (dest / path.name).write_bytes(path.read_bytes())
    return dest


@pytest.mark.slow
def test_converter_never_runs_a_tokenizer_s_own_code(tmp_path, tiny_dir):
    """llama.cpp's converter asks for the tokenizer with trust_remote_code=True; the folder's code still never runs."""
    source = _tiny_copy(tiny_dir, tmp_path / "tiny")
    marker = tmp_path / "remote-code-ran"
    settings = json.loads((source / "tokenizer_config.json").read_text())
    settings["auto_map"] = {"AutoTokenizer": ["hostile.HostileTokenizer", None]}
    (source / "tokenizer_config.json").write_text(json.dumps(settings))
    (source / "hostile.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\n")
    before = snapshot(source)
    out = tmp_path / "out"
    proc = run_cli("quantize", source, "--to", "Q8_0", "--out", out, "--json", timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists() and snapshot(source) == before
    assert (out / "tiny-Q8_0.gguf").is_file()


@pytest.mark.slow
def test_bitsandbytes_refuses_to_ship_without_a_tokenizer(tmp_path, tiny_dir):
    source = _tiny_copy(tiny_dir, tmp_path / "tiny")
    (source / "tokenizer.json").write_text("{")
    before = snapshot(source)
    out = tmp_path / "out"
    message = assert_one_sentence(
        run_cli("quantize", source, "--to", "bnb-nf4", "--out", out, "--device", "cpu", "--json", timeout=600),
        json_mode=True)
    assert message.startswith("tiny's tokenizer does not load") and "copy tokenizer.json" in message
    assert snapshot(source) == before
    assert not out.exists() or [p.name for p in out.iterdir() if not p.name.startswith(".")] == []
