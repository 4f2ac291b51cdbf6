"""Tests of sine_wave_prediction.py: the data, the autoregressive forecast, the outputs and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import experiment_utils
import sine_wave_prediction as sine
from experiment_utils import INTERRUPTED_EXIT_STATUS, build_model, load_model
from lstm_cell import VARIANTS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Settings small enough for an epoch to take a fraction of a second.
TINY = ["--window", "8", "--hidden-size", "4", "--batch-size", "64", "--quiet"]


def tiny_args(tmp_path: Path, *extra: str) -> list[str]:
    return [*TINY, "--epochs", "2", "--plot-epochs", "0", "1", "--out-dir", str(tmp_path / "out"), *extra]


def files_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


# ---------------------------------------------------------------------------------------------------
# Data


def test_series_is_the_sine_wave_at_every_integer_time() -> None:
    series = sine.make_series()
    assert series.shape == (800,)
    expected = [math.sin(2 * math.pi * t / 40) for t in range(800)]
    torch.testing.assert_close(series, torch.tensor(expected), rtol=0, atol=1e-6)


def test_published_settings_give_720_windows_each_followed_by_its_target() -> None:
    series = sine.make_series()
    windows = sine.make_windows(series[:760], 40)
    x, y = windows.tensors
    assert x.shape == (720, 40, 1) and y.shape == (720,)
    for i in (0, 1, 359, 719):
        torch.testing.assert_close(x[i, :, 0], series[i : i + 40], rtol=0, atol=0)
        assert y[i] == series[i + 40]
    assert y[-1] == series[759], "the last target is the last training point, never a held-out one"


@given(length_and_window=st.integers(2, 60).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n - 1))))
@settings(max_examples=50, deadline=None)
def test_windows_slide_one_point_at_a_time(length_and_window: tuple[int, int]) -> None:
    length, window = length_and_window
    series = torch.randn(length)
    x, y = sine.make_windows(series, window).tensors
    assert x.shape == (length - window, window, 1) and y.shape == (length - window,)
    for i in range(length - window):
        assert torch.equal(x[i, :, 0], series[i : i + window])
        assert y[i] == series[i + window]


# ---------------------------------------------------------------------------------------------------
# The forecast


class RecordingModel(nn.Module):
    """Predicts (sum of the window) / 2 + 1 and remembers every window it was shown."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))
        self.inputs: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.inputs.append(x.detach().clone())
        return x.sum(dim=(1, 2)) * self.scale + 1


def test_forecast_feeds_its_own_predictions_back() -> None:
    model = RecordingModel()
    seed_window = torch.tensor([0.0, 1.0, 2.0])
    predictions = sine.forecast(model, seed_window, steps=5)

    window, forecast_by_hand = [0.0, 1.0, 2.0], []
    for shown in model.inputs:
        assert shown.shape == (1, 3, 1)
        assert shown.flatten().tolist() == window, "each step reads the window ending in the last predictions"
        next_point = sum(window) / 2 + 1
        forecast_by_hand.append(next_point)
        window = [*window[1:], next_point]
    assert len(model.inputs) == 5
    assert predictions.tolist() == forecast_by_hand
    assert predictions.device.type == "cpu" and not predictions.requires_grad


def test_forecast_accepts_a_window_with_a_feature_dimension() -> None:
    model = RecordingModel()
    flat = sine.forecast(model, torch.arange(4.0), steps=3)
    with_feature = sine.forecast(model, torch.arange(4.0).unsqueeze(-1), steps=3)
    assert torch.equal(flat, with_feature)


def test_test_loss_is_the_forecast_error_on_the_held_out_points(monkeypatch, tmp_path) -> None:
    # A ramp instead of the sine, so that every slice of the series holds different values.
    ramp = torch.arange(800, dtype=torch.float32) / 800
    offset = 0.25
    seeds = []

    def forecast_the_held_out_points_plus_offset(model, seed_window, steps):
        seeds.append((seed_window.clone(), steps))
        return ramp[760:800] + offset

    monkeypatch.setattr(sine, "make_series", lambda: ramp)
    monkeypatch.setattr(sine, "forecast", forecast_the_held_out_points_plus_offset)
    result = sine.train(sine.parse_args(tiny_args(tmp_path)))

    per_epoch = seeds[: len(result.history)]  # the forecasts of unseen signals come after training
    assert len(seeds) == len(result.history) + len(sine.UNSEEN_SIGNALS)
    for seed_window, steps in per_epoch:
        assert torch.equal(seed_window, ramp[760 - 8 : 760]), "the forecast starts from the last window"
        assert steps == 40
    for epoch in result.history:
        assert epoch["test_loss"] == pytest.approx(offset**2, rel=1e-6)


