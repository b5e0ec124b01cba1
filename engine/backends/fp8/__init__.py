"""FP8 E4M3: Hugging Face folders in the compressed-tensors layout that vLLM serves natively on Ada/Hopper.

Weights are rounded to the nearest FP8 E4M3 value with one scale per output
channel; activations are quantized per token at run time ("FP8_DYNAMIC"), so
no calibration data is needed. The checkpoint is rewritten tensor by tensor
from the source's safetensors shards with compressed-tensors' own scale and
compression functions (``worker``), reloaded and checked in the child, and
only then renamed into place (``job``). ``plan`` checks everything that needs
no model loaded; ``backend`` is the registry's entry.
"""
