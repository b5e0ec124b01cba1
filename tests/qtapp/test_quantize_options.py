"""The Quantize tab's calibration, GPTQ/AWQ and importance-matrix settings reach the engine's request as typed."""

from __future__ import annotations

import pytest

from engine.backends import QuantizeRequest
from engine.errors import QuantDeskError
from engine.formats import FORMATS


@pytest.fixture
def view(qtbot, gui_settings):
    from qtapp.views.quantize import QuantizeView

    widget = QuantizeView()
    qtbot.addWidget(widget)
    return widget


def _request(view, tmp_path):
    choice = view.choice()
    return QuantizeRequest(source=tmp_path, targets=[FORMATS["hf:gptq-4bit"]], out_dir=tmp_path / "out",
                           options=choice.options)


def test_defaults_are_the_engines_defaults(view, tmp_path):
    req = _request(view, tmp_path)
    assert req.calibration.data == "builtin" and req.calibration.samples == 128 and req.calibration.seq_len == 512
    assert req.int4.group_size == 128 and req.int4.sym and not req.int4.desc_act and req.int4.damp == 0.05
    assert req.gguf.imatrix is None
    for fid in ("hf:awq-4bit", "hf:gptq-4bit", "hf:fp8"):
        assert fid in view.boxes


def test_a_users_file_mixed_with_the_builtin_texts_and_gptq_settings(view, tmp_path):
    data = tmp_path / "mine.jsonl"
    view.calib_file.setText(str(data))
    view.calib_mix.setChecked(True)
    view.calib_samples.setValue(64)
    view.calib_seq_len.setValue(1024)
    view.group_size.setCurrentText("64")
    view.sym.setChecked(False)
    view.act_order.setChecked(True)
    view.damp.setText("0.1")
    req = _request(view, tmp_path)
    assert req.calibration.data == f"builtin+{data}" and req.calibration.user_file == str(data)
    assert (req.calibration.samples, req.calibration.seq_len) == (64, 1024)
    assert (req.int4.group_size, req.int4.sym, req.int4.desc_act, req.int4.damp) == (64, False, True, 0.1)


def test_importance_matrix_choices(view, tmp_path):
    from qtapp.views.quantize import IMATRIX_CHOICES

    values = [v for _t, v in IMATRIX_CHOICES]
    view.imatrix.setCurrentIndex(values.index("auto"))
    assert _request(view, tmp_path).gguf.imatrix == "auto"
    view.imatrix.setCurrentIndex(values.index("none"))
    assert _request(view, tmp_path).gguf.imatrix == "none"
    view.imatrix.setCurrentIndex(values.index(None))
    assert not view.imatrix_file.isHidden()
    view.imatrix_file.setText(str(tmp_path / "model.imatrix.gguf"))
    assert _request(view, tmp_path).gguf.imatrix == str(tmp_path / "model.imatrix.gguf")


def test_a_mistyped_damping_gets_the_engines_sentence(view, tmp_path):
    view.damp.setText("lots")
    with pytest.raises(QuantDeskError, match="damping must be a number between 0 and 1"):
        _request(view, tmp_path)



def test_the_window_shows_a_bad_option_as_one_sentence_and_starts_nothing(qtbot, main_window, smollm2_dir):
    window = main_window
    window.open_model(smollm2_dir)
    qtbot.waitUntil(lambda: not window.session.busy and window.session.model_path == smollm2_dir, timeout=60_000)
    window.quantize.preselect(["gguf:Q8_0"])
    window.quantize.calib_samples.setValue(16)
    window.quantize.damp.setText("2")
    jobs = len(window.quantize.job_list.rows)
    window.quantize.start.click()
    qtbot.waitUntil(window.banner.isVisible, timeout=10_000)
    assert "damping must be a number between 0 and 1" in window.banner.text.text()
    assert len(window.quantize.job_list.rows) == jobs
