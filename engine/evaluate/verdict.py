"""One word a hobbyist can act on: near-lossless, small loss, noticeable loss, broken.

The verdict is read from the KL divergence of the output against its source
over the same tokens (mean and 99th percentile, in nats per token), how often
both put the same token on top, and whether a few fixed prompts still get the
source's greedy answer.

Thresholds, grounded in llama.cpp's published k-quant table (tools/perplexity
README, Llama 3 8B, Wikitext-2, no imatrix): Q8_0 mean KLD 0.0014 with the same
top token 97.7% of the time, Q6_K 0.0055 / 96.0%, Q5_K_M 0.011, Q4_K_M 0.031 /
91.9%, Q3_K_M 0.10, Q2_K 0.45 / 71.1% (PPL +56%); on Llama 2 7B Q2_K is 0.11 /
85.6% and Q4_K_M 0.013 / 94.7%.

==================  ==========  ==============  =============
verdict             mean KLD    p99 KLD         same top
==================  ==========  ==============  =============
near-lossless       <= 0.01     <= 0.1          >= 95 %
small loss          <= 0.06     <= 0.6          >= 88 %
noticeable loss     <= 0.35     <= 3.5          >= 65 %
broken              above any of these
==================  ==========  ==============  =============

So Q8_0 and Q6_K of a large model are near-lossless, Q5_K_M sits at the edge,
Q4_K_M and Q4_K_S are small loss, Q4_0 to Q3_K_S (0.07-0.23) are noticeable,
and Q2_K of Llama 3 (0.45, a 56% rise in perplexity) is broken. Each row must
hold on every column: the worst column decides. The p99 limits are QuantDesk's
choice (llama.cpp's table gives no p99 for the quants): ten times the mean
limit, because a heavy tail well beyond that means a few tokens are badly
damaged even where the mean looks fine. Small models lose more per bit than
the 8B ones in the table, which is why the same thresholds judge a 135M model's
Q4_K_M harsher than Llama 3's: that is the point of measuring.

The fixed prompts only ever lower the verdict, by one step and never to
"broken" (that takes the numbers), when more than half of the answers differ
from the source's: a greedy answer flips on a single changed token (at 97.7%
same-top a 16-token answer stays identical only about 69% of the time), so a
few changed answers are expected even from Q8_0 and say little on their own.
Answers are ``ANSWER_TOKENS`` (16) tokens: where an answer turns away shows in
its first tokens, and each token is a decoding step of the source on a cold
check.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

VERDICTS = ("near-lossless", "small loss", "noticeable loss", "broken")

# (mean KLD, p99 KLD, same top %) each verdict must meet; "broken" is whatever meets none.
THRESHOLDS: dict[str, tuple[float, float, float]] = {
    "near-lossless": (0.01, 0.1, 95.0),
    "small loss": (0.06, 0.6, 88.0),
    "noticeable loss": (0.35, 3.5, 65.0),
}

# The fixed prompts: a fact, arithmetic, a short instruction, a code line. Written for QuantDesk.
PROMPTS: tuple[str, ...] = (
    "What is the capital of France? Answer in one word.",
    "What is 17 + 25? Reply with the number only.",
    "List three colours of a rainbow, separated by commas.",
    "Complete this line of Python: def add(a, b): return",
    "Which planet is closest to the Sun?",
    "Translate 'good morning' into Spanish.",
)
ANSWER_TOKENS = 16


@dataclass
class AnswerCheck:
    """How the output's greedy answers compare with the source's."""

    total: int
    matching: int
    first_difference: dict[str, str] | None = None  # {"prompt", "source", "output"}

    @property
    def changed(self) -> int:
        return self.total - self.matching


@dataclass
class Verdict:
    label: str
    evidence: str
    kld_mean: float
    kld_p99: float
    same_top_pct: float
    answers: AnswerCheck | None = None
    by_numbers: str = ""  # the verdict from KLD and same-top alone
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.answers is not None:
            data["answers"]["changed"] = self.answers.changed
        return data


def compare_answers(prompts: list[str] | tuple[str, ...], source: list[str], output: list[str]) -> AnswerCheck:
    """Count matching answers (whitespace-insensitive) and keep the first that differs."""
    def norm(text: str) -> str:
        return " ".join(text.split())

    matching = 0
    first = None
    for prompt, a, b in zip(prompts, source, output, strict=True):
        if norm(a) == norm(b):
            matching += 1
        elif first is None:
            first = {"prompt": prompt, "source": a, "output": b}
    return AnswerCheck(total=len(source), matching=matching, first_difference=first)


def _by_numbers(kld_mean: float, kld_p99: float, same_top_pct: float) -> str:
    for label, (mean_max, p99_max, same_min) in THRESHOLDS.items():
        if kld_mean <= mean_max and kld_p99 <= p99_max and same_top_pct >= same_min:
            return label
    return "broken"


def _short(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def judge(kld_mean: float, kld_p99: float, same_top_pct: float, answers: AnswerCheck | None = None,
          name: str = "") -> Verdict:
    """The verdict and its one sentence of evidence."""
    label = by_numbers = _by_numbers(kld_mean, kld_p99, same_top_pct)
    notes = []
    if (answers is not None and answers.total and answers.changed * 2 > answers.total
            and label not in ("noticeable loss", "broken")):
        label = VERDICTS[VERDICTS.index(label) + 1]
        notes.append(f"lowered from {by_numbers}: {answers.changed} of {answers.total} answers changed")
    head = f"{name}: " if name else ""
    sentence = f"{head}same top token {same_top_pct:.0f}% of the time, KLD {kld_mean:.3g} (p99 {kld_p99:.3g})"
    if answers is not None and answers.total:
        if answers.first_difference is None:
            sentence += f"; all {answers.total} answers match the original's"
        else:
            diff = answers.first_difference
            sentence += (f"; {answers.changed} of {answers.total} answers changed — e.g. "
                         f"'{_short(diff['prompt'])}' → '{_short(diff['output'])}' "
                         f"(original: '{_short(diff['source'])}')")
    return Verdict(label=label, evidence=sentence + ".", kld_mean=kld_mean, kld_p99=kld_p99,
                   same_top_pct=same_top_pct, answers=answers, by_numbers=by_numbers, notes=notes)
