"""Ollama: a Modelfile beside the GGUF and ``ollama create NAME -f Modelfile``.

The Modelfile is the one QuantDesk writes for its model cards (chat template as a Go
template, stop tokens, default system prompt) plus the source's sampling defaults
from its generation_config.json. It is written as ``<file>.Modelfile`` beside the
GGUF (never over a file QuantDesk did not write); when ``ollama`` is installed the
create runs as a job whose output streams as progress, otherwise the command is
what the user copies.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import JobCancelled, QuantDeskError
from engine.jobs import JobGen, Progress

STEP = "export"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def ollama_name(text: str, tag: str | None = None) -> str:
    """A valid Ollama model name (``name:tag``, lower case, no spaces)."""
    base = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._") or "model"
    if tag:
        tag = re.sub(r"[^a-z0-9._-]+", "-", tag.lower()).strip("-._")
    return f"{base}:{tag}" if tag else base


def render(gguf: Path, *, from_line: str, source: Path | None = None) -> str:
    """The Modelfile text for ``gguf``, its FROM line pointing at ``from_line``."""
    from engine.export.source import generation_config
    from engine.modelcard import modelfile_parameters, read_chat_template, render_modelfile

    text = render_modelfile(from_line, read_chat_template(gguf))
    lines = text.splitlines()
    lines = [("FROM " + from_line) if line.startswith("FROM ") else line for line in lines]
    params = modelfile_parameters(generation_config(gguf, source))
    return "\n".join(lines + params) + "\n"


@dataclass
class OllamaPlan:
    gguf: Path
    name: str
    modelfile: Path
    text: str
    ollama: str | None  # the ollama executable, None when it is not installed
    notes: list[str] = field(default_factory=list)

    @property
    def argv(self) -> list[str]:
        return [self.ollama or "ollama", "create", self.name, "-f", str(self.modelfile)]

    @property
    def command(self) -> str:
        """The command to copy into a terminal."""
        return shlex.join(["ollama", "create", self.name, "-f", str(self.modelfile)])

    def to_dict(self) -> dict[str, Any]:
        return {"gguf": str(self.gguf), "name": self.name, "modelfile": str(self.modelfile), "command": self.command,
                "ollama_installed": self.ollama is not None, "modelfile_text": self.text, "notes": list(self.notes)}


def _write(path: Path, text: str, marker: str) -> bool:
    """Write ``path`` atomically unless a file QuantDesk did not write is there; False when refused or unwritable."""
    try:
        if path.exists():
            with path.open(encoding="utf-8", errors="replace") as fh:
                if fh.readline().rstrip("\n") != marker:
                    return False
        tmp = path.with_name(path.name + ".part")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        return True
    except OSError:
        return False


def plan_ollama(gguf: Path | str, name: str | None = None, *, source: Path | str | None = None) -> OllamaPlan:
    """Write the Modelfile and say how to create the Ollama model (run it with ``create_in_ollama``)."""
    from engine.export.source import check_gguf, display_name, gguf_type

    path = check_gguf(Path(gguf))
    model = name or ollama_name(display_name(path), gguf_type(path))
    if not re.fullmatch(r"[A-Za-z0-9._/-]+(:[A-Za-z0-9._-]+)?", model):
        raise QuantDeskError(f"'{model}' is not a valid Ollama model name; use letters, digits, '-', '_' and '.'.")
    src = Path(source).expanduser() if source else None
    beside = path.with_name(path.name + ".Modelfile")
    text = render(path, from_line=f"./{path.name}", source=src)
    marker = text.splitlines()[0]
    notes: list[str] = []
    if _write(beside, text, marker):
        modelfile = beside
    else:  # a folder we may not write, or someone else's file of that name: a private copy
        folder = Path(tempfile.mkdtemp(prefix="quantdesk-ollama-"))
        modelfile = folder / "Modelfile"
        text = render(path, from_line=str(path), source=src)
        modelfile.write_text(text, encoding="utf-8")
        notes.append(f"Could not write {beside}; the Modelfile is at {modelfile}.")
    return OllamaPlan(path, model, modelfile, text, shutil.which("ollama"), notes)


def create_in_ollama(plan: OllamaPlan, cancel: Any = None) -> JobGen[str]:
    """Run ``ollama create``; each line it prints is a Progress message. Returns the model name."""
    if plan.ollama is None:
        raise QuantDeskError(f"Ollama is not installed (no ollama on PATH); install it, then run: {plan.command}")
    try:
        proc = subprocess.Popen(plan.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=plan.modelfile.parent)
    except OSError as err:
        raise QuantDeskError(f"Cannot run {plan.ollama}: {err.strerror or err}.") from None
    lines: queue.Queue[str | None] = queue.Queue()

    def reader() -> None:
        assert proc.stdout is not None
        buffer = b""
        while chunk := proc.stdout.read1(4096):  # type: ignore[attr-defined]
            buffer += chunk
            *complete, buffer = re.split(rb"[\r\n]", buffer)
            for raw in complete:
                text = _ANSI.sub("", raw.decode("utf-8", errors="replace")).strip()
                if text:
                    lines.put(text)
        if buffer.strip():
            lines.put(_ANSI.sub("", buffer.decode("utf-8", errors="replace")).strip())
        lines.put(None)

    threading.Thread(target=reader, name="quantdesk-ollama-output", daemon=True).start()
    log: list[str] = []
    try:
        yield Progress(STEP, 0.0, f"Running: {plan.command}")
        while True:
            if cancel is not None and cancel.cancelled:
                raise JobCancelled(f"Cancelled; Ollama may have kept part of {plan.name}: ollama rm {plan.name}")
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                break
            log.append(line)
            yield Progress(STEP, 0.5, line, extra={"ollama": line})
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=3)
    if code != 0:
        last = log[-1] if log else f"exit code {code}"
        raise QuantDeskError(f"ollama create failed: {last}; is the Ollama server running (ollama serve)?")
    yield Progress(STEP, 1.0, f"Added to Ollama: ollama run {plan.name}")
    return plan.name
