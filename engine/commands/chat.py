"""``quantdesk chat MODEL``: talk to a GGUF file or a Hugging Face folder in the terminal."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="chat with a model (GGUF file or Hugging Face folder)",
                       description="Chat with a model in the terminal. Type /reset to forget the "
                       "conversation, /exit to leave; Ctrl+C stops a reply.")
    p.add_argument("model", help="a .gguf file or a Hugging Face model folder")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--gpu-layers", type=int, default=None,
                   help="GGUF layers to put on the GPU (default: as many as fit)")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--temperature", type=float, default=0.7, help="0 gives greedy answers")
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--repeat-penalty", type=float, default=1.1)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--ctx", type=int, default=None, help="context window in tokens")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--prompt", default=None, help="answer this once and exit")
    p.add_argument("--json", action="store_true",
                   help='with --prompt: print {"text","tokens","time_to_first_token_s","tokens_per_second"}')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.chat import Sampling, open_chat
    from engine.errors import QuantDeskError
    from engine.jobs import CancelToken, run_job
    from engine.terminal import one_line

    if args.json and args.prompt is None:
        raise QuantDeskError("--json needs --prompt: it prints one answer as JSON.")
    if args.gpu_layers is not None and args.gpu_layers < 0:
        raise QuantDeskError("--gpu-layers cannot be negative; leave it out to fit as many as possible.")
    sampling = Sampling(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                        repeat_penalty=args.repeat_penalty, max_tokens=args.max_tokens, seed=args.seed)
    chat = open_chat(args.model, device=args.device, gpu_layers=args.gpu_layers, n_ctx=args.ctx,
                     threads=args.threads, system_prompt=args.system)
    quiet = args.json
    if not quiet:
        print(f"Loading {one_line(chat.path.name)} ({chat.backend}, {args.device})...", file=sys.stderr, flush=True)
    run_job(chat.load(CancelToken()))
    try:
        _tell(chat.take_notices(), quiet)
        if args.prompt is not None:
            reply = chat.ask(args.prompt, sampling, on_text=None if quiet else _write)
            if quiet:
                print(json.dumps(reply.to_json()))
            else:
                print()
                _tell(reply.notices, False)
                _stats(reply)
            return 0
        return _interactive(chat, sampling)
    finally:
        chat.close()


def _interactive(chat, sampling) -> int:  # noqa: ANN001 - Chat and Sampling, imported lazily
    from engine.jobs import CancelToken

    print("Type a message; /reset forgets the conversation, /exit leaves. Ctrl+C stops a reply.",
          file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            chat.reset()
            print("(conversation forgotten)", file=sys.stderr)
            continue
        cancel = CancelToken()
        gen = chat.send(text, sampling, cancel)
        while True:
            try:
                _write(next(gen))
            except StopIteration as stop:
                reply = stop.value
                break
            except KeyboardInterrupt:
                cancel.cancel()
        print()
        _tell(reply.notices, False)
        _stats(reply)


def _write(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()


def _tell(notices: list[str], quiet: bool) -> None:
    if quiet:
        return
    from engine.terminal import one_line

    for note in notices:
        print(f"[note] {one_line(note)}", file=sys.stderr)


def _stats(reply) -> None:  # noqa: ANN001
    ttft = f"{reply.time_to_first_token_s:.2f} s" if reply.time_to_first_token_s is not None else "-"
    tps = f"{reply.tokens_per_second:.1f} tokens/s" if reply.tokens_per_second is not None else "-"
    stopped = ", stopped" if reply.stopped else ""
    print(f"[{reply.tokens} tokens, first after {ttft}, {tps}{stopped}]", file=sys.stderr)
