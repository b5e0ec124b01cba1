"""Chat templates from a model render with a time, memory and output limit; hostile ones get one sentence."""

from __future__ import annotations

import shutil
import time

import pytest

from engine.chat.template import TemplateRenderer
from engine.errors import QuantDeskError

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}done"
FLOODS = "{% for i in range(100000) %}{% for m in messages %}{{ m['content'] * 100 }}{% endfor %}{% endfor %}"
BALLOONS = ("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
            "{{ ns.s | length }}")
RECURSES = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]


@pytest.fixture
def renderers():
    made: list[TemplateRenderer] = []

    def make(template: str, **kwargs) -> TemplateRenderer:
        made.append(TemplateRenderer(template, **kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_a_real_template_renders(renderers):
    text = renderers(CHATML).render({"messages": MESSAGES, "add_generation_prompt": True})
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
                    "<|im_start|>assistant\n")


def test_transformers_extras_work(renderers):
    template = ("{% for m in messages %}{% if m['role'] == 'system' %}{% continue %}{% endif %}"
                "{% generation %}{{ m | tojson }}{% endgeneration %}{% endfor %}{{ bos_token }}")
    text = renderers(template).render({"messages": MESSAGES, "bos_token": "<s>"})
    assert text == '{"role": "user", "content": "Hi there"}<s>'


def test_a_looping_template_is_stopped_in_time(renderers):
    renderer = renderers(LOOPS, timeout_s=2.0)
    started = time.monotonic()
    with pytest.raises(QuantDeskError, match=r"did not finish within 2 seconds \(it may loop forever\); use "
                                             r"another model or fix its chat template\.$"):
        renderer.render({"messages": MESSAGES})
    assert time.monotonic() - started < 30  # 2 s, plus starting the renderer on a busy machine


def test_a_template_that_floods_text_is_cut_off(renderers):
    started = time.monotonic()
    with pytest.raises(QuantDeskError, match=r"produced more than 1 MB of text for this conversation"):
        renderers(FLOODS).render({"messages": MESSAGES})
    assert time.monotonic() - started < 30


def test_a_template_that_balloons_in_memory_is_stopped(renderers):
    with pytest.raises(QuantDeskError, match=r"needed more than 512 MB of memory; use another model or fix its chat template\.$"):
        renderers(BALLOONS, memory_bytes=512 * 1024**2, timeout_s=10.0).render({"messages": MESSAGES})


def test_a_template_that_recurses_fails_in_one_sentence(renderers):
    with pytest.raises(QuantDeskError, match=r"chat template failed \(it recurses too deeply\)"):
        renderers(RECURSES).render({"messages": MESSAGES})


def test_raise_exception_is_the_templates_own_sentence(renderers):
    with pytest.raises(QuantDeskError, match=r"failed \(TemplateError: System role not supported\)"):
        renderers("{{ raise_exception('System role not supported') }}").render({"messages": MESSAGES})


def test_the_renderer_recovers_after_a_hostile_render(renderers):
    renderer = renderers(LOOPS, timeout_s=1.0)
    with pytest.raises(QuantDeskError):
        renderer.render({"messages": MESSAGES})
    renderer.template = CHATML
    assert renderer.render({"messages": MESSAGES[1:]}).startswith("<|im_start|>user\nHi there")


def test_closing_ends_the_child(renderers):
    renderer = renderers(CHATML)
    renderer.render({"messages": MESSAGES})
    proc = renderer._proc
    assert proc is not None and proc.poll() is None
    renderer.close()
    assert proc.poll() is not None


def test_the_sandbox_still_applies(renderers):
    with pytest.raises(QuantDeskError, match="chat template failed"):
        renderers("{{ messages.__class__.__mro__[1].__subclasses__() }}").render({"messages": MESSAGES})


@pytest.mark.slow
def test_chat_with_a_looping_template_says_so(tmp_path, tiny_dir):
    """A real model folder whose chat template loops: the chat refuses in one sentence instead of hanging."""
    from engine.chat import open_chat
    from engine.jobs import run_job

    folder = tmp_path / "looping"
    shutil.copytree(tiny_dir, folder)
    (folder / "chat_template.jinja").write_text(LOOPS, encoding="utf-8")
    chat = open_chat(folder, n_ctx=256)
    run_job(chat.load())
    try:
        assert chat.has_template
        started = time.monotonic()
        with pytest.raises(QuantDeskError, match="did not finish within 5 seconds"):
            chat.ask("Hello")
        assert time.monotonic() - started < 40
    finally:
        chat.close()
