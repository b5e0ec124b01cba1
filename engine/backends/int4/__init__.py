"""GPTQ 4-bit and AWQ 4-bit, calibrated, made with gptqmodel: Hugging Face folders for transformers and vLLM.

``plan`` checks everything that needs no model loaded (the source, the
architecture, the group size against every layer's width, memory, disk, a
time estimate); ``worker`` runs in a child process (engine.jobs.run_in_child):
it builds the calibration samples (engine.calibration), runs gptqmodel's GPTQ
or AWQ layer by layer, saves into the temporary folder, and reloads the result
with plain transformers to check it; ``job`` then writes the model card and
sidecar and renames the folder into place; ``backend`` holds the registry's two
entries, one per method.
"""