def test_test_loss_matches_the_recorded_forecast(tmp_path) -> None:
    result = sine.train(sine.parse_args(tiny_args(tmp_path)))
    held_out = sine.make_series()[760:]
    assert len(result.history) == 2 and sorted(result.forecasts) == [0, 1]
    for epoch in result.history:
        predicted = result.forecasts[epoch["epoch"]]
        assert predicted.shape == (40,) and predicted.device.type == "cpu"
        assert epoch["test_loss"] == pytest.approx(nn.functional.mse_loss(predicted, held_out).item())
    assert torch.equal(result.series, sine.make_series())


# ---------------------------------------------------------------------------------------------------
# Runs and outputs


def test_a_run_writes_its_figures_and_json(tmp_path, capsys) -> None:
    assert sine.main(tiny_args(tmp_path)) == 0
    out = tmp_path / "out"
    assert files_in(out) == [
        "sine_epoch0.png",
        "sine_epoch1.png",
        "sine_loss.png",
        "sine_wave.checkpoint.pt",
        "sine_wave.json",
        "sine_wave.pt",
    ]
    for name in ("sine_epoch0.png", "sine_epoch1.png", "sine_loss.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG")

    results = json.loads((out / "sine_wave.json").read_text())
    assert set(results) == {
        "config",
        "machine",
        "lstm_path",
        "epochs",
        "forecast",
        "generalization",
        "two_tap_recurrence",
    }
    assert list(results["generalization"]) == list(sine.UNSEEN_SIGNALS) == list(results["two_tap_recurrence"])
    assert results["lstm_path"] == "bptt" and results["config"]["variant"] == "standard"
    assert results["machine"]["torch"] == torch.__version__
    assert results["config"]["window"] == 8 and results["config"]["plot_epochs"] == [0, 1]
    assert [epoch["epoch"] for epoch in results["epochs"]] == [0, 1]
    for epoch in results["epochs"]:
        assert set(epoch) == {"epoch", "train_loss", "test_loss", "seconds"}
    assert len(results["forecast"]) == 40 and all(isinstance(value, float) for value in results["forecast"])

    printed = capsys.readouterr().out
    assert "LSTM: the standard cell, trained by bptt" in printed
    assert "| Epoch | Train Loss | Test Loss |" in printed
    assert "Epoch 0/2" not in printed, "--quiet prints no per-epoch lines"


def test_each_epoch_prints_a_line_unless_quiet(tmp_path, capsys) -> None:
    argv = [arg for arg in tiny_args(tmp_path) if arg != "--quiet"]
    assert sine.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    epoch_lines = [line for line in lines if line.startswith("Epoch ")]
    assert [line.split(" | ")[0] for line in epoch_lines] == ["Epoch 0/2", "Epoch 1/2"]
    assert all("Train Loss" in line and "Test Loss" in line for line in epoch_lines)


def test_the_json_forecast_is_that_of_the_last_epoch(tmp_path) -> None:
    args = sine.parse_args(tiny_args(tmp_path))
    result = sine.train(args)
    results = json.loads((args.out_dir / "sine_wave.json").read_text())
    assert results["forecast"] == result.forecasts[1].tolist()
    assert [epoch["test_loss"] for epoch in results["epochs"]] == [e["test_loss"] for e in result.history]


def test_the_same_seed_gives_a_bit_identical_run(tmp_path) -> None:
    def run(seed: str) -> sine.SineResult:
        return sine.train(sine.parse_args(tiny_args(tmp_path, "--seed", seed)))

    first, second, other = run("3"), run("3"), run("4")
    losses = [(epoch["train_loss"], epoch["test_loss"]) for epoch in first.history]
    assert losses == [(epoch["train_loss"], epoch["test_loss"]) for epoch in second.history]
    assert all(torch.equal(first.forecasts[e], second.forecasts[e]) for e in first.forecasts)
    assert losses != [(epoch["train_loss"], epoch["test_loss"]) for epoch in other.history]


def test_the_torch_cell_starts_from_the_same_weights(tmp_path, monkeypatch) -> None:
    initial_weights = {}

    def recording_build_model(cell, *args, **kwargs):
        model = build_model(cell, *args, **kwargs)
        lstm = model.lstm if cell == "torch" else model.lstm.to_torch()
        initial_weights[cell] = {name: value.clone() for name, value in lstm.state_dict().items()}
        initial_weights[cell]["head"] = torch.cat([p.detach().flatten() for p in model.head.parameters()])
        return model

    monkeypatch.setattr(experiment_utils, "build_model", recording_build_model)  # what model_of calls
    # A learning rate so small that the weights stay where they started: the forecasts compare the
    # two models at their starting point.
    settings = ("--epochs", "1", "--plot-epochs", "0", "--lr", "1e-12")
    custom = sine.train(sine.parse_args(tiny_args(tmp_path, "--cell", "custom", *settings)))
    torch_cell = sine.train(sine.parse_args(tiny_args(tmp_path, "--cell", "torch", *settings)))

    assert isinstance(torch_cell.model.lstm, nn.LSTM) and not isinstance(custom.model.lstm, nn.LSTM)
    assert initial_weights["custom"].keys() == initial_weights["torch"].keys()
    for name, value in initial_weights["custom"].items():
        torch.testing.assert_close(initial_weights["torch"][name], value, rtol=0, atol=0, msg=name)
    torch.testing.assert_close(torch_cell.forecasts[0], custom.forecasts[0], rtol=1e-5, atol=1e-6)
    assert torch_cell.history[0]["train_loss"] == pytest.approx(custom.history[0]["train_loss"], rel=1e-5)


