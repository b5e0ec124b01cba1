"""``quantdesk eval MODEL``: perplexity, KL divergence against the original, and speed."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="measure perplexity, KL divergence and speed of a model",
                       description="Perplexity computed as llama.cpp's perplexity tool does; with --base, "
                       "the KL divergence against the original over the same tokens. Results also go "
                       "into the model's sidecar for `quantdesk compare`.")
    p.add_argument("model", help="a .gguf file or a Hugging Face model folder")
    p.add_argument("--text", default=None,
                   help="a UTF-8 text file (default: the texts QuantDesk ships: prose, chat, code)")
    p.add_argument("--ctx", type=int, default=512, help="chunk length in tokens (default 512, as llama.cpp)")
    p.add_argument("--base", default=None, help="the original model (F16/BF16 GGUF or HF folder) for KLD")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--gpu-layers", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-speed", action="store_true", help="skip the speed measurement")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.chat.context import check_model_context
    from engine.evaluate.run import JSON_KEYS, EvalRequest, evaluate
    from engine.evaluate.texts import read_text
    from engine.jobs import CancelToken, cancel_on_signals, run_job

    for path in (args.model, args.base):  # before anything is loaded or allocated
        if path:
            check_model_context(Path(path), args.ctx, args.device, all_logits=True)
    text = read_text(args.text)
    request = EvalRequest(
        model=Path(args.model).expanduser(),
        text=text,
        text_name=str(args.text) if args.text else "built-in texts",
        n_ctx=args.ctx,
        base=Path(args.base).expanduser() if args.base else None,
        device=args.device,
        threads=args.threads,
        gpu_layers=args.gpu_layers,
        speed=not args.no_speed,
    )
    last = {"msg": ""}

    def show(event) -> None:  # noqa: ANN001
        if event.message and event.message != last["msg"]:
            last["msg"] = event.message
            eta = f" (about {_eta(event.eta_s)} left)" if event.eta_s is not None else ""
            print(f"[{event.fraction * 100:5.1f}%] {event.message}{eta}", file=sys.stderr, flush=True)

    cancel = CancelToken()
    with cancel_on_signals(cancel):  # Ctrl-C, SIGTERM, SIGHUP: the evaluation child ends, exit 130
        data = run_job(evaluate(request, cancel), None if args.json else show)
    keys = [k for k in JSON_KEYS if k in data]
    out = {k: data.get(k) for k in keys}
    if "peak_rss_bytes" in data:
        out["peak_memory_bytes"] = data["peak_rss_bytes"]
    if args.json:
        print(json.dumps(out))
        return 0
    from engine.units import format_bytes

    print(f"PPL {data['ppl']:.4f} ± {data['ppl_stderr']:.4f} over {data['tokens']} tokens "
          f"({data['chunks']} chunks of {data['n_ctx']})")
    if "kld_mean" in data:
        print(f"KLD mean {data['kld_mean']:.6f}, 99th percentile {data['kld_p99']:.6f}, "
              f"same top token {data['same_top_pct']:.2f}% (original PPL {data['base_ppl']:.4f})")
    if "prompt_tps" in data:
        print(f"Speed: prompt {data['prompt_tps']:.1f} tokens/s, generation {data['gen_tps']:.1f} tokens/s, "
              f"peak memory {format_bytes(data['peak_rss_bytes'])}")
    return 0


def _eta(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
