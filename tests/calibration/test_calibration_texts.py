"""The project's own calibration texts: present, well formed, varied in script, and never
overlapping the evaluation texts (calibrating on the test set would flatter every score)."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CALIBRATION = ROOT / "resources" / "calibration"
EVAL = ROOT / "resources" / "eval"

# Target sizes in characters; each file must reach at least 80 % of its target.
TARGETS = {"chat.jsonl": 90_000, "prose.txt": 50_000, "code.txt": 40_000, "languages.txt": 30_000}
SHINGLE = 8


def _normalise(text: str) -> str:
    """Lowercase words only: case, whitespace and punctuation never hide an overlap."""
    return " ".join(re.findall(r"\w+", unicodedata.normalize("NFC", text).lower()))


def shingles(text: str, n: int = SHINGLE) -> set[tuple[str, ...]]:
    """Every run of ``n`` consecutive words of the normalised text."""
    words = _normalise(text).split(" ")
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _chat_texts(path: Path) -> list[str]:
    return [m["content"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
            for m in json.loads(line)["messages"]]


def calibration_texts() -> dict[str, list[str]]:
    """Name → the texts to compare: chat message contents, or the file's paragraphs."""
    out = {"chat.jsonl": _chat_texts(CALIBRATION / "chat.jsonl")}
    for name in ("prose.txt", "code.txt", "languages.txt"):
        text = (CALIBRATION / name).read_text(encoding="utf-8")
        out[name] = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    return out


def _eval_texts() -> dict[str, str]:
    texts = {p.name: p.read_text(encoding="utf-8") for p in sorted(EVAL.glob("*.txt"))}
    assert texts, f"no evaluation texts found in {EVAL}"
    return texts


def first_shared(a: str, b: str) -> tuple[str, ...] | None:
    common = shingles(a) & shingles(b)
    return min(common) if common else None


def test_shingle_check_finds_a_planted_overlap() -> None:
    base = "the quick brown fox jumps over the lazy dog near the river bank"
    planted = "Something else entirely. The QUICK brown fox  jumps over\nthe lazy dog, then stops."
    assert first_shared(base, planted) is not None
    assert ("the", "quick", "brown", "fox", "jumps", "over", "the", "lazy") in shingles(base) & shingles(planted)
    assert first_shared(base, "the quick brown fox sleeps under the lazy dog near the river") is None
    quoted = 'She wrote: "Handed over the keys. Light is in good hands."'
    assert first_shared(quoted, "handed over the keys; light is in good hands") is not None


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_file_exists_is_utf8_and_large_enough(name: str) -> None:
    path = CALIBRATION / name
    assert path.is_file(), f"missing {path}"
    text = path.read_bytes().decode("utf-8")
    assert "\x00" not in text and "\ufffd" not in text
    assert len(text) >= 0.8 * TARGETS[name], f"{name}: {len(text)} characters, want ≥ {0.8 * TARGETS[name]:.0f}"


def test_chat_lines_are_well_formed_conversations() -> None:
    lines = [ln for ln in (CALIBRATION / "chat.jsonl").read_text(encoding="utf-8").splitlines() if ln.strip()]
    assert len(lines) >= 50
    for number, line in enumerate(lines, 1):
        record = json.loads(line)
        messages = record["messages"]
        assert isinstance(messages, list) and messages, f"line {number}: no messages"
        roles = [m["role"] for m in messages]
        assert all(set(m) == {"role", "content"} for m in messages), f"line {number}: unexpected keys"
        assert all(isinstance(m["content"], str) and m["content"].strip() for m in messages), \
            f"line {number}: empty content"
        if roles[0] == "system":
            roles = roles[1:]
        expected = ["user", "assistant"] * (len(roles) // 2 + 1)
        assert roles == expected[:len(roles)], f"line {number}: roles {roles} do not alternate user/assistant"
        assert len(roles) >= 2 and roles[-1] == "assistant", f"line {number}: must end with the assistant"


def test_no_calibration_text_overlaps_the_evaluation_texts() -> None:
    evals = _eval_texts()
    eval_shingles = {name: shingles(text) for name, text in evals.items()}
    eval_norm = {name: f" {_normalise(text)} " for name, text in evals.items()}
    for cal_name, pieces in calibration_texts().items():
        for piece in pieces:
            mine = shingles(piece)
            for eval_name, theirs in eval_shingles.items():
                common = mine & theirs
                assert not common, f"{cal_name} shares {' '.join(min(common))!r} with eval/{eval_name}"
            norm = _normalise(piece)
            if len(norm.split(" ")) >= 4:
                for eval_name, text in eval_norm.items():
                    assert f" {norm} " not in text, \
                        f"{cal_name} paragraph {norm[:60]!r} appears in eval/{eval_name}"


SCRIPTS = {
    "Latin with diacritics": r"[éèàçäöüßñãõąęłśżıİğş]",
    "Cyrillic": r"[\u0400-\u04FF]",
    "CJK ideographs": r"[\u4E00-\u9FFF]",
    "Japanese kana": r"[\u3040-\u30FF]",
    "Hangul": r"[\uAC00-\uD7AF]",
    "Arabic": r"[\u0600-\u06FF]",
    "Devanagari": r"[\u0900-\u097F]",
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_languages_cover_each_script(script: str) -> None:
    text = (CALIBRATION / "languages.txt").read_text(encoding="utf-8")
    found = re.findall(SCRIPTS[script], text)
    assert len(found) >= 200, f"languages.txt has only {len(found)} {script} characters"
