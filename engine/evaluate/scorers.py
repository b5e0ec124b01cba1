"""Logits for a chunk of tokens, from llama.cpp (GGUF) or transformers (HF folder).

Both give the same thing: the tokenizer's own reading of a text (with BOS when
the model wants one) and, for one chunk evaluated from an empty cache, the
logits at positions ``first`` and after. Only those positions are computed
where the backend allows it, as llama.cpp's perplexity tool does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.errors import QuantDeskError


class Scorer:
    """A model that scores chunks; close() frees it."""

    n_vocab: int
    add_bos: bool
    bos_id: int | None
    label: str = ""

    def tokenize(self, text: str) -> list[int]:
        raise NotImplementedError

    def chunk_logits(self, tokens: list[int], first: int) -> np.ndarray:
        """float32 (len(tokens) - first, n_vocab): logits at positions first..end, fresh context."""
        raise NotImplementedError

    def detokenize(self, tokens: list[int]) -> str:
        """The text of ``tokens`` (special tokens render as nothing)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class GgufScorer(Scorer):
    label = "llama.cpp"

    def __init__(self, path: Path, *, n_ctx: int, threads: int | None = None, gpu_layers: int = 0) -> None:
        import llama_cpp

        from engine.chat.llama_cpp import open_llama

        self._lib = llama_cpp
        self._llm = open_llama(path, n_ctx=n_ctx, threads=threads, gpu_layers=gpu_layers,
                               n_batch=n_ctx, n_ubatch=min(n_ctx, 512))
        vocab = self._llm._model.vocab
        self.n_vocab = int(self._llm.n_vocab())
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        bos = int(self._llm.token_bos())
        self.bos_id = bos if bos >= 0 else None
        self.n_ctx = n_ctx
        self._batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)
        self._prefix: list[int] = []  # the tokens now in the cache (logits_after_prefix)

    def tokenize(self, text: str) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)

    def detokenize(self, tokens: list[int]) -> str:
        return self._llm.detokenize(tokens).decode("utf-8", errors="replace")

    def chunk_logits(self, tokens: list[int], first: int) -> np.ndarray:
        return self._decode(tokens, first, 0)

    def logits_after_prefix(self, tokens: list[int], first: int) -> np.ndarray:
        """chunk_logits, reusing the cache for the tokens this call shares with the previous one.

        For several prompts that open alike (a chat template's system turn): the
        shared start is evaluated once. Not used for perplexity, which scores
        every chunk from an empty cache as llama.cpp does.
        """
        last = self._prefix
        keep = 0
        while keep < min(len(last), len(tokens), first) and last[keep] == tokens[keep]:
            keep += 1
        return self._decode(tokens, first, keep)

    def _decode(self, tokens: list[int], first: int, keep: int) -> np.ndarray:
        lib = self._lib
        ctx = self._llm._ctx.ctx
        n = len(tokens)
        if n > self.n_ctx:
            raise QuantDeskError(f"A chunk of {n} tokens does not fit the {self.n_ctx}-token context.")
        memory = lib.llama_get_memory(ctx)
        if keep:
            lib.llama_memory_seq_rm(memory, 0, keep, -1)
        else:
            lib.llama_memory_clear(memory, True)
        self._prefix = []
        batch = self._batch
        for i, tok in enumerate(tokens[keep:]):
            batch.token[i] = tok
            batch.pos[i] = keep + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1 if keep + i >= first else 0
        batch.n_tokens = n - keep
        rc = lib.llama_decode(ctx, batch)
        if rc != 0:
            raise QuantDeskError(f"llama.cpp failed to evaluate a chunk (code {rc}); try a smaller --ctx.")
        self._prefix = list(tokens)
        rows = n - first
        ptr = lib.llama_get_logits(ctx)
        return np.ctypeslib.as_array(ptr, shape=(rows * self.n_vocab,)).reshape(rows, self.n_vocab).copy()

    def close(self) -> None:
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None
        if self._llm is not None:
            self._llm.close()
            self._llm = None


class HfScorer(Scorer):
    label = "transformers"

    def __init__(self, path: Path, *, device: str = "cpu", threads: int | None = None) -> None:
        import torch

        from engine.chat.transformers import hf_quantization, load_hf_model

        # On the CPU compute in float32: bf16/fp16 weights are exact in it and the
        # numbers then match llama.cpp, which keeps activations in float32.
        dtype = torch.float32 if device == "cpu" and hf_quantization(path) is None else None
        self._torch = torch
        self._model, self._tok = load_hf_model(path, device, dtype=dtype, threads=threads)
        self.n_vocab = int(self._model.get_output_embeddings().weight.shape[0])
        bos = self._tok.bos_token_id
        self.bos_id = int(bos) if bos is not None else None
        probe = self._tok("a")["input_ids"]
        self.add_bos = self.bos_id is not None and len(probe) > 0 and probe[0] == self.bos_id

    def tokenize(self, text: str) -> list[int]:
        return [int(t) for t in self._tok(text)["input_ids"]]

    def detokenize(self, tokens: list[int]) -> str:
        return str(self._tok.decode(tokens, skip_special_tokens=True))

    def chunk_logits(self, tokens: list[int], first: int) -> np.ndarray:
        torch = self._torch
        ids = torch.tensor([tokens], dtype=torch.long, device=self._model.device)
        with torch.inference_mode():
            out = self._model(input_ids=ids, logits_to_keep=len(tokens) - first, use_cache=False)
        return out.logits[0].float().cpu().numpy()

    def close(self) -> None:
        self._model = self._tok = None
        import gc

        gc.collect()


def open_scorer(path: Path, *, n_ctx: int, device: str = "cpu", threads: int | None = None,
                gpu_layers: int | None = None) -> Scorer:
    """A scorer for a GGUF file or a Hugging Face folder."""
    from engine.chat.factory import model_kind

    path = Path(path).expanduser()
    if model_kind(path) == "gguf":
        layers = 0
        if device == "cuda":
            from engine.chat.offload import free_vram_bytes, plan_gpu_layers, require_gpu_build

            require_gpu_build()
            layers = gpu_layers if gpu_layers is not None else plan_gpu_layers(path, n_ctx, free_vram_bytes()).gpu_layers
        return GgufScorer(path, n_ctx=n_ctx, threads=threads, gpu_layers=layers)
    return HfScorer(path, device=device, threads=threads)
