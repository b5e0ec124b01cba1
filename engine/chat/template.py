"""Rendering a model's chat template with a time limit, a memory limit and an output size limit.

A template from a model (GGUF metadata or a tokenizer's config) can loop forever
or build gigabytes of text inside the Jinja sandbox. It is rendered in a small
child process (``template_worker``) that is started once per chat, limited in
memory and CPU time, and killed when one rendering takes too long; its output
stops at a size proportional to the conversation. Each of those ends in one
sentence instead of a hung or exhausted QuantDesk.
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from engine.errors import QuantDeskError

TIMEOUT_S = 5.0  # one rendering; real templates take milliseconds
START_TIMEOUT_S = 60.0  # starting Python and importing jinja2 on a busy machine
MEMORY_BYTES = 1024**3  # address space of the child
CPU_SECONDS = 120  # the child's own backstop should its parent vanish mid-render
BASE_OUTPUT = 1024**2  # characters a template may add to the conversation's own text
_WORKER = Path(__file__).with_name("template_worker.py")
_FIX = "use another model or fix its chat template"


def output_limit(context: dict[str, Any]) -> int:
    """How much text a rendering may produce: the conversation's own text four times over, plus 1 MiB."""
    messages = context.get("messages") or []
    text = sum(len(str(m.get("content") or "")) for m in messages if isinstance(m, dict))
    return BASE_OUTPUT + 4 * text


class TemplateRenderer:
    """One chat template rendered in a guarded child process; ``close`` ends the child."""

    def __init__(self, template: str, *, timeout_s: float = TIMEOUT_S, memory_bytes: int = MEMORY_BYTES) -> None:
        self.template = template
        self.timeout_s = timeout_s
        self.memory_bytes = memory_bytes
        self._proc: subprocess.Popen[bytes] | None = None
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._lock = threading.Lock()

    def render(self, context: dict[str, Any]) -> str:
        """The template's text for ``context`` (messages, special tokens, add_generation_prompt)."""
        limit = output_limit(context)
        request = json.dumps({"template": self.template, "context": context, "limit": limit}) + "\n"
        with self._lock:
            proc = self._started()
            try:
                assert proc.stdin is not None
                proc.stdin.write(request.encode("ascii"))
                proc.stdin.flush()
            except OSError:
                self._stop()
                raise QuantDeskError(f"The chat template renderer stopped unexpectedly; {_FIX}.") from None
            line = self._next_line(self.timeout_s)
            if line is None:
                self._stop()
                raise QuantDeskError(
                    f"The model's chat template did not finish within {self.timeout_s:g} seconds "
                    f"(it may loop forever); {_FIX}."
                )
            answer = _decode(line)
            if answer is None:
                self._stop()
                raise QuantDeskError(f"The chat template renderer stopped unexpectedly (out of memory?); {_FIX}.")
        if "text" in answer and isinstance(answer["text"], str):
            return answer["text"]
        kind, message = answer.get("error"), str(answer.get("message", ""))
        if kind == "size":
            raise QuantDeskError(
                f"The model's chat template produced more than {limit // 1024**2 or 1} MB of text for this "
                f"conversation (it may loop); {_FIX}."
            )
        if kind == "memory":
            with self._lock:
                self._stop()
            raise QuantDeskError(
                f"The model's chat template needed more than {self.memory_bytes // 1024**2} MB of memory; {_FIX}."
            )
        raise QuantDeskError(f"The model's chat template failed ({message}); try without a system prompt.")

    def close(self) -> None:
        with self._lock:
            self._stop()

    def __del__(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    # --- the child ------------------------------------------------------------------------------

    def _started(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._stop()
        source = _WORKER.read_text(encoding="utf-8")
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-c", source, str(self.memory_bytes), str(CPU_SECONDS)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )
        except OSError as err:
            raise QuantDeskError(f"Cannot start the chat template renderer ({err.strerror or err}); "
                                 "check that QuantDesk's Python still runs.") from None
        self._proc, self._lines = proc, queue.Queue()
        assert proc.stdout is not None
        threading.Thread(target=_pump, args=(proc.stdout, self._lines), name="chat-template-reader",
                         daemon=True).start()
        ready = self._next_line(START_TIMEOUT_S)
        if ready is None or _decode(ready) != {"ready": True}:
            self._stop()
            raise QuantDeskError("The chat template renderer did not start (is jinja2 installed?); "
                                 "reinstall QuantDesk.")
        return proc

    def _next_line(self, timeout: float) -> bytes | None:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        for pipe in (proc.stdin, proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass


def _pump(stdout: IO[bytes], lines: queue.Queue[bytes | None]) -> None:
    """Hand the child's answer lines to the parent; None once the child is gone."""
    try:
        for line in stdout:
            lines.put(line)
    except (OSError, ValueError):
        pass
    lines.put(None)


def _decode(line: bytes) -> dict[str, Any] | None:
    try:
        answer = json.loads(line)
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None
