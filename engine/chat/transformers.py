"""Chat with a Hugging Face folder (original weights or bitsandbytes INT8/NF4) through transformers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.chat.base import Chat, Sampling
from engine.chat.context import check_model_context
from engine.chat.template import TemplateRenderer
from engine.errors import QuantDeskError

DEFAULT_CTX = 4096


def hf_quantization(folder: Path) -> str | None:
    """The quantization method a folder's config.json declares (e.g. "bitsandbytes"), or None."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    quant = config.get("quantization_config") if isinstance(config, dict) else None
    method = quant.get("quant_method") if isinstance(quant, dict) else None
    return method if isinstance(method, str) else None


def _quiet_gptqmodel() -> None:
    """gptqmodel (which loads GPTQ/AWQ folders) logs its banner, kernel choices and garbage collections at
    INFO level and a Python-build advice at WARN, all through one shared logger; made first and raised
    to ERROR, it stays so."""
    import contextlib
    import logging

    with contextlib.suppress(Exception):
        from logbar import LogBar

        LogBar.shared()
        logging.getLogger("logbar").setLevel(logging.ERROR)


def load_hf_model(folder: Path, device: str, *, dtype: Any = None, threads: int | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) from a folder, on ``device``; failures become one sentence.

    Remote code never runs (``trust_remote_code=False``, and a model that would
    need it is refused first); pickle weights load only with the user's opt-in.
    """
    from engine.trust import check_pickle, check_remote_code, forbid_remote_code, pickle_allowed

    if not (folder / "config.json").is_file():
        raise QuantDeskError(f"{folder} has no config.json; point at a Hugging Face model folder or a .gguf file.")
    check_pickle(folder)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    forbid_remote_code()
    check_remote_code(folder)
    if device == "cuda" and not torch.cuda.is_available():
        raise QuantDeskError("PyTorch sees no CUDA GPU here; choose --device cpu or install the CUDA build of torch.")
    if threads:
        torch.set_num_threads(threads)
    quant = hf_quantization(folder)
    kwargs: dict[str, Any] = {"device_map": device, "trust_remote_code": False}
    if not pickle_allowed():
        kwargs["use_safetensors"] = True
    if quant is None:
        kwargs["dtype"] = dtype if dtype is not None else "auto"
    elif quant == "gptq" and device == "cpu":
        # Most CPUs only emulate bfloat16: GPTQ's CPU kernel takes float32 activations, several times faster.
        kwargs["dtype"] = dtype if dtype is not None else torch.float32
    if quant in ("gptq", "awq"):
        _quiet_gptqmodel()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except QuantDeskError:
        raise
    except Exception as err:  # noqa: BLE001 - shown to the user in one line
        from engine.trust import explain_loader_error

        translated = explain_loader_error(err, folder.name)
        if translated:
            raise QuantDeskError(translated) from None
        hint = " (bitsandbytes models usually need --device cuda)" if quant == "bitsandbytes" and device == "cpu" else ""
        first = (str(err).strip().splitlines() or [""])[0]
        raise QuantDeskError(f"transformers could not load {folder.name}{hint}: {type(err).__name__}: {first}") from None
    model.eval()
    return model, tokenizer


class TransformersChat(Chat):
    backend = "transformers"

    def __init__(self, path: Path, *, gpu_layers: int | None = None, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        if gpu_layers is not None:
            raise QuantDeskError("--gpu-layers applies to GGUF models only; drop it for a Hugging Face folder.")
        self._model: Any = None
        self._tok: Any = None
        self._ctx = 0
        self._renderer: TemplateRenderer | None = None
        self.dtype: Any = None  # torch dtype to load in; None: the checkpoint's own ("auto")
        self.preloaded: tuple[Any, Any] | None = None  # (model, tokenizer) already loaded from this path

    def _load(self) -> None:
        if self.requested_ctx:
            check_model_context(self.path, self.requested_ctx, self.device)
        if self.preloaded is not None:  # the caller's own copy of this model: no second load
            (model, tok), self.preloaded = self.preloaded, None
        else:
            model, tok = load_hf_model(self.path, self.device, dtype=self.dtype, threads=self.threads)
        limit = getattr(model.config, "max_position_embeddings", None) or DEFAULT_CTX
        self._ctx = int(self.requested_ctx or min(limit, DEFAULT_CTX))
        self._model, self._tok = model, tok
        template = getattr(tok, "chat_template", None)
        if isinstance(template, dict):  # named templates: the default one
            template = template.get("default")
        self._renderer = TemplateRenderer(template) if isinstance(template, str) and template else None

    def _free(self) -> None:
        self._model = self._tok = None
        renderer, self._renderer = self._renderer, None
        if renderer is not None:
            renderer.close()
        import gc

        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()

    @property
    def n_ctx(self) -> int:
        return self._ctx

    @property
    def has_template(self) -> bool:
        return self._renderer is not None

    def _template_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        # As transformers' apply_chat_template does: the special tokens by name, then no extra BOS.
        assert self._renderer is not None
        specials = {k: v for k, v in self._tok.special_tokens_map.items() if isinstance(v, (str, list))}
        text = self._renderer.render({**specials, "messages": messages, "add_generation_prompt": True})
        return [int(t) for t in self._tok(text, add_special_tokens=False)["input_ids"]]

    def _text_tokens(self, text: str) -> list[int]:
        return [int(t) for t in self._tok(text)["input_ids"]]

    def _token_bytes(self, token: int) -> bytes:
        if token in self._tok.all_special_ids:
            return b""
        return _token_bytes(self._tok, token)

    def _generate(
        self,
        prompt: list[int],
        sampling: Sampling,
        max_new: int,
        emit: Callable[[int], None],
        should_stop: Callable[[], bool],
    ) -> str:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        model = self._model
        eos = _eos_ids(model, self._tok)
        state = {"count": 0, "ended": False, "cancelled": False}

        class Streamer:
            """transformers calls put() with the prompt first, then each new token."""

            def __init__(self) -> None:
                self.prompt_seen = False

            def put(self, value: Any) -> None:
                if not self.prompt_seen:
                    self.prompt_seen = True
                    return
                for token in value.reshape(-1).tolist():
                    if token in eos:
                        state["ended"] = True
                        return
                    state["count"] += 1
                    emit(int(token))

            def end(self) -> None:
                pass

        class StopFlag(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                stop = should_stop()
                if stop:
                    state["cancelled"] = True
                return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": max_new,
            "repetition_penalty": sampling.repeat_penalty,
            "streamer": Streamer(),
            "stopping_criteria": StoppingCriteriaList([StopFlag()]),
            "pad_token_id": self._tok.pad_token_id if self._tok.pad_token_id is not None else next(iter(eos), 0),
            "eos_token_id": sorted(eos) or None,
        }
        if sampling.greedy:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            gen_kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                              top_k=sampling.top_k or None)
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
        input_ids = torch.tensor([prompt], dtype=torch.long, device=model.device)
        with torch.inference_mode():
            model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **gen_kwargs)
        if state["cancelled"]:
            return "cancelled"
        if state["ended"]:
            return "stop"
        return "length" if state["count"] >= max_new else "stop"


def _eos_ids(model: Any, tok: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    if tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    return ids


def _token_bytes(tok: Any, token: int) -> bytes:
    """The raw bytes of one token, so multi-token characters reassemble correctly."""
    piece = tok.convert_ids_to_tokens(token)
    if piece is None:
        return b""
    byte_decoder = _byte_decoder()
    if all(ch in byte_decoder for ch in piece):  # byte-level BPE (GPT-2 style)
        return bytes(byte_decoder[ch] for ch in piece)
    if piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:  # SentencePiece byte fallback
        return bytes([int(piece[3:5], 16)])
    return piece.replace("▁", " ").encode("utf-8")


_BYTE_DECODER: dict[str, int] | None = None


def _byte_decoder() -> dict[str, int]:
    """GPT-2's reversible byte-to-unicode table, inverted."""
    global _BYTE_DECODER
    if _BYTE_DECODER is None:
        bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
            range(ord("®"), ord("ÿ") + 1))
        cs = bs[:]
        n = 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        _BYTE_DECODER = {chr(c): b for b, c in zip(bs, cs, strict=True)}
    return _BYTE_DECODER
