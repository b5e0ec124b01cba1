"""AWQ on a CPU at float32 speed: two narrow changes to gptqmodel 7.6, installed in the worker child only.

gptqmodel's AWQ holds the model in its 16-bit type, which most CPUs only emulate:
on SmolLM2-135M that is about a minute per decoder layer, nearly all of it in two
searches. Both are changed here, not the algorithm:

* The model is held in float32 while AWQ searches its scales (twenty forward passes
  of each attention and MLP block per layer), as GPTQ already is on a CPU. Only
  the packing step insists on a 16-bit layer: ``pack_module`` casts each finished
  layer, and its scales, to the source's type first, so the saved folder has the
  same layout (scales in the model's type) as one made in 16 bits.
  gptqmodel's scale search keeps its "master copy" of each weight with
  ``weight.to(float32).cpu()``, which for a float32 weight on the CPU is the weight
  itself: every candidate would then be tried on the previous candidates'
  quantized weights (the output's KLD went from 0.04 to 2.7 on two-layer
  SmolLM2). ``compute_best_scale`` is the same search with a real copy.
* The clipping search computes each candidate's output as one batched matrix
  product per weight group instead of broadcasting the weights over every token
  and summing (memory-bound, about ten times slower). The candidates, the
  pseudo-quantization (the library's own) and the choice are the same; the errors
  are summed in float32, so where two bounds nearly tie the choice may differ
  (about 2% of groups), towards the lower error.

Only for the gptqmodel version it was written against; on another it changes
nothing and AWQ runs as the library does.
"""

from __future__ import annotations

from typing import Any

WRITTEN_FOR = "7.6.0"
_OUT_ROWS = 256  # output channels per batch: bounds the float32 scratch to ~groups*tokens*256*4 bytes


def install(source_dtype: str, float32_model: bool) -> bool:
    """Apply the changes (the pack cast only when the model is held in float32); False on another version."""
    import gptqmodel
    import torch
    from gptqmodel.looper.awq_processor import AWQProcessor

    if gptqmodel.__version__ != WRITTEN_FOR or not all(
            hasattr(AWQProcessor, name) for name in ("_compute_best_clip", "_compute_best_scale", "pack_module")):
        return False
    AWQProcessor._compute_best_clip = compute_best_clip
    if float32_model:
        AWQProcessor._compute_best_scale = compute_best_scale
        original = getattr(AWQProcessor.pack_module, "__wrapped__", AWQProcessor.pack_module)
        target = getattr(torch, source_dtype)

        def pack_module(self: Any, module: Any) -> Any:
            linear = module.module
            for param in linear.parameters(recurse=False):
                param.data = param.data.to(target)
            state = module.state
            if state.get("q_scales") is not None:
                state["q_scales"] = state["q_scales"].to(target)
            return original(self, module)

        pack_module.__wrapped__ = original  # type: ignore[attr-defined]
        AWQProcessor.pack_module = pack_module
    return True


