"""bitsandbytes INT8 (LLM.int8) and NF4/FP4: Hugging Face checkpoints that reload with ``from_pretrained``.

Quantization happens while transformers loads the checkpoint with a
``BitsAndBytesConfig``; the result is saved with ``save_pretrained`` beside
the tokenizer, chat template and generation config, reloaded and checked in
the child process (``worker``), and only then renamed from its temporary name into
place (``job``). ``plan`` checks everything that needs no model loaded;
``backend`` is the registry's entry.
"""
