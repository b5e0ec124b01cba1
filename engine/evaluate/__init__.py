"""Measure what quantization cost: perplexity, KL divergence against the original, speed."""