def compute_best_clip(self: Any, w: Any, input_feat: Any, n_grid: int = 20, max_shrink: float = 0.5,
                      n_sample_token: int = 512) -> Any:
    """Per output channel and group, the clipping bound (``[out, groups, 1]``) with the smallest output error."""
    import torch

    with torch.inference_mode():
        out_features, in_features = w.shape
        group = self.qcfg.group_size if self.qcfg.group_size > 0 else in_features
        tokens = input_feat.reshape(-1, in_features)
        tokens = tokens[:: max(1, tokens.shape[0] // n_sample_token)]
        # [groups, tokens, group]: one matrix per group, multiplied by that group's weights below.
        x = tokens.to(device=w.device, dtype=torch.float32).reshape(tokens.shape[0], -1, group).transpose(0, 1)
        weights = w.reshape(out_features, -1, group)
        best_all = []
        for start in range(0, out_features, _OUT_ROWS):
            wb = weights[start:start + _OUT_ROWS]
            org_max = wb.abs().amax(dim=-1, keepdim=True)  # [rows, groups, 1]
            reference = torch.bmm(x, wb.float().permute(1, 2, 0))  # [groups, tokens, rows]
            best = org_max.clone()
            min_err = torch.full(org_max.shape, 1e9, dtype=torch.float32, device=w.device)
            clamped = torch.empty_like(wb)
            quantized = torch.empty_like(wb)
            for step in range(int(max_shrink * n_grid)):
                bound = org_max * (1 - step / n_grid)
                torch.clamp(wb, -bound, bound, out=clamped)
                self._pseudo_quantize_tensor_into(clamped, quantized)
                out = torch.bmm(x, quantized.float().permute(1, 2, 0))
                err = (out - reference).pow_(2).mean(dim=1).transpose(0, 1).unsqueeze(-1)
                better = err < min_err
                min_err[better] = err[better]
                best[better] = bound[better]
            best_all.append(best)
        return torch.cat(best_all, dim=0)


def compute_best_scale(self: Any, x: Any, w_mean: Any, x_mean: Any, module2inspect: Any, linears2scale: list[Any],
                       fp16_output: Any, kwargs: dict[str, Any] | None = None) -> tuple[Any, float]:
    """AWQ's grid search over ``s = x_mean^r / w_mean^(1-r)``: each candidate scales, pseudo-quantizes and
    unscales the weights, runs ``module2inspect`` and compares with the original output; the weights are
    put back from a real copy after every candidate."""
    import torch

    kwargs = kwargs or {}
    n_grid = 20
    try:
        device = next(module2inspect.parameters()).device
    except StopIteration:
        device = x.device
    with torch.inference_mode():
        originals = {fc: fc.weight.detach().clone() for fc in linears2scale}
        x_mean = x_mean.view(-1).to(device)
        w_mean = w_mean.view(-1).to(device)
        hint = getattr(self._scale_context, "prev_scale", None)
        if hint is not None:
            w_mean = w_mean * float(hint)
        chunked = getattr(self.qcfg, "scale_search_chunked_activations", True)
        best_error, best_scales = float("inf"), None
        try:
            for step in range(n_grid):
                ratio = step / n_grid
                if self.duo_scaling:
                    scales = (x_mean.pow(ratio) / (w_mean.pow(1 - ratio) + 1e-4)).clamp(min=1e-4)
                else:
                    scales = x_mean.pow(ratio).clamp(min=1e-4).view(-1)
                scales = scales / (scales.max() * scales.min()).sqrt()
                scales[torch.isinf(scales) | torch.isnan(scales)] = 1
                row = scales.view(1, -1).to(device)
                for fc in linears2scale:
                    fc.weight.mul_(row)
                    self._pseudo_quantize_tensor_into(fc.weight, fc.weight)
                    fc.weight.div_(row)
                if chunked:
                    total, count = 0.0, 0
                    for ref, out in zip(self._iter_reference_output_chunks(x, fp16_output),
                                        self._iter_module_forward_outputs(x, module2inspect, kwargs), strict=True):
                        out = out.clip(torch.finfo(out.dtype).min, torch.finfo(out.dtype).max)
                        diff = (ref.to(device=out.device, dtype=out.dtype) - out).float()
                        total += diff.pow(2).sum().item()
                        count += diff.numel()
                    loss = total / max(count, 1)
                else:
                    out = self._module_forward(x, module2inspect, kwargs)
                    out = out.clip(torch.finfo(out.dtype).min, torch.finfo(out.dtype).max)
                    loss = self._compute_loss(fp16_output, out, device)
                if loss < best_error:
                    best_error, best_scales = loss, scales.clone()
                for fc in linears2scale:
                    fc.weight.copy_(originals[fc])
        finally:
            for fc in linears2scale:
                fc.weight.copy_(originals[fc])
    if best_scales is None:
        raise RuntimeError("AWQ's scale search found no candidate with a finite error")
    return best_scales.detach().cpu(), best_error