def test_compile_wraps_the_training_steps_and_reports_their_start(tmp_path, monkeypatch, capsys) -> None:
    compiled_calls = []

    class Compiled(nn.Module):
        """Stands in for torch.compile's wrapper: counts the calls that go through it."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: Tensor) -> Tensor:
            compiled_calls.append(x.shape)
            return self.model(x)

    monkeypatch.setattr(sine, "compile_model", Compiled)
    result = sine.train(sine.parse_args(tiny_args(tmp_path, "--compile")))
    assert not isinstance(result.model, Compiled), "the result holds the plain model"
    assert len(compiled_calls) == 2 * 12, "every training step and nothing else runs compiled"
    assert sine.main(tiny_args(tmp_path, "--compile")) == 0
    results = json.loads((tmp_path / "out" / "sine_wave.json").read_text())
    assert results["compile_seconds"] > 0 and results["config"]["compile"] is True
    assert "torch.compile: the first training step took" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------
# Ctrl-C


def test_ctrl_c_keeps_the_finished_epochs(tmp_path, monkeypatch, capsys) -> None:
    forecast = sine.forecast
    calls = []

    def interrupted_in_the_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return forecast(*args, **kwargs)

    monkeypatch.setattr(sine, "forecast", interrupted_in_the_second_epoch)
    assert sine.main(tiny_args(tmp_path)) == INTERRUPTED_EXIT_STATUS

    captured = capsys.readouterr()
    assert "Interrupted" in captured.err and len(captured.err.strip().splitlines()) == 1
    assert "| 0 |" in captured.out and "| 1 |" not in captured.out
    out = tmp_path / "out"
    assert files_in(out) == [
        "sine_epoch0.png",
        "sine_loss.png",
        "sine_wave.checkpoint.pt",
        "sine_wave.json",
        "sine_wave.pt",
    ]
    assert [epoch["epoch"] for epoch in json.loads((out / "sine_wave.json").read_text())["epochs"]] == [0]


# The script stopped by a signal from outside: tests/test_runs.py sends SIGTERM to it, and
# tests/test_binary_counting.py Ctrl-C to the other script; both take the one shared path.


# ---------------------------------------------------------------------------------------------------
# The command line


def test_the_defaults_are_the_published_settings() -> None:
    args = sine.parse_args([])
    assert (args.window, args.hidden_size, args.epochs, args.lr, args.batch_size) == (40, 50, 10, 0.01, 1)
    assert args.plot_epochs == [0, 2, 9] and args.seed == 0 and args.cell == "custom"
    assert args.out_dir == Path("runs/sine_wave"), "trial runs stay outside the tracked files"


def test_a_shorter_run_plots_the_published_epochs_inside_it() -> None:
    assert sine.parse_args(["--epochs", "3"]).plot_epochs == [0, 2]
    assert sine.parse_args(["--epochs", "3", "--plot-epochs"]).plot_epochs == []


BAD_ARGUMENTS = [
    ["--epochs", "0"],
    ["--epochs", "-2"],
    ["--epochs", "two"],
    ["--window", "0"],
    ["--window", "760"],
    ["--hidden-size", "0"],
    ["--batch-size", "0"],
    ["--lr", "0"],
    ["--lr", "-0.01"],
    ["--lr", "nan"],
    ["--lr", "inf"],
    ["--plot-epochs", "10"],
    ["--epochs", "3", "--plot-epochs", "0", "3"],
    ["--plot-epochs", "-1"],
    ["--seed", "-1"],
    ["--cell", "gru"],
    ["--forget-bias", "1e39"],  # finite, but beyond float32
    ["--device", "tpu"],
    *([["--device", "cuda"]] if not torch.cuda.is_available() else []),
    *([["--device", "mps"]] if not torch.backends.mps.is_available() else []),
]


@pytest.mark.parametrize("bad", BAD_ARGUMENTS, ids=" ".join)
def test_bad_arguments_are_usage_errors_before_any_file_is_written(bad, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        sine.main([*bad, "--out-dir", str(out)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    option = [arg for arg in bad if arg.startswith("--")][-1]
    assert "error:" in error and option in error
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------
# The published settings


@pytest.mark.slow
def test_the_published_settings_forecast_the_held_out_points(tmp_path) -> None:
    out = tmp_path / "out"
    assert sine.main(["--quiet", "--out-dir", str(out)]) == 0
    results = json.loads((out / "sine_wave.json").read_text())
    assert len(results["epochs"]) == 10
    assert results["epochs"][-1]["test_loss"] <= 0.01
    assert files_in(out) == [
        "sine_epoch0.png",
        "sine_epoch2.png",
        "sine_epoch9.png",
        "sine_loss.png",
        "sine_wave.checkpoint.pt",
        "sine_wave.json",
        "sine_wave.pt",
    ]


@pytest.mark.parametrize(
    ("variant", "path"), [("peephole", "bptt, local derivatives by autograd"), ("standard", "bptt")]
)
def test_the_variant_and_forget_bias_build_the_model_and_are_recorded(tmp_path, variant, path) -> None:
    args = sine.parse_args(tiny_args(tmp_path, "--variant", variant, "--forget-bias", "1"))
    result = sine.train(args)
    assert type(result.model.lstm.cells[0]) is VARIANTS[variant]
    results = json.loads((args.out_dir / "sine_wave.json").read_text())
    assert (results["config"]["variant"], results["config"]["forget_bias"], results["lstm_path"]) == (
        variant,
        1.0,
        path,
    )
    assert torch.equal(
        load_model(args.out_dir / "sine_wave.pt").lstm.cells[0].b_f, result.model.lstm.cells[0].b_f
    )


@settings(max_examples=30, deadline=None)
@given(
    # No subnormal floats: a library built with -ffast-math (older Inductor kernels) may have switched
    # them off for the whole process, and hypothesis then refuses to draw them.
    amplitude=st.floats(0.1, 3, allow_subnormal=False),
    period=st.floats(8, 100, allow_subnormal=False),
    phase=st.floats(-math.pi, math.pi, allow_subnormal=False),
)
def test_the_two_tap_recurrence_continues_any_pure_sine_of_its_period(amplitude, period, phase) -> None:
    signal = sine.make_signal(amplitude, period, phase, 80)
    forecast = sine.two_tap_forecast(signal[:40], 40, period=period)
    torch.testing.assert_close(forecast, signal[40:], atol=1e-4 * amplitude, rtol=0)


def test_generalization_scores_each_unseen_signal_against_its_truth(monkeypatch) -> None:
    def perfect_forecast(model, seed_window, steps):  # knows every signal: the forecast is the truth
        for amplitude, period, phase, _ in sine.UNSEEN_SIGNALS.values():
            signal = sine.make_signal(amplitude, period, phase, len(seed_window) + steps)
            if torch.allclose(signal[: len(seed_window)], seed_window.cpu(), atol=0.3):
                return signal[len(seed_window) :]
        raise AssertionError("an unknown signal")

    monkeypatch.setattr(sine, "forecast", perfect_forecast)
    lstm, recurrence = sine.measure_generalization(nn.Linear(1, 1), window=40, seed=0)
    assert list(lstm) == list(sine.UNSEEN_SIGNALS)
    assert all(mse == 0 for mse in lstm.values())
    assert recurrence["phase +1 rad"] < 1e-10 and recurrence["amplitude 0.5"] < 1e-10
    assert recurrence["period 30"] > 0.1  # tuned to the training period, it cannot follow another


def test_the_generalization_figure_draws_the_measured_windows_and_forecasts() -> None:
    torch.manual_seed(0)
    model = build_model("custom", 4, torch.device("cpu"))
    figure = sine.generalization_figure(model, window=40, seed=3)
    shown = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in shown] == list(sine.UNSEEN_SIGNALS)
    windows = sine.unseen_windows(40, 3)
    for ax, (seed_window, truth) in zip(shown, windows.values(), strict=True):
        lines = {line.get_label(): line.get_ydata() for line in ax.lines}
        np.testing.assert_array_equal(lines["seed window"], seed_window.numpy())
        np.testing.assert_array_equal(lines["truth"], truth.numpy())
        np.testing.assert_allclose(lines["LSTM"], sine.forecast(model, seed_window, sine.HELD_OUT).numpy())
    # The panels' seed windows are measure_generalization's: the same noise, in the same order.
    lstm, _ = sine.measure_generalization(model, window=40, seed=3)
    noisy = "noisy seed window (σ 0.05)"
    seed_window, truth = windows[noisy]
    expected = nn.functional.mse_loss(sine.forecast(model, seed_window, sine.HELD_OUT), truth)
    assert lstm[noisy] == expected.item()
