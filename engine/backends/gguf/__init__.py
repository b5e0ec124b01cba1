"""The GGUF backend: llama.cpp's converter and quantizer, one job for many types.

Split by job: ``plan`` (checks and the plan), ``convert`` (HF → BF16/F16
GGUF), ``quantize`` (llama_model_quantize), ``verify`` (the reader's check
before renaming), ``job`` (the sequence, progress and clean-up) and ``child``
(what each worker process does first). ``backend`` is the registry's entry.
"""
