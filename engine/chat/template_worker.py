"""The child process that renders a model's chat template (run by engine.chat.template with ``python -I -c``).

A chat template is code from the model's author; the Jinja sandbox keeps it
from touching anything, but not from looping forever or building gigabytes of
text. Here it runs under a memory and CPU-time limit, stops at an output size
limit, and the parent kills it when it takes too long. The file is
self-contained (the standard library and jinja2 only) because it is run by its
source text, not imported.

Protocol: one JSON object per line each way. The child first answers
``{"ready": true}``; then for each ``{"template", "context", "limit"}`` it
answers ``{"text": ...}`` or ``{"error": "size" | "memory" | "failed", "message": ...}``.
It ends when its standard input closes (its parent went away).
"""

from __future__ import annotations

import contextlib
import json
import sys
from datetime import datetime
from typing import Any


def _limit_resources(memory_bytes: int, cpu_seconds: int) -> None:
    try:
        import resource
    except ImportError:  # Windows: the parent's timeout still applies
        return
    for which, value in ((getattr(resource, "RLIMIT_AS", None), memory_bytes),
                         (getattr(resource, "RLIMIT_CPU", None), cpu_seconds)):
        if which is None or value <= 0:
            continue
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(which, (value, value))


def _environment() -> Any:
    """Jinja settings that chat templates are written for (transformers' and llama-cpp-python's)."""
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(Extension):
        """``{% generation %}...{% endgeneration %}`` marks the assistant's part; it renders its body."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return caller()

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, "jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def _render(env: Any, cache: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    source = request["template"]
    template = cache.get(source)
    if template is None:
        if len(cache) > 8:
            cache.clear()
        template = cache[source] = env.from_string(source)
    limit = int(request["limit"])
    pieces, size = [], 0
    for piece in template.generate(**request["context"]):
        size += len(piece)
        if size > limit:
            return {"error": "size", "message": f"more than {limit} characters"}
        pieces.append(piece)
    return {"text": "".join(pieces)}


def main(argv: list[str]) -> int:
    _limit_resources(int(argv[1]), int(argv[2]))
    env = _environment()
    cache: dict[str, Any] = {}
    out = sys.stdout
    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        try:
            answer = _render(env, cache, json.loads(line))
        except MemoryError:
            answer = {"error": "memory", "message": "out of memory"}
        except RecursionError:
            answer = {"error": "failed", "message": "it recurses too deeply"}
        except Exception as err:  # noqa: BLE001 - the template's own error, reported in one line
            answer = {"error": "failed", "message": f"{type(err).__name__}: {str(err)[:300]}"}
        try:
            text = json.dumps(answer)
        except MemoryError:
            text = '{"error": "memory", "message": "out of memory"}'
        out.write(text + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
