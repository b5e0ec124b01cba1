"""Chat through real llama.cpp and real transformers on the smollm2 and tiny test models."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.chat import NO_TEMPLATE_NOTICE, ChatSlot, Sampling, open_chat
from engine.errors import JobCancelled, QuantDeskError
from engine.jobs import CancelToken, run_job

QUESTION = "What is the capital of France?"
GREEDY = Sampling(temperature=0, max_tokens=24)


def _loaded(path: Path, **options):
    options.setdefault("threads", 1)
    return run_job(open_chat(path, **options).load())


@pytest.fixture(scope="module")
def q8_chat(chat_ggufs):
    chat = _loaded(chat_ggufs["Q8_0"], n_ctx=512)
    yield chat
    chat.close()


def test_gguf_greedy_answer_and_measurements(q8_chat):
    q8_chat.reset()
    pieces: list[str] = []
    reply = q8_chat.ask(QUESTION, GREEDY, on_text=pieces.append)
    assert "Paris" in reply.text
    assert len(pieces) > 1 and "".join(pieces).strip() == reply.text  # it streamed
    assert reply.finish_reason == "stop" and reply.tokens == 7
    assert 0 < reply.time_to_first_token_s < 30 and reply.tokens_per_second > 0
    # Multi-turn: the second question sees the first exchange.
    second = q8_chat.ask("And what is the capital of Germany?", GREEDY)
    assert "Berlin" in second.text
    assert second.prompt_tokens > reply.prompt_tokens + reply.tokens
    assert [m["role"] for m in q8_chat.history] == ["user", "assistant", "user", "assistant"]


def test_hf_greedy_answer(smollm2_dir):
    with _loaded(smollm2_dir) as chat:
        assert chat.backend == "transformers" and chat.has_template
        reply = chat.ask(QUESTION, GREEDY)
    assert "Paris" in reply.text and reply.tokens > 0 and reply.tokens_per_second > 0


def test_bitsandbytes_folder_through_the_chat_engine(bnb_smollm2):
    with _loaded(bnb_smollm2.outputs["hf:bnb-nf4"]) as chat:
        assert chat.backend == "transformers" and chat.has_template
        reply = chat.ask(QUESTION, Sampling(temperature=0, max_tokens=8))
    assert "Paris" in reply.text


def test_system_prompt_goes_through_the_template(q8_chat):
    q8_chat.reset()
    q8_chat.system_prompt = "You answer in one word."
    try:
        prompt = q8_chat._render([{"role": "user", "content": QUESTION}])
    finally:
        q8_chat.system_prompt = None
    default = q8_chat._render([{"role": "user", "content": QUESTION}])
    text = q8_chat._llm.detokenize(prompt, special=True).decode()
    assert "You answer in one word." in text and "<|im_start|>system" in text
    assert "You answer in one word." not in q8_chat._llm.detokenize(default, special=True).decode()


def test_stop_mid_reply_returns_fast_and_keeps_the_text(q8_chat):
    q8_chat.reset()
    cancel = CancelToken()
    gen = q8_chat.send("Write a very long story about a dragon who learns to bake bread.",
                       Sampling(temperature=0.8, seed=7, max_tokens=400), cancel)
    got = [next(gen) for _ in range(5)]
    pressed: list[float] = []

    def press_stop() -> None:  # the moment the user presses Stop, wherever the generator is
        pressed.append(time.perf_counter())
        cancel.cancel()

    timer = threading.Timer(0.05, press_stop)
    timer.start()
    while True:
        try:
            got.append(next(gen))
        except StopIteration as stop:
            reply = stop.value
            break
    returned = time.perf_counter()
    timer.cancel()  # a reply that ended on its own must not count as stopped
    timer.join()
    assert pressed, "the reply ended before Stop was pressed"
    assert reply.stopped and reply.finish_reason == "cancelled"
    assert reply.text == "".join(got) and reply.tokens >= 5
    # Within a token or two (a few ms here); running on to max_tokens would take seconds.
    assert returned - pressed[0] < 0.2
    assert q8_chat.history[-1] == {"role": "assistant", "content": reply.text}


def test_context_overflow_drops_oldest_turns(chat_ggufs):
    with _loaded(chat_ggufs["Q8_0"], n_ctx=160) as chat:
        small = Sampling(temperature=0, max_tokens=12)
        notices: list[str] = []
        for i in range(4):
            reply = chat.ask(f"Tell me fact number {i} about rivers, oceans, lakes and the water cycle. " * 2, small)
            notices += reply.notices
            assert reply.tokens > 0
        assert any("oldest" in n for n in notices)
        assert len(chat.history) < 8
        huge = chat.ask("word " * 400, small)  # one message longer than the whole context
        assert huge.tokens > 0 and any("only its end was kept" in n for n in huge.notices)


@pytest.mark.parametrize("kind", ["hf", "gguf"])
def test_base_model_falls_back_to_completion(kind, tiny_nochat_dir, tiny_nochat_gguf):
    path = tiny_nochat_dir if kind == "hf" else tiny_nochat_gguf
    with _loaded(path, n_ctx=256) as chat:
        assert not chat.has_template
        assert NO_TEMPLATE_NOTICE in chat.take_notices()
        reply = chat.ask("Once upon a time", Sampling(temperature=0, max_tokens=8))
        # Plain completion: the prompt is the text itself, no chat markup around it.
        prompt = chat._render([{"role": "user", "content": "Once upon a time"}])
        assert len(prompt) <= 5
    assert reply.tokens > 0


def test_corrupt_gguf_gives_a_clear_error(chat_ggufs, tmp_path):
    truncated = tmp_path / "truncated.gguf"
    with chat_ggufs["Q8_0"].open("rb") as fh:
        truncated.write_bytes(fh.read(200_000))
    with pytest.raises(QuantDeskError, match="damaged or (incomplete|truncated)"):
        run_job(open_chat(truncated).load())
    foreign = tmp_path / "notes.gguf"
    foreign.write_text("this is not a model")
    with pytest.raises(QuantDeskError, match="not a GGUF file"):
        run_job(open_chat(foreign).load())
    with pytest.raises(QuantDeskError, match="no config.json"):
        open_chat(tmp_path)


def test_load_can_be_cancelled(chat_ggufs):
    cancel = CancelToken()
    gen = open_chat(chat_ggufs["Q8_0"], threads=1).load(cancel)
    next(gen)
    cancel.cancel()
    started = time.perf_counter()
    with pytest.raises(JobCancelled):
        run_job(gen)
    assert time.perf_counter() - started < 0.5


def test_switching_models_frees_the_previous_one(chat_ggufs, tiny_nochat_gguf):
    slot = ChatSlot()
    first = run_job(slot.switch(tiny_nochat_gguf, threads=1, n_ctx=128))
    second = run_job(slot.switch(chat_ggufs["Q4_K_M"], threads=1, n_ctx=128))
    assert first._llm is None and not first.loaded
    assert slot.chat is second and second.loaded
    slot.close()
    assert second._llm is None


def test_cuda_request_on_a_cpu_build_says_how_to_install(chat_ggufs):
    from engine.hardware import llama_gpu_offload

    if llama_gpu_offload():
        pytest.skip("this llama-cpp-python can offload to a GPU")
    with pytest.raises(QuantDeskError, match='CMAKE_ARGS="-DGGML_CUDA=on" pip install'):
        run_job(open_chat(chat_ggufs["Q8_0"], device="cuda").load())


def test_gpu_layer_plan_fits_what_memory_allows(chat_ggufs):
    from engine.chat.offload import plan_gpu_layers

    path = chat_ggufs["Q8_0"]
    everything = plan_gpu_layers(path, 2048, 8 * 1024**3)
    assert everything.gpu_layers == everything.total_layers == 30
    tight = plan_gpu_layers(path, 2048, 580 * 1024**2)
    assert 0 < tight.gpu_layers < 30 and "of 30 layers fit" in tight.reason
    assert plan_gpu_layers(path, 2048, 100 * 1024**2).gpu_layers == 0
    # More context, more KV cache: fewer layers fit in the same memory.
    assert plan_gpu_layers(path, 8192, 580 * 1024**2).gpu_layers < tight.gpu_layers


def test_sampling_settings_are_checked():
    with pytest.raises(QuantDeskError, match="temperature"):
        Sampling(temperature=-1)
    with pytest.raises(QuantDeskError, match="top-p"):
        Sampling(top_p=0)


def test_cli_answers_once_as_json(chat_ggufs):
    out = subprocess.run(
        [sys.executable, "-m", "engine", "chat", str(chat_ggufs["Q8_0"]), "--prompt", QUESTION,
         "--temperature", "0", "--max-tokens", "24", "--threads", "1", "--ctx", "256", "--json"],
        capture_output=True, text=True, timeout=180,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data) == {"text", "tokens", "time_to_first_token_s", "tokens_per_second"}
    assert "Paris" in data["text"] and data["tokens"] > 0


def test_cli_error_is_one_line(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    out = subprocess.run([sys.executable, "-m", "engine", "chat", str(bad), "--prompt", "hi"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    lines = [ln for ln in out.stderr.splitlines() if ln.strip() and not ln.startswith("Loading")]
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert re.search("damaged or (incomplete|truncated)", lines[0])


def test_same_seed_same_sampled_reply(q8_chat):
    warm = Sampling(temperature=0.9, seed=1234, max_tokens=16)
    q8_chat.reset()
    first = q8_chat.ask("Name a colour.", warm).text
    q8_chat.reset()
    assert q8_chat.ask("Name a colour.", warm).text == first


def test_cli_interactive_session(chat_ggufs):
    out = subprocess.run(
        [sys.executable, "-m", "engine", "chat", str(chat_ggufs["Q8_0"]), "--temperature", "0",
         "--max-tokens", "24", "--threads", "1", "--ctx", "512"],
        input=f"{QUESTION}\n/reset\nAnd of Germany?\n/exit\n", capture_output=True, text=True, timeout=180,
    )
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout and "(conversation forgotten)" in out.stderr
    assert out.stderr.count("tokens, first after") == 2


@pytest.mark.gpu
def test_gguf_on_cuda_offloads_layers(chat_ggufs):
    with _loaded(chat_ggufs["Q8_0"], device="cuda", n_ctx=512) as chat:
        assert chat.gpu_layers == 30
        assert "Paris" in chat.ask(QUESTION, GREEDY).text


@pytest.mark.gpu
def test_hf_on_cuda(smollm2_dir):
    with _loaded(smollm2_dir, device="cuda") as chat:
        assert "Paris" in chat.ask(QUESTION, GREEDY).text
