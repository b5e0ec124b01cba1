"""A short model card (README.md) beside what QuantDesk produced.

The card is rebuilt from the JSON sidecars of every artifact in the folder, so
any backend (GGUF, bitsandbytes, ...) calls ``write_model_card(folder)`` after
writing its sidecars and the card lists everything there, whoever made it.
For GGUF files it says how to run them with llama.cpp and Ollama and writes a
ready ``Modelfile`` carrying the chat template.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from engine.artifacts import Artifact, list_artifacts
from engine.errors import QuantDeskError
from engine.formats import FORMATS
from engine.fsutil import Transaction, write_text_atomic
from engine.terminal import one_line, printable
from engine.units import format_bytes

CARD_NAME = "README.md"
MODELFILE_NAME = "Modelfile"
_MARKER = "<!-- quantdesk model card -->"
_MF_MARKER = "# Modelfile written by QuantDesk"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_VERSION_LABELS = {"quantdesk": "QuantDesk", "converter": "Converter", "llama.cpp": "llama.cpp"}
# Preferred file for the Modelfile's FROM line, best everyday choice first.
_PREFERENCE = ("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "Q4_K_S", "Q5_K_S", "IQ4_XS", "Q4_0", "Q3_K_M", "Q2_K",
               "F16", "BF16", "F32")


def write_model_card(folder: Path, *, source: Path | str | None = None, chat_template: str | None = None,
                     txn: Transaction | None = None) -> Path | None:
    """Write (or rewrite) the folder's model card from its artifacts' sidecars; returns its path.

    ``source`` is the model the artifacts were made from (an HF folder or a GGUF
    file); when ``chat_template`` is None it is read from there. Written through
    the job's ``txn`` when given, so a failed job puts the earlier card back. A
    README.md (or Modelfile) that QuantDesk did not write is never replaced
    unless the job was started with --overwrite; the card is then not written
    (None). A job checks this before it starts (``foreign_card_files``).
    """
    folder = Path(folder)
    artifacts = list_artifacts(folder)
    if source is None and artifacts:
        source = artifacts[0].source
    if chat_template is None and source:
        chat_template = read_chat_template(Path(source))
    ggufs = [a for a in artifacts if a.format.startswith("gguf:")]
    modelfile = None
    if ggufs:
        modelfile = _write_modelfile(folder, _preferred(ggufs), chat_template, txn)
    text = render_card(artifacts, source=source, chat_template=chat_template, modelfile=modelfile)
    return _write_owned(folder / CARD_NAME, text, card_is_ours, txn)


def card_is_ours(path: Path) -> bool:
    """A README.md that QuantDesk wrote (it starts with the card's marker)."""
    return _starts_with(path, _MARKER)


def modelfile_is_ours(path: Path) -> bool:
    """A Modelfile that QuantDesk wrote (it starts with its marker line)."""
    return _starts_with(path, _MF_MARKER)


def foreign_card_files(folder: Path, *, modelfile: bool) -> list[Path]:
    """README.md (and, when one will be written, Modelfile) in ``folder`` that QuantDesk did not write."""
    names = [(CARD_NAME, card_is_ours)] + ([(MODELFILE_NAME, modelfile_is_ours)] if modelfile else [])
    found = []
    for name, ours in names:
        path = Path(folder) / name
        if os.path.lexists(path) and not ours(path):
            found.append(path)
    return found


def render_card(artifacts: list[Artifact], *, source: Path | str | None, chat_template: str | None,
                modelfile: str | None) -> str:
    """The card's markdown; pure so it can be previewed before anything is written.

    Every name that comes from the user's files is quoted for where it lands:
    shlex for shell lines, a Python literal in code, a code span in markdown.
    """
    name = _model_name(source, artifacts)
    lines = [_MARKER, f"# {_plain(name)}, quantized with QuantDesk", ""]
    if source:
        lines.append(f"- **Source:** {_code(str(source))}")
    lines.append(f"- **Written:** {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    versions: dict[str, str] = {}
    for art in artifacts:
        versions.update(art.versions)
    for key in sorted(versions):
        lines.append(f"- **{_plain(_VERSION_LABELS.get(key, key))}:** {_plain(versions[key])}")
    judged = any(_verdict(art) for art in artifacts)
    head, rule = "| File | Type | Size | Bits per weight | Made |", "|---|---|---|---|---|"
    if judged:  # the quick check's verdict and its sentence of evidence (engine.evaluate.verdict)
        head, rule = head + " Quality check |", rule + "---|"
    lines += ["", head, rule]
    for art in artifacts:
        fmt = FORMATS.get(art.format)
        label = fmt.label if fmt else art.format
        bpw = _bits_per_weight(art)
        row = (f"| {_cell(_code(Path(art.path).name))} | {_cell(_plain(label))} | "
               f"{format_bytes(art.size_bytes)} | {bpw} | {_cell(_plain(art.created_at[:10] or '?'))} |")
        if judged:
            verdict, evidence = _verdict(art), art.evaluation.get("verdict_evidence")
            check = f"**{_plain(verdict)}**" if verdict else "-"
            if verdict and isinstance(evidence, str) and evidence:
                check += f" — {_plain(evidence)}"
            row += f" {_cell(check)} |"
        lines.append(row)
    lines += _imatrix_lines(artifacts)
    for art in artifacts:
        lines += _autopick_lines(art)
    ggufs = [a for a in artifacts if a.format.startswith("gguf:")]
    if ggufs:
        first = Path(_preferred(ggufs).path).name
        shell = shlex.quote(first)
        lines += [
            "", "## Run it with llama.cpp", "", "```sh",
            f'llama-cli -m {shell} -cnv -p "You are a helpful assistant."',
            f"llama-server -m {shell} --port 8080", "```", "",
            "Python (llama-cpp-python):", "", "```python", "from llama_cpp import Llama",
            f"llm = Llama(model_path={first!r}, n_ctx=4096)",
            'print(llm.create_chat_completion(messages=[{"role": "user", "content": "Hello!"}]))', "```",
        ]
        if modelfile:
            tag = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.") or "model"
            fence = _fence(modelfile)
            lines += [
                "", "## Run it with Ollama", "",
                f"A ready `{MODELFILE_NAME}` sits beside the files (it points at {_code(first)}; change its "
                "`FROM` line for another type):", "", "```sh",
                f"ollama create {shlex.quote(tag)} -f {MODELFILE_NAME}", f"ollama run {shlex.quote(tag)}", "```",
                "", fence, modelfile.rstrip(), fence,
            ]
    hf = [a for a in artifacts if not a.format.startswith("gguf:")]
    if hf:
        folder = Path(hf[0].path).name
        lines += [
            "", "## Load it with transformers", "", "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            f'model = AutoModelForCausalLM.from_pretrained({folder!r}, device_map="auto")',
            f"tokenizer = AutoTokenizer.from_pretrained({folder!r})", "```",
        ]
    if not chat_template:
        lines += ["", "No chat template was found: this looks like a base model, so prompt it with plain text."]
    lines.append("")
    return "\n".join(lines)


def _imatrix_lines(artifacts: list[Artifact]) -> list[str]:
    """Which files were quantized with an importance matrix, and what it was computed on."""
    lines = []
    for art in artifacts:
        matrix = art.options.get("imatrix") if isinstance(art.options, dict) else None
        if not isinstance(matrix, dict):
            continue
        calib = matrix.get("calibration") if isinstance(matrix.get("calibration"), dict) else None
        how = {"file": "given with --imatrix", "cached": "computed earlier"}.get(str(matrix.get("source")), "computed")
        if calib:
            how += (f" from {_plain(str(calib.get('data')))}, {calib.get('samples')} samples of "
                    f"{calib.get('seq_len')} tokens")
        lines.append(f"- {_code(Path(art.path).name)}: importance matrix {_code(str(matrix.get('file')))} ({how})")
    return ["", "**Importance matrix:**", *lines] if lines else []


def _autopick_lines(art: Artifact) -> list[str]:
    """How ``--to auto --max-size`` chose this file (engine.autopick): every candidate's size and numbers."""
    pick = art.evaluation.get("autopick") if isinstance(art.evaluation, dict) else None
    if not isinstance(pick, dict) or not isinstance(pick.get("candidates"), list):
        return []
    lines = ["", f"## Chosen for a size budget of {format_bytes(pick.get('max_bytes'))}", "",
             f"{_code(Path(art.path).name)} had the lowest KLD of the candidates that fit and were checked "
             "(sizes from llama.cpp's dry run).", "",
             "| Candidate | Size | Fits | KLD | Same top token | Verdict |", "|---|---|---|---|---|---|"]
    for row in pick["candidates"]:
        if not isinstance(row, dict):
            continue
        kld, top = row.get("kld_mean"), row.get("same_top_pct")
        name = _plain(str(row.get("type", "?"))) + (" (chosen)" if row.get("chosen") else "")
        lines.append(f"| {_cell(name)} — {_cell(_plain(str(row.get('about', ''))))} | "
                     f"{format_bytes(row.get('size_bytes'))} | {'yes' if row.get('fits') else 'no'} | "
                     f"{f'{kld:.4f}' if isinstance(kld, (int, float)) else '-'} | "
                     f"{f'{top:.0f}%' if isinstance(top, (int, float)) else '-'} | "
                     f"{_cell(_plain(_candidate_verdict(row)))} |")
    return lines


def _candidate_verdict(row: dict) -> str:
    """A candidate's verdict, or why it was not made although it fits (the search's bounds)."""
    if row.get("verdict"):
        return str(row["verdict"])
    return f"skipped: {row['skipped']}" if row.get("skipped") else "-"


def _verdict(art: Artifact) -> str:
    """The quick check's verdict recorded in the sidecar, or ""."""
    value = art.evaluation.get("verdict") if isinstance(art.evaluation, dict) else None
    return value if isinstance(value, str) else ""


def _plain(text: str) -> str:
    """One line of markdown text without control characters."""
    return one_line(text, 500)


def _code(text: str) -> str:
    """``text`` as a markdown code span, its delimiter longer than any run of backticks inside it."""
    text = one_line(text, 1000)
    ticks = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _cell(text: str) -> str:
    """Text for a markdown table cell: a ``|`` would start a new column."""
    return text.replace("|", "\\|")


def _fence(block: str) -> str:
    """A code fence longer than any run of backticks in ``block``, so the block cannot close it early."""
    return "`" * max(3, max((len(run) for run in re.findall(r"`+", block)), default=0) + 1)


def read_chat_template(source: Path) -> str | None:
    """The chat template of an HF folder (chat_template.jinja / tokenizer_config.json) or a GGUF file."""
    try:
        if source.is_dir():
            jinja = source / "chat_template.jinja"
            if jinja.is_file():
                return jinja.read_text(encoding="utf-8")
            for name in ("chat_template.json", "tokenizer_config.json"):
                cfg = source / name
                if cfg.is_file():
                    value = json.loads(cfg.read_text(encoding="utf-8")).get("chat_template")
                    if isinstance(value, list):  # named templates: take the default one
                        value = next((t.get("template") for t in value if t.get("name") == "default"), None)
                    if isinstance(value, str) and value:
                        return value
            return None
        if source.is_file() and source.suffix.lower() == ".gguf":
            from engine.gguf_header import read_gguf_header

            template = read_gguf_header(source).fields.get("tokenizer.chat_template")
            return template if isinstance(template, str) else None
    except (OSError, ValueError, AttributeError, TypeError, RecursionError, QuantDeskError):
        return None
    return None


def ollama_template(chat_template: str | None) -> tuple[str | None, list[str], str | None]:
    """(Go template, stop strings, default system prompt) for a Jinja chat template's family.

    Ollama templates are Go templates, not Jinja; the common families are
    recognised by their markers. Unknown families get None: Ollama then uses
    the template stored in the GGUF's metadata.
    """
    if not chat_template:
        return None, [], None
    t = chat_template
    if "<|im_start|>" in t:
        system = None
        match = re.search(r"<\|im_start\|>system\n(.+?)<\|im_end\|>", t, re.S)
        if match and "{{" not in match.group(1) and "{%" not in match.group(1):
            system = match.group(1).strip()
        go = (
            "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
            "{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
            "<|im_start|>assistant\n"
        )
        return go, ["<|im_start|>", "<|im_end|>"], system
    if "<|start_header_id|>" in t:
        go = (
            "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
            "{{ range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>"
            "{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
        )
        return go, ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], None
    if "<start_of_turn>" in t:
        go = (
            "{{ range .Messages }}<start_of_turn>{{ if eq .Role \"assistant\" }}model{{ else }}{{ .Role }}"
            "{{ end }}\n{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n"
        )
        return go, ["<start_of_turn>", "<end_of_turn>"], None
    if "[INST]" in t:
        go = (
            "{{ range .Messages }}{{ if eq .Role \"user\" }}[INST] {{ if $.System }}{{ $.System }}\n\n{{ end }}"
            "{{ .Content }} [/INST]{{ else }}{{ .Content }}</s>{{ end }}{{ end }}"
        )
        return go, ["[INST]", "[/INST]"], None
    return None, [], None


def render_modelfile(gguf_name: str, chat_template: str | None) -> str | None:
    """The Modelfile's text; None when the file's name cannot be written as Ollama's FROM value.

    Ollama's triple-quoted blocks have no escape character: a block ends at the
    first line break that follows three quotes (spaces between them ignored). Text from the model
    (the system prompt found in its template) therefore never carries three
    quotes in a row (the third becomes \\"), so it cannot end its block early
    and add commands of its own.
    """
    source = _from_value(gguf_name)
    if source is None:
        return None
    go, stops, system = ollama_template(chat_template)
    lines = [_MF_MARKER, f"FROM {source}"]
    if go:
        lines.append(f'TEMPLATE """{modelfile_block(go)}"""')
        if system:
            lines.append(f'SYSTEM """{modelfile_block(system)}"""')
        lines += [f'PARAMETER stop "{s}"' for s in stops]
    else:
        lines.append("# The chat template comes from the GGUF file's own metadata.")
    return "\n".join(lines) + "\n"


def modelfile_block(text: str) -> str:
    """``text`` made safe inside Ollama's triple quotes: no three quotes in a row, no control characters."""
    text = printable(text.replace("\r\n", "\n").replace("\r", "\n"))
    return re.sub(r'(?<="")"', '\\\\"', text)


def _from_value(gguf_name: str) -> str | None:
    """The FROM value for a file beside the Modelfile; None when its name holds a line break or control.

    Ollama ends a value at a line break and trims spaces around it; a quoted
    value keeps everything between its outer quotes, so any other name is safe.
    """
    if _CONTROL.search(gguf_name):
        return None
    if re.fullmatch(r"[A-Za-z0-9._+@=-]+", gguf_name):
        return f"./{gguf_name}"
    return f'"./{gguf_name}"'


def _write_modelfile(folder: Path, art: Artifact, chat_template: str | None,
                     txn: Transaction | None = None) -> str | None:
    """Write the Modelfile unless the user's own is there; the card shows the text either way."""
    text = render_modelfile(Path(art.path).name, chat_template)
    if text is None:
        return None
    _write_owned(folder / MODELFILE_NAME, text, modelfile_is_ours, txn)
    return text


def _write_owned(path: Path, text: str, ours: Callable[[Path], bool], txn: Transaction | None) -> Path | None:
    """Write ``path`` atomically unless a file there is not QuantDesk's (and --overwrite was not given)."""
    if txn is not None:
        try:
            txn.check_free(path, ours)
        except QuantDeskError:
            return None
        return txn.write_text(path, text, ours)
    if os.path.lexists(path) and not ours(path):
        return None
    return write_text_atomic(path, text)


def _starts_with(path: Path, marker: str) -> bool:
    """Whether the file starts with ``marker``, reading only that many bytes."""
    want = marker.encode("utf-8")
    try:
        with open(path, "rb") as handle:
            return handle.read(len(want)) == want
    except OSError:
        return False


def _preferred(ggufs: list[Artifact]) -> Artifact:
    rank = {name: i for i, name in enumerate(_PREFERENCE)}
    return min(ggufs, key=lambda a: rank.get(a.format.split(":", 1)[1], len(rank)))


def _bits_per_weight(art: Artifact) -> str:
    measured = art.options.get("bits_per_weight") if isinstance(art.options, dict) else None
    if isinstance(measured, (int, float)):
        return f"{measured:.2f}"
    fmt = FORMATS.get(art.format)
    return f"≈{fmt.bits_per_weight:.2f}" if fmt else "?"


def _model_name(source: Path | str | None, artifacts: list[Artifact]) -> str:
    if source:
        from engine.inspect import model_name

        return model_name(Path(source))
    return Path(artifacts[0].path).stem if artifacts else "Model"


# generation_config.json key -> (Ollama parameter, lowest, highest): the source's sampling defaults
_SAMPLING = {"temperature": ("temperature", 0.0, 5.0), "top_p": ("top_p", 0.0, 1.0), "top_k": ("top_k", 0, 1000),
             "min_p": ("min_p", 0.0, 1.0), "repetition_penalty": ("repeat_penalty", 0.5, 3.0)}


def modelfile_parameters(generation_config: dict | None) -> list[str]:
    """``PARAMETER`` lines carrying the source's sampling defaults (temperature, top_p, top_k, min_p, repeat).

    Only numbers in a sane range are taken (the file is untrusted); a source that
    decodes greedily (``do_sample: false``) gets temperature 0, as Ollama spells it.
    """
    if not isinstance(generation_config, dict):
        return []
    lines = []
    for key, (name, low, high) in _SAMPLING.items():
        value = generation_config.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            continue
        if key == "temperature" and generation_config.get("do_sample") is False:
            continue
        lines.append(f"PARAMETER {name} {int(value) if name == 'top_k' else round(float(value), 4)}")
    if generation_config.get("do_sample") is False:
        lines.insert(0, "PARAMETER temperature 0")
    return lines
