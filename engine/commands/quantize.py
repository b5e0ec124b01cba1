"""``quantdesk quantize SRC --to Q4_K_M,Q6_K --out DIR``: one job, many targets, any backend.

A live progress bar in a terminal; with ``--json`` one JSON object per line on
stdout (a stable contract): ``{"event": "progress", ...}`` events, then
``{"event": "done", "outputs": [...]}`` or ``{"event": "error", "message": ...}``.
Ctrl-C, SIGTERM and SIGHUP cancel cleanly within seconds: the worker ends, nothing is left.
After the outputs are in place a quick quality check judges each one (``--no-check`` skips it);
the verdict is in the ``done`` event. Cancelling or failing the check keeps the outputs (a warning).
Exit 0 only when every target was produced; 130 when cancelled.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from engine.commands.events import JsonEvents
from engine.errors import JobCancelled, QuantDeskError
from engine.terminal import one_line
from engine.units import format_bytes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize",
        help="convert and quantize a model to one or more formats",
        description="Convert a Hugging Face model (or a GGUF file) to GGUF types and/or bitsandbytes, "
        "in one job. Example: quantdesk quantize ./SmolLM2 --to Q4_K_M,Q6_K --out ./gguf",
    )
    p.add_argument("source", metavar="SRC", help="Hugging Face model folder or .gguf file")
    p.add_argument("--to", required=True, metavar="TYPES",
                   help="comma-separated targets, e.g. Q4_K_M,Q6_K,Q8_0 or bnb-nf4; or auto with --max-size")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace same-name files or folders in DIR that QuantDesk did not make")
    p.add_argument("--keep-intermediate", action="store_true",
                   help="keep the BF16/F16 GGUF made on the way from a Hugging Face model")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="threads for quantizing (default: all)")
    p.add_argument("--converter", metavar="PATH",
                   help="convert_hf_to_gguf.py of a newer llama.cpp checkout (or the checkout folder)")
    p.add_argument("--requantize", action="store_true",
                   help="allow quantizing an already-quantized GGUF (loses quality)")
    p.add_argument("--output-tensor-type", metavar="TYPE", help="GGUF type for output.weight, e.g. q8_0")
    p.add_argument("--token-embedding-type", metavar="TYPE", help="GGUF type for token_embd.weight, e.g. q8_0")
    p.add_argument("--pure", action="store_true", help="quantize every tensor to the chosen type (no mixes)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="device for bitsandbytes targets")
    p.add_argument("--nf4-compute-dtype", choices=("bf16", "fp16", "fp32"),
                   help="bitsandbytes 4-bit compute dtype (default bf16)")
    p.add_argument("--nf4-quant-type", choices=("nf4", "fp4"), help="bitsandbytes 4-bit type (default nf4)")
    p.add_argument("--no-double-quant", action="store_true",
                   help="bitsandbytes 4-bit: skip double quantization (slightly larger files)")
    p.add_argument("--int8-threshold", type=float, metavar="T", help="LLM.int8 outlier threshold (default 6.0)")
    p.add_argument("--imatrix", metavar="auto|FILE|none",
                   help="GGUF importance matrix: auto computes one from the calibration data, FILE reads "
                   "llama.cpp's imatrix (GGUF or .dat), none quantizes without (default: auto for the types "
                   "that need one, none otherwise)")
    p.add_argument("--calib", metavar="DATA",
                   help="calibration data for GPTQ, AWQ and the importance matrix: builtin (default), a .txt "
                   "or .jsonl file (\"text\" or chat \"messages\" per line), or builtin+FILE for a mix")
    p.add_argument("--calib-samples", type=int, metavar="N", help="calibration samples (default 128)")
    p.add_argument("--calib-seq-len", type=int, metavar="N", help="tokens per calibration sample (default 512)")
    p.add_argument("--group-size", type=int, choices=(32, 64, 128), metavar="N",
                   help="GPTQ/AWQ: weights per quantization group, 32, 64 or 128 (default 128)")
    p.add_argument("--asym", action="store_true", help="GPTQ/AWQ: asymmetric groups (with a zero point)")
    p.add_argument("--act-order", action="store_true",
                   help="GPTQ: quantize columns by decreasing activation size (desc_act)")
    p.add_argument("--damp", type=float, metavar="F", help="GPTQ: Hessian damping (default 0.05)")
    p.add_argument("--no-check", action="store_true",
                   help="skip the quick quality check (KLD and a few fixed prompts against the source) "
                   "that judges every output once the job is done")
    p.add_argument("--max-size", metavar="SIZE",
                   help="with --to auto: the largest GGUF file wanted, e.g. 4GB; the candidates that fit are "
                   "made and checked and the one with the lowest KLD is kept")
    p.add_argument("--candidates", type=int, default=None, metavar="N",
                   help="with --to auto: make and check at most N candidates (default 3)")
    p.add_argument("--max-minutes", type=float, default=None, metavar="M",
                   help="with --to auto: start no further candidate once the search has run M minutes "
                   "(the first is always made; those made are all checked)")
    p.add_argument("--keep-candidates", action="store_true",
                   help="with --to auto: keep every candidate made, not only the chosen one")
    p.add_argument("--json", action="store_true", help="one JSON event per line on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.backends import BnbOptions, CalibrationOptions, GgufOptions, Int4Options, QuantizeRequest
    from engine.formats import parse_targets
    from engine.fsutil import check_out_text
    from engine.jobs import CancelToken, cancel_on_signals, run_job
    from engine.quantize import quantize

    emit = _JsonEvents(sys.stdout) if args.json else _TerminalBar(sys.stderr)
    cancel = CancelToken()
    try:
        check_out_text(args.out)
        auto = args.to.strip().lower() == "auto"
        if not auto and (args.max_size or args.keep_candidates or args.candidates is not None
                         or args.max_minutes is not None):
            raise QuantDeskError("--max-size, --candidates, --max-minutes and --keep-candidates go with --to auto; "
                                 "drop them or pass --to auto.")
        if auto and not args.max_size:
            raise QuantDeskError("--to auto needs a budget; add --max-size, e.g. --max-size 4GB.")
        targets = [] if auto else parse_targets(args.to)
        gguf = GgufOptions(
            keep_intermediate=args.keep_intermediate, converter=args.converter, requantize=args.requantize,
            output_tensor_type=args.output_tensor_type, token_embedding_type=args.token_embedding_type,
            pure=args.pure, imatrix=args.imatrix,
        )
        int4 = Int4Options(**{k: v for k, v in {"group_size": args.group_size, "damp": args.damp}.items()
                              if v is not None}, sym=not args.asym, desc_act=args.act_order)
        calibration = CalibrationOptions(**{k: v for k, v in {
            "data": args.calib, "samples": args.calib_samples, "seq_len": args.calib_seq_len}.items() if v is not None})
        bnb = BnbOptions(**{k: v for k, v in {
            "compute_dtype": args.nf4_compute_dtype, "quant_type": args.nf4_quant_type,
            "int8_threshold": args.int8_threshold}.items() if v is not None}, double_quant=not args.no_double_quant)
        request = QuantizeRequest(
            source=Path(args.source).expanduser(), targets=targets, out_dir=Path(args.out).expanduser(),
            threads=args.threads, device=args.device, gguf=gguf, bnb=bnb, int4=int4, calibration=calibration,
            overwrite=args.overwrite,
            check=not args.no_check,
        )
        job = quantize(request, cancel) if not auto else _auto_job(request, args, cancel)
        with cancel_on_signals(cancel):
            outputs = run_job(job, emit.progress) or []
    except JobCancelled as err:
        emit.error(str(err), cancelled=True)
        return 130
    except QuantDeskError as err:
        emit.error(str(err))
        return 2
    produced = {o.format for o in outputs}
    missing = [t.name for t in targets if t.id not in produced]
    emit.done(outputs)
    if missing:
        emit.error(f"Not produced: {', '.join(missing)}.")
        return 1
    return 0


def _auto_job(request: Any, args: argparse.Namespace, cancel: Any) -> Any:
    """``--to auto``: the best GGUF under ``--max-size`` (engine.autopick)."""
    from engine.autopick import DEFAULT_CANDIDATES, auto_quantize
    from engine.units import parse_size

    return auto_quantize(request, parse_size(args.max_size), keep_candidates=args.keep_candidates,
                         max_candidates=DEFAULT_CANDIDATES if args.candidates is None else args.candidates,
                         max_minutes=args.max_minutes, cancel=cancel)


class _JsonEvents(JsonEvents):
    """The stable machine-readable stream of a quantize job (see the module)."""

    def done(self, outputs: list[Any]) -> None:
        self._write({"event": "done", "outputs": [o.to_dict() for o in outputs]})


class _TerminalBar:
    """A one-line live bar on a terminal; plain step lines when stderr is not a terminal."""

    WIDTH = 30

    def __init__(self, err: TextIO) -> None:
        self._err = err
        self._tty = err.isatty()
        self._last_draw = 0.0
        self._last_step = ""
        self._drawn = False

    def progress(self, event: Any) -> None:
        if event.step == "warning":
            self._line(f"warning: {event.message}")
            return
        if not self._tty:
            head = event.message.split(": [", 1)[0]
            if head != self._last_step:
                self._last_step = head
                self._err.write(f"{head}\n")
                self._err.flush()
            return
        now = time.monotonic()
        if now - self._last_draw < 0.1 and event.fraction < 1.0:
            return
        self._last_draw = now
        filled = int(self.WIDTH * event.fraction)
        eta = f" ETA {_duration(event.eta_s)}" if event.eta_s is not None else ""
        text = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {event.fraction * 100:5.1f}%{eta}  {event.message}"
        self._err.write("\r\033[K" + text[:160])
        self._err.flush()
        self._drawn = True

    def _line(self, text: str) -> None:
        if self._drawn:
            self._err.write("\r\033[K")
        self._err.write(text + "\n")
        self._err.flush()

    def done(self, outputs: list[Any]) -> None:
        if self._drawn:
            self._err.write("\n")
            self._drawn = False
        for o in outputs:
            print(f"{o.path}  {o.format.split(':', 1)[1]}  {format_bytes(o.size_bytes)}"
                  + (f"  {o.verdict}" if o.verdict else ""))
        for o in outputs:
            if o.verdict_evidence:
                print(f"  {one_line(o.verdict_evidence)}")

    def error(self, message: str, cancelled: bool = False) -> None:
        if self._drawn:
            self._err.write("\n")
            self._drawn = False
        print(f"quantdesk: error: {message}", file=sys.stderr)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
