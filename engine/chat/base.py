"""One chat interface over every backend: history, templates, context budget, streaming, stop.

A backend only knows how to load its model, turn messages into prompt tokens
and produce token ids; everything a user sees (history, trimming, timing,
stopping within a fraction of a second) lives here once.

Generation runs on a worker thread that hands token ids over a queue, so
``stop`` returns at once even when one token takes longer than the user
wants to wait; the worker notices the stop after its current token.
"""

from __future__ import annotations

import codecs
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import JobCancelled, QuantDeskError
from engine.jobs import CancelToken, JobGen, Progress, run_job

NO_TEMPLATE_NOTICE = (
    "This model has no chat template (it is a base model), so QuantDesk continues your text "
    "as plain completion instead of answering as an assistant."
)

# How often the consumer looks at the stop flag while waiting for the next token.
_POLL_S = 0.02


@dataclass
class Sampling:
    """How the next token is chosen; temperature 0 means greedy (always the likeliest token)."""

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    repeat_penalty: float = 1.1
    max_tokens: int = 512
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise QuantDeskError("The temperature cannot be negative; use 0 for greedy answers.")
        if not 0 < self.top_p <= 1:
            raise QuantDeskError("top-p must be above 0 and at most 1.")
        if self.top_k < 0:
            raise QuantDeskError("top-k cannot be negative; use 0 to switch it off.")
        if self.repeat_penalty <= 0:
            raise QuantDeskError("The repeat penalty must be above 0; 1.0 switches it off.")
        if self.max_tokens < 1:
            raise QuantDeskError("The maximum reply length must be at least one token.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Reply:
    """One answer with its measurements."""

    text: str
    tokens: int
    prompt_tokens: int
    time_to_first_token_s: float | None
    tokens_per_second: float | None
    finish_reason: str  # "stop" (the model ended), "length", "cancelled" (the user stopped it)
    notices: list[str] = field(default_factory=list)

    @property
    def stopped(self) -> bool:
        return self.finish_reason == "cancelled"

    def to_json(self) -> dict[str, Any]:
        """The stable ``--json`` contract of ``quantdesk chat``."""
        return {
            "text": self.text,
            "tokens": self.tokens,
            "time_to_first_token_s": self.time_to_first_token_s,
            "tokens_per_second": self.tokens_per_second,
        }


class TextDecoder:
    """Turns token byte pieces into text, holding back half a UTF-8 character until it completes."""

    def __init__(self) -> None:
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return self._dec.decode(data)

    def flush(self) -> str:
        return self._dec.decode(b"", final=True)


class Chat(ABC):
    """A loaded model one can talk to. Create with ``engine.chat.open_chat``; then ``load``."""

    backend: str = ""

    def __init__(
        self,
        path: Path,
        *,
        device: str = "cpu",
        n_ctx: int | None = None,
        threads: int | None = None,
        system_prompt: str | None = None,
    ) -> None:
        if device not in ("cpu", "cuda"):
            raise QuantDeskError(f"Unknown device '{device}'; choose cpu or cuda.")
        self.path = Path(path)
        self.device = device
        self.requested_ctx = n_ctx
        self.threads = threads
        self.system_prompt = system_prompt or None
        self.history: list[dict[str, str]] = []
        self.notices: list[str] = []
        self.loaded = False
        self._lock = threading.Lock()
        self._runner: _Runner | None = None
        self._busy: threading.Event | None = None

    # --- what a backend provides -------------------------------------------------------

    @abstractmethod
    def _load(self) -> None:
        """Load the model (blocking); raise QuantDeskError with one sentence on failure."""

    @abstractmethod
    def _free(self) -> None:
        """Drop every reference to the model so its memory goes back."""

    @property
    @abstractmethod
    def n_ctx(self) -> int:
        """The context window in tokens."""

    @property
    @abstractmethod
    def has_template(self) -> bool:
        """Whether the model ships a chat template."""

    @abstractmethod
    def _template_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """Prompt tokens for ``messages`` through the model's own chat template."""

    @abstractmethod
    def _text_tokens(self, text: str) -> list[int]:
        """Prompt tokens for plain text (the completion fallback)."""

    @abstractmethod
    def _token_bytes(self, token: int) -> bytes:
        """The bytes one generated token stands for (special tokens render as nothing)."""

    @abstractmethod
    def _generate(
        self,
        prompt: list[int],
        sampling: Sampling,
        max_new: int,
        emit: Callable[[int], None],
        should_stop: Callable[[], bool],
    ) -> str:
        """Produce up to ``max_new`` token ids after ``prompt``, calling ``emit`` for each.

        Returns "stop" when the model ended its answer, "length" at ``max_new``,
        "cancelled" when ``should_stop`` became true.
        """

    # --- life cycle -------------------------------------------------------------------

    def load(self, cancel: CancelToken | None = None) -> JobGen[Chat]:
        """Load in a background thread; a cancel abandons it at once (its memory is freed when it ends)."""
        cancel = cancel or CancelToken()
        if self.loaded:
            return self
        yield Progress(step="load", fraction=0.0, message=f"Loading {self.path.name}")
        box: dict[str, BaseException | None] = {"error": None}
        state = {"abandoned": False, "finished": False}
        guard = threading.Lock()

        def work() -> None:
            try:
                self._load()
            except BaseException as err:  # noqa: BLE001 - handed to the caller below
                box["error"] = err
            with guard:
                state["finished"] = True
                if state["abandoned"]:
                    self._free()

        def abandon() -> None:
            with guard:
                state["abandoned"] = True
                if state["finished"]:
                    self._free()

        thread = threading.Thread(target=work, name=f"load-{self.path.name}", daemon=True)
        thread.start()
        started = time.monotonic()
        while thread.is_alive():
            if cancel.cancelled:
                abandon()
                raise JobCancelled("Loading cancelled.")
            thread.join(0.1)
            elapsed = time.monotonic() - started
            yield Progress(step="load", fraction=min(0.95, elapsed / (elapsed + 5.0)),
                           message=f"Loading {self.path.name}")
        if cancel.cancelled:
            self._free()
            raise JobCancelled("Loading cancelled.")
        error = box["error"]
        if isinstance(error, QuantDeskError):
            raise error
        if error is not None:
            raise QuantDeskError(
                f"Could not load {self.path.name} ({type(error).__name__}: {error}); "
                "check that it is a complete model of a supported kind."
            ) from error
        self.loaded = True
        if not self.has_template:
            self.notices.append(NO_TEMPLATE_NOTICE)
        yield Progress(step="load", fraction=1.0, message=f"{self.path.name} is ready")
        return self

    def close(self) -> None:
        """Free the model (wait for a reply still finishing first)."""
        self._join_worker()
        if self._runner is not None:
            self._runner.stop()
            self._runner = None
        self._free()
        self.loaded = False

    def __enter__(self) -> Chat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reset(self) -> None:
        """Forget the conversation (the system prompt stays)."""
        self.history.clear()

    def take_notices(self) -> list[str]:
        notes, self.notices = self.notices, []
        return notes

    # --- talking ----------------------------------------------------------------------

    def ask(
        self,
        text: str,
        sampling: Sampling | None = None,
        cancel: CancelToken | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Reply:
        """Send a message and wait for the whole reply (``on_text`` sees it as it streams)."""
        return run_job(self.send(text, sampling, cancel), on_text)

    def send(
        self, text: str, sampling: Sampling | None = None, cancel: CancelToken | None = None
    ) -> Generator[str, None, Reply]:
        """Stream the reply to ``text`` piece by piece; returns the Reply.

        A cancel stops the reply within a few hundredths of a second and keeps
        what was generated, in the reply and in the history.
        """
        if not self.loaded:
            raise QuantDeskError("The model is not loaded yet; load it before sending a message.")
        sampling = sampling or Sampling()
        cancel = cancel or CancelToken()
        self._join_worker()
        notices = self.take_notices()
        user = {"role": "user", "content": text}
        prompt, max_new, dropped_notes = self._fit_prompt(user, sampling.max_tokens)
        notices += dropped_notes

        tokens_q: queue.Queue[Any] = queue.Queue()
        stop_flag = threading.Event()
        done_marker = object()
        result: dict[str, Any] = {"finish": "stop", "error": None}

        busy = threading.Event()

        def work() -> None:
            try:
                result["finish"] = self._generate(prompt, sampling, max_new, tokens_q.put, stop_flag.is_set)
            except BaseException as err:  # noqa: BLE001 - re-raised in the consumer
                result["error"] = err
            finally:
                busy.set()
            tokens_q.put(done_marker)

        start = time.perf_counter()
        first_at: float | None = None
        last_at: float | None = None
        count = 0
        decoder = TextDecoder()
        pieces: list[str] = []
        finish = "stop"
        if self._runner is None:
            self._runner = _Runner()
        self._busy = busy
        self._runner.submit(work)
        try:
            while True:
                if cancel.cancelled:
                    stop_flag.set()
                    finish = "cancelled"
                    break
                try:
                    item = tokens_q.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                if item is done_marker:
                    if result["error"] is not None:
                        raise _as_user_error(result["error"])
                    finish = result["finish"]
                    break
                now = time.perf_counter()
                if first_at is None:
                    first_at = now
                last_at = now
                count += 1
                piece = decoder.feed(self._token_bytes(item))
                if piece:
                    pieces.append(piece)
                    yield piece
        finally:
            stop_flag.set()  # also when the consumer abandons the generator
        tail = decoder.flush()
        if tail:
            pieces.append(tail)
            yield tail
        reply_text = "".join(pieces)
        self.history.append(user)
        self.history.append({"role": "assistant", "content": reply_text})
        ttft = None if first_at is None else first_at - start
        tps = None
        if first_at is not None and last_at is not None and count > 1 and last_at > first_at:
            tps = (count - 1) / (last_at - first_at)
        elif count == 1 and first_at is not None:
            tps = 1.0 / max(first_at - start, 1e-9)
        return Reply(
            text=reply_text.strip() if finish != "cancelled" else reply_text,
            tokens=count,
            prompt_tokens=len(prompt),
            time_to_first_token_s=ttft,
            tokens_per_second=tps,
            finish_reason=finish,
            notices=notices,
        )

    # --- helpers ------------------------------------------------------------------------

    def _messages(self, turns: list[dict[str, str]]) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return system + turns

    def _render(self, turns: list[dict[str, str]]) -> list[int]:
        if self.has_template:
            return self._template_tokens(self._messages(turns))
        text = "".join(t["content"] for t in turns)
        if self.system_prompt:
            text = self.system_prompt + "\n\n" + text
        return self._text_tokens(text)

    def _fit_prompt(self, user: dict[str, str], max_tokens: int) -> tuple[list[int], int, list[str]]:
        """Drop the oldest turns until the prompt leaves room for a reply; never fails."""
        n_ctx = self.n_ctx
        reserve = max(1, min(max_tokens, n_ctx // 2))
        budget = n_ctx - reserve
        notes: list[str] = []
        dropped = 0
        prompt = self._render([*self.history, user])
        while len(prompt) > budget and self.history:
            # One turn is the user's message and the answer to it.
            del self.history[: 2 if len(self.history) >= 2 else 1]
            dropped += 1
            prompt = self._render([*self.history, user])
        if dropped:
            notes.append(
                f"The conversation outgrew the {n_ctx}-token context, so the {dropped} oldest "
                f"turn{'s were' if dropped > 1 else ' was'} dropped."
            )
        if len(prompt) > budget:
            prompt = prompt[-budget:]
            notes.append(
                f"Your message is longer than the {n_ctx}-token context allows, so only its end was kept."
            )
        max_new = max(1, min(max_tokens, n_ctx - len(prompt)))
        return prompt, max_new, notes

    def _join_worker(self) -> None:
        """Wait until a reply still finishing (after a stop) has let go of the model."""
        busy = self._busy
        if busy is not None:
            busy.wait()
        self._busy = None


class _Runner:
    """One long-lived thread per chat that runs every reply.

    llama.cpp's CPU threads (OpenMP) belong to the thread that calls it; a new
    thread for each reply would build a new team every time, and idle teams
    compete for the cores.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="chat-generate", daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def stop(self) -> None:
        self._jobs.put(None)

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job()


def _as_user_error(err: BaseException) -> QuantDeskError:
    if isinstance(err, QuantDeskError):
        return err
    return QuantDeskError(f"The model failed while answering ({type(err).__name__}: {err}); try a shorter message.")
