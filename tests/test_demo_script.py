"""Tests of demo_script.py: the quick tour learns, passes its options on, and refuses bad input."""

import json
import os

import pytest

import binary_counting
import demo_script
import sine_wave_prediction
from experiment_utils import Terminated

pytestmark = pytest.mark.usefixtures("restore_threads")  # tests/conftest.py


def test_quick_demo_shows_both_models_learning(tmp_path, capsys):
    assert demo_script.main(["--quiet", "--out-dir", str(tmp_path)]) == 0
    binary = json.loads((tmp_path / binary_counting.JSON_NAME).read_text())
    sine = json.loads((tmp_path / "sine_wave.json").read_text())
    assert binary["epochs"][0]["valid_accuracy"] < 0.5 < 0.95 <= binary["epochs"][-1]["valid_accuracy"]
    assert sine["epochs"][-1]["test_loss"] <= 0.01 < sine["epochs"][0]["test_loss"]
    for name in (binary_counting.FIGURE_NAME, "sine_epoch0.png", "sine_epoch2.png", "sine_epoch9.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    out = capsys.readouterr().out
    assert "Binary counting (6 epochs" in out and "forecast MSE on the held-out 40 points" in out


def test_full_runs_the_published_settings():
    args = demo_script.parse_args(["--full"])
    binary = demo_script.experiment_config(args, binary_counting, demo_script.QUICK_BINARY_COUNTING)
    sine = demo_script.experiment_config(args, sine_wave_prediction, demo_script.QUICK_SINE_WAVE)
    assert binary_counting.uses_published_settings(binary)
    assert (sine.epochs, sine.batch_size, sine.lr, sine.hidden_size) == (10, 1, 0.01, 50)


def test_shared_options_reach_both_experiments(tmp_path):
    threads = min(2, os.cpu_count() or 1)  # more than the machine has would be a usage error
    argv = ["--seed", "3", "--cell", "torch", "--threads", str(threads), "--quiet", "--no-figures"]
    argv += ["--out-dir", str(tmp_path)]
    args = demo_script.parse_args(argv)
    experiments = [
        demo_script.experiment_config(args, binary_counting, demo_script.QUICK_BINARY_COUNTING),
        demo_script.experiment_config(args, sine_wave_prediction, demo_script.QUICK_SINE_WAVE),
    ]
    for settings in experiments:
        assert (settings.seed, settings.cell, settings.threads, settings.quiet) == (3, "torch", threads, True)
        assert settings.out_dir == tmp_path and settings.no_figures


def test_the_cell_options_reach_both_experiments(tmp_path):
    args = demo_script.parse_args(["--variant", "cifg", "--forget-bias", "1.5", "--out-dir", str(tmp_path)])
    for script, quick in (
        (binary_counting, "QUICK_BINARY_COUNTING"),
        (sine_wave_prediction, "QUICK_SINE_WAVE"),
    ):
        settings = demo_script.experiment_config(args, script, getattr(demo_script, quick))
        assert (settings.variant, settings.forget_bias) == ("cifg", 1.5)


@pytest.mark.parametrize(
    "bad",
    [
        ["--threads", "0"],
        ["--threads", str((os.cpu_count() or 1) + 1)],
        ["--seed", "x"],
        ["--seed", str(2**32)],
        ["--cell", "gru"],
        ["--fast"],
        ["--resume"],
    ],
)
def test_bad_options_are_usage_errors_before_any_file(bad, tmp_path, capsys):
    out_dir = tmp_path / "demo"
    with pytest.raises(SystemExit) as exit_:
        demo_script.main([*bad, "--out-dir", str(out_dir)])
    assert exit_.value.code == 2
    assert "usage:" in capsys.readouterr().err
    assert not out_dir.exists()


def test_ctrl_c_stops_with_one_line_and_status_130(tmp_path, monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_script, "run_binary_counting", interrupted)
    assert demo_script.main(["--quiet", "--out-dir", str(tmp_path)]) == 130
    assert capsys.readouterr().err.strip() == "Interrupted: 0 of 2 experiments finished."


def test_an_out_dir_that_is_a_file_is_a_usage_error(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(SystemExit) as exit_:
        demo_script.main(["--out-dir", str(a_file)])
    assert exit_.value.code == 2
    assert "--out-dir: expected a folder" in capsys.readouterr().err


def test_the_default_folder_is_outside_the_tracked_files():
    assert str(demo_script.parse_args([]).out_dir) == "runs/demo"


def test_sigterm_stops_with_one_line_and_status_143(tmp_path, monkeypatch, capsys):
    def terminated(args):
        raise Terminated

    monkeypatch.setattr(demo_script, "run_sine_wave", terminated)
    monkeypatch.setattr(demo_script, "run_binary_counting", lambda args: "binary counting ran")
    assert demo_script.main(["--quiet", "--out-dir", str(tmp_path)]) == 143
    assert capsys.readouterr().err.strip() == "Terminated (SIGTERM): 1 of 2 experiments finished."
