"""Chat with a GGUF file through llama-cpp-python, on the CPU or with layers on a CUDA GPU."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.chat.base import Chat, Sampling
from engine.chat.context import check_model_context
from engine.chat.template import TemplateRenderer
from engine.errors import QuantDeskError
from engine.jobs import cpu_threads

DEFAULT_CTX = 4096


def check_gguf(path: Path) -> None:
    """Refuse a missing, truncated or foreign file with one clear sentence before llama.cpp sees it."""
    from engine.gguf_header import read_gguf_header

    if not path.exists():
        raise QuantDeskError(f"{path} does not exist; check the path.")
    header = read_gguf_header(path)
    if not header.tensors or header.version < 2:
        raise QuantDeskError(f"{path.name} is a damaged or incomplete GGUF file (no weights); "
                             "quantize or download it again.")


def open_llama(path: Path, *, n_ctx: int, threads: int | None, gpu_layers: int = 0, **kwargs: Any) -> Any:
    """Load a llama.cpp model quietly, turning its failures into one sentence."""
    import llama_cpp

    check_gguf(path)
    threads = threads or cpu_threads()
    try:
        return llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=gpu_layers,
            verbose=False,
            **kwargs,
        )
    except (ValueError, RuntimeError) as err:
        raise QuantDeskError(
            f"llama.cpp could not load {path.name} ({err}): the file is damaged or incomplete, or its "
            "architecture is newer than this llama-cpp-python; quantize it again or update llama-cpp-python."
        ) from None


class LlamaCppChat(Chat):
    backend = "llama.cpp"

    def __init__(self, path: Path, *, gpu_layers: int | None = None, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.gpu_layers_requested = gpu_layers
        self.gpu_layers = 0
        self.offload_reason = ""
        self._llm: Any = None
        self._ctx = 0
        self._template: str | None = None
        self._renderer: TemplateRenderer | None = None
        self._eos_text = ""
        self._add_bos = False
        self._bos_text = ""

    # --- loading -------------------------------------------------------------------------

    def _plan(self, n_ctx: int) -> int:
        from engine.chat.offload import free_vram_bytes, plan_gpu_layers, require_gpu_build

        if self.device != "cuda":
            if self.gpu_layers_requested:
                raise QuantDeskError("GPU layers only apply with --device cuda; drop --gpu-layers or choose cuda.")
            return 0
        require_gpu_build()
        if self.gpu_layers_requested is not None:
            self.offload_reason = "set by you"
            return self.gpu_layers_requested
        plan = plan_gpu_layers(self.path, n_ctx, free_vram_bytes())
        self.offload_reason = plan.reason
        return plan.gpu_layers

    def _load(self) -> None:
        import llama_cpp

        from engine.chat.offload import gguf_layout

        check_gguf(self.path)
        _, _, ctx_train = gguf_layout(self.path)
        n_ctx = self.requested_ctx or (min(ctx_train, DEFAULT_CTX) if ctx_train else DEFAULT_CTX)
        check_model_context(self.path, n_ctx, self.device)  # before llama.cpp allocates the cache
        self.gpu_layers = self._plan(n_ctx)
        llm = open_llama(self.path, n_ctx=n_ctx, threads=self.threads, gpu_layers=self.gpu_layers)
        template = llm.metadata.get("tokenizer.chat_template") or None
        vocab = llm._model.vocab
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        if template:
            self._bos_text = _piece(llm, llm.token_bos())
            self._eos_text = _piece(llm, llm.token_eos())
            self._renderer = TemplateRenderer(template)
        self._template = template
        # llama.cpp may round its context up; Llama's own buffers keep the size asked for.
        self._ctx = min(n_ctx, int(llm.n_ctx()))
        self._llm = llm

    def _free(self) -> None:
        llm, self._llm = self._llm, None
        renderer, self._renderer = self._renderer, None
        if renderer is not None:
            renderer.close()
        if llm is not None:
            llm.close()

    # --- the Chat hooks ---------------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        return self._ctx if self._llm is not None else 0

    @property
    def has_template(self) -> bool:
        return self._template is not None

    def _template_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        assert self._renderer is not None
        prompt = self._renderer.render({"messages": messages, "bos_token": self._bos_text,
                                        "eos_token": self._eos_text, "add_generation_prompt": True})
        add_bos = self._add_bos and not (self._bos_text and prompt.startswith(self._bos_text))
        return self._llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)

    def _text_tokens(self, text: str) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=self._add_bos, special=False)

    def _token_bytes(self, token: int) -> bytes:
        return self._llm.detokenize([token])

    def _generate(
        self,
        prompt: list[int],
        sampling: Sampling,
        max_new: int,
        emit: Callable[[int], None],
        should_stop: Callable[[], bool],
    ) -> str:
        import llama_cpp

        llm = self._llm
        vocab = llm._model.vocab
        llm.set_seed(sampling.seed if sampling.seed is not None else random.randrange(1, 2**31))
        for count, token in enumerate(llm.generate(
            prompt,
            temp=sampling.temperature,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            min_p=0.0,
            repeat_penalty=sampling.repeat_penalty,
            reset=True,
        ), start=1):
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                return "stop"
            emit(token)
            if should_stop():
                return "cancelled"
            if count >= max_new:
                return "length"
        return "stop"


def _piece(llm: Any, token: int) -> str:
    if token is None or token < 0:
        return ""
    return llm.detokenize([token], special=True).decode("utf-8", errors="ignore")
