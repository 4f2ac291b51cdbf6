"""Tests of binary_counting.py: data, scores, the files a run leaves, determinism, Ctrl-C, the CLI."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from processes import interrupt_at_call, wait_until
from torch import nn

import binary_counting
import experiment_utils
from binary_counting import (
    FIGURE_NAME,
    JSON_NAME,
    evaluate,
    length_generalization,
    main,
    make_dataset,
    parse_args,
    train,
)
from experiment_utils import build_model, config_of, load_model
from lstm_cell import VARIANTS

REPOSITORY = Path(__file__).resolve().parent.parent
EPOCH_KEYS = {"epoch", "train_loss", "train_accuracy", "valid_loss", "valid_accuracy", "seconds"}
# A run small enough for a fast test: two epochs of 13 batches.
SMALL = [
    "--epochs",
    "2",
    "--train-samples",
    "200",
    "--valid-samples",
    "100",
    "--lengths",
    "5",
    "10",
    "--quiet",
    "--no-figures",  # drawing the figure takes about as long as these small epochs; with_figures() draws it
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Train on one CPU thread: these models are too small to gain from more, and on a busy machine
    the threads of one matmul wait on each other and make the tests many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_script(*argv: str, **options) -> subprocess.Popen:
    """binary_counting.py as a user starts it, on one thread like the tests in this process."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "binary_counting.py", *argv]
    return subprocess.Popen(
        command, cwd=REPOSITORY, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def small_args(out_dir: Path, *extra: str) -> list[str]:
    return [*SMALL, "--out-dir", str(out_dir), *extra]


def with_figures(argv: list[str]) -> list[str]:
    return [arg for arg in argv if arg != "--no-figures"]


def without_seconds(history: list[dict]) -> list[dict]:
    """The epochs without their wall time, the one field that differs between identical runs."""
    return [{key: value for key, value in epoch.items() if key != "seconds"} for epoch in history]


def left_over_partials(out_dir: Path) -> list[Path]:
    return list(out_dir.glob("*.partial")) + list(out_dir.glob(".*.partial"))


# ---------------------------------------------------------------------------------------------------
# Data and scores


@settings(max_examples=25, deadline=None)
@given(num_samples=st.integers(1, 40), seq_len=st.integers(1, 40), seed=st.integers(0, 2**31))
def test_dataset_holds_bits_and_their_count(num_samples: int, seq_len: int, seed: int) -> None:
    dataset = make_dataset(num_samples, seq_len, torch.Generator().manual_seed(seed))
    x, y = dataset.tensors
    assert x.shape == (num_samples, seq_len, 1) and y.shape == (num_samples,)
    assert x.dtype == y.dtype == torch.float32
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(y, x.sum(dim=(1, 2)))
    again = make_dataset(num_samples, seq_len, torch.Generator().manual_seed(seed))
    assert torch.equal(again.tensors[0], x)


def test_dataset_bits_are_ones_half_the_time() -> None:
    x, y = make_dataset(5000, 20, torch.Generator().manual_seed(0)).tensors
    assert x.mean().item() == pytest.approx(0.5, abs=0.01)
    assert y.min().item() >= 0 and y.max().item() <= 20
    assert len(y.unique()) > 10  # counts spread around 10, not one value


class ShiftedCounter(nn.Module):
    """Predicts the true count plus a fixed shift."""

    def __init__(self, shift: float) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.tensor(shift))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=(1, 2)) + self.shift


@pytest.mark.parametrize(
    ("shift", "accuracy"), [(0.0, 1.0), (0.25, 1.0), (-0.4, 1.0), (0.6, 0.0), (-1.0, 0.0)]
)
def test_evaluate_gives_mse_and_share_of_rounded_hits(shift: float, accuracy: float) -> None:
    dataset = make_dataset(50, 12, torch.Generator().manual_seed(1))
    loss, measured_accuracy = evaluate(ShiftedCounter(shift), dataset, batch_size=7)
    assert loss == pytest.approx(shift**2, abs=1e-6)
    assert measured_accuracy == accuracy


def test_length_generalization_scores_every_length() -> None:
    torch.manual_seed(0)
    model = build_model("custom", 4, torch.device("cpu"))
    results = length_generalization(model, [3, 7, 30], 20, torch.Generator().manual_seed(0))
    assert list(results) == ["3", "7", "30"]
    for length, scores in results.items():
        assert set(scores) == {"accuracy", "loss", "mean_prediction_by_count"}
        assert 0 <= scores["accuracy"] <= 1 and scores["loss"] >= 0
        assert all(0 <= int(count) <= int(length) for count in scores["mean_prediction_by_count"])


def test_length_generalization_shows_how_predictions_err() -> None:
    results = length_generalization(ShiftedCounter(0.25), [3, 50], 40, torch.Generator().manual_seed(0))
    for scores in results.values():
        assert scores["accuracy"] == 1.0 and scores["loss"] == pytest.approx(0.0625)
        for count, mean_prediction in scores["mean_prediction_by_count"].items():
            assert mean_prediction == pytest.approx(int(count) + 0.25)


# ---------------------------------------------------------------------------------------------------
# A run: its files, its printout, determinism and the torch cell


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> tuple[Path, list[str], str]:
    """main() on the small settings: (out_dir, argv, stdout)."""
    out_dir = tmp_path_factory.mktemp("small_run")
    argv = with_figures(small_args(out_dir))
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(argv)
    assert status == 0
    return out_dir, argv, stdout.getvalue()


def test_run_writes_figure_and_json(small_run) -> None:
    out_dir, argv, _ = small_run
    assert (out_dir / FIGURE_NAME).read_bytes().startswith(b"\x89PNG")
    results = json.loads((out_dir / JSON_NAME).read_text())
    assert list(results) == [
        "config",
        "machine",
        "lstm_path",
        "epochs",
        "length_generalization",
    ]  # compile_seconds only with --compile
    assert results["lstm_path"] == "bptt"
    assert results["machine"]["torch"] == torch.__version__  # what produced the numbers
    assert results["config"] == config_of(parse_args(argv))
    assert [epoch["epoch"] for epoch in results["epochs"]] == [0, 1]
    for epoch in results["epochs"]:
        assert set(epoch) == EPOCH_KEYS
        assert 0 <= epoch["train_accuracy"] <= 1 and 0 <= epoch["valid_accuracy"] <= 1
        assert epoch["train_loss"] > 0 and epoch["valid_loss"] > 0 and epoch["seconds"] > 0
    assert list(results["length_generalization"]) == ["5", "10"]
    assert not left_over_partials(out_dir)


def test_no_figures_draws_none_and_changes_nothing_else(small_run, tmp_path: Path) -> None:
    out_dir = small_run[0]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(small_args(tmp_path)) == 0
    assert not (tmp_path / FIGURE_NAME).exists() and (tmp_path / binary_counting.WEIGHTS_NAME).exists()
    assert "Wrote" in stdout.getvalue() and FIGURE_NAME not in stdout.getvalue()
    plain, drawn = (json.loads((folder / JSON_NAME).read_text()) for folder in (tmp_path, out_dir))
    assert plain["config"] == {**drawn["config"], "out_dir": str(tmp_path)}  # no_figures is no setting
    assert without_seconds(plain["epochs"]) == without_seconds(drawn["epochs"])


def test_run_prints_the_published_table(small_run) -> None:
    _, _, stdout = small_run
    assert "| Epoch | Train Loss | Train Accuracy | Valid Loss | Valid Accuracy |" in stdout
    rows = [line for line in stdout.splitlines() if line.startswith(("| 0 |", "| 1 |"))]
    assert len(rows) == 2 and all(line.count("%") == 2 for line in rows)
    assert "| Sequence Length | Loss | Accuracy |" in stdout
    assert "Epoch 0/2" not in stdout  # --quiet: no per-epoch lines
    assert "LSTM: the standard cell, trained by bptt" in stdout


def test_train_appends_each_epoch_to_the_given_history(tmp_path: Path) -> None:
    history: list[dict] = []
    result = train(parse_args(small_args(tmp_path)), history)
    assert result.history is history and len(history) == 2
    assert result.predictions_before.shape == result.predictions_after.shape == (100,)
    assert result.predictions_before.device.type == "cpu"
    assert not torch.equal(result.predictions_before, result.predictions_after)
    assert len(result.valid_dataset) == 100 and result.compile_seconds is None


def test_same_seed_gives_identical_epochs_and_another_seed_does_not(tmp_path: Path) -> None:
    first = train(parse_args(small_args(tmp_path / "first")))
    second = train(parse_args(small_args(tmp_path / "second")))
    other = train(parse_args(small_args(tmp_path / "other", "--seed", "1")))
    assert without_seconds(first.history) == without_seconds(second.history)
    assert torch.equal(first.predictions_after, second.predictions_after)
    assert first.length_generalization == second.length_generalization
    assert without_seconds(first.history) != without_seconds(other.history)


def test_torch_cell_starts_from_the_same_weights(tmp_path: Path) -> None:
    custom = train(parse_args(small_args(tmp_path / "custom")))
    torch_cell = train(parse_args(small_args(tmp_path / "torch", "--cell", "torch")))
    assert isinstance(torch_cell.model.lstm, nn.LSTM)
    assert not isinstance(custom.model.lstm, nn.LSTM)
    torch.testing.assert_close(torch_cell.predictions_before, custom.predictions_before, rtol=0, atol=1e-5)

    # Same start, same batches, the same trainable numbers: the two train along one path up to rounding.
    def trainable(model: nn.Module) -> int:
        return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)

    assert trainable(torch_cell.model) == trainable(custom.model)
    for ours, theirs in zip(custom.history, torch_cell.history, strict=True):
        assert theirs["train_loss"] == pytest.approx(ours["train_loss"], rel=1e-4)
        assert theirs["valid_loss"] == pytest.approx(ours["valid_loss"], rel=1e-4)
    torch.testing.assert_close(torch_cell.predictions_after, custom.predictions_after, rtol=0, atol=1e-3)


def test_lengths_are_sorted_without_repeats() -> None:
    assert parse_args(["--lengths", "40", "10", "40"]).lengths == [10, 40]


# ---------------------------------------------------------------------------------------------------
# Ctrl-C: the finished epochs stay, in whole files


def test_interrupt_in_second_epoch_keeps_the_first(tmp_path: Path, monkeypatch, capsys) -> None:
    real_progress = experiment_utils.progress

    def progress_interrupted_in_epoch_1(iterable, *, quiet, description, total=None):
        for step, batch in enumerate(real_progress(iterable, quiet=quiet, description=description)):
            if description.startswith("Epoch 1/") and step == 3:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(experiment_utils, "progress", progress_interrupted_in_epoch_1)  # the shared loop's
    status = main(with_figures(small_args(tmp_path, "--epochs", "5")))
    captured = capsys.readouterr()
    assert status == 130
    assert captured.err.strip().splitlines() == ["Interrupted: stopped after 1 finished epoch(s)."]
    assert "| 0 |" in captured.out and "| 1 |" not in captured.out
    results = json.loads((tmp_path / JSON_NAME).read_text())
    assert [epoch["epoch"] for epoch in results["epochs"]] == [0]
    assert results["length_generalization"] == {}
    assert (tmp_path / FIGURE_NAME).exists() and not left_over_partials(tmp_path)


def test_ctrl_c_stops_the_script_cleanly(tmp_path: Path) -> None:
    process = run_script(*small_args(tmp_path, "--epochs", "10000"))
    json_path = tmp_path / JSON_NAME
    try:
        wait_until(
            process, lambda: json_path.exists() and json.loads(json_path.read_text())["epochs"], "epoch"
        )
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    assert "Traceback" not in stderr
    assert "Interrupted: stopped after" in stderr
    assert "| Epoch | Train Loss |" in stdout
    epochs = json.loads(json_path.read_text())["epochs"]
    assert len(epochs) >= 1 and [epoch["epoch"] for epoch in epochs] == list(range(len(epochs)))
    assert not left_over_partials(tmp_path)


# ---------------------------------------------------------------------------------------------------
# Bad command lines: usage errors, status 2, nothing written

BAD_ARGUMENTS = [
    ["--epochs", "0"],
    ["--epochs", "-1"],
    ["--epochs", "2.5"],
    ["--batch-size", "abc"],
    ["--batch-size", "0"],
    ["--lr", "0"],
    ["--lr", "-0.001"],
    ["--lr", "nan"],
    ["--lr", "inf"],
    ["--seq-len", "0"],
    ["--train-samples", "-5"],
    ["--valid-samples", "0"],
    ["--hidden-size", "1.5"],
    ["--lengths", "0"],
    ["--lengths", "10", "-20"],
    ["--lengths"],
    ["--seed", "-1"],
    ["--cell", "foo"],
    ["--variant", "gru"],
    ["--forget-bias", "one"],
    ["--forget-bias", "inf"],
    ["--forget-bias", "1e39"],  # finite, but beyond float32
    ["--cell", "torch", "--variant", "cifg"],
    ["--variant", "nfg", "--forget-bias", "1"],
    ["--device", "tpu"],
    ["--no-such-option"],
    ["--train-lengths", "5", "2"],
    ["--train-lengths", "0", "3"],
    ["--train-lengths", "3"],
    ["--seq-len", "10", "--train-lengths", "1", "5"],
    ["--target", "middle"],
    ["--max-test-length", "0"],
    ["--compile", "--target", "every-step"],
    ["--readout", "n"],
    ["--readout", "c", "--cell", "torch"],
    ["--readout", "c", "--compile"],
    ["--recurrent-l1", "-0.1"],
    ["--recurrent-l1", "nan"],
    ["--recurrent-l1", "inf"],
    ["--recurrent-l1", "1e30"],
]


@pytest.mark.parametrize("bad", BAD_ARGUMENTS, ids=" ".join)
def test_bad_value_is_a_usage_error(bad: list[str], tmp_path: Path, capsys) -> None:
    out_dir = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["--out-dir", str(out_dir), *bad])
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err
    assert not out_dir.exists()


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_missing_device_is_a_usage_error(device: str, tmp_path: Path, capsys) -> None:
    present = torch.cuda.is_available() if device == "cuda" else torch.backends.mps.is_available()
    if present:
        pytest.skip(f"this machine has {device}")
    out_dir = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["--out-dir", str(out_dir), "--device", device])
    assert exit_info.value.code == 2
    assert "this machine has none" in capsys.readouterr().err
    assert not out_dir.exists()


def test_script_refuses_bad_value_with_usage(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    process = run_script("--epochs", "0", "--out-dir", str(out_dir))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2
    assert stderr.startswith("usage:") and "--epochs" in stderr
    assert "Traceback" not in stderr and not out_dir.exists()


# ---------------------------------------------------------------------------------------------------
# The published settings


@pytest.mark.slow
def test_published_settings_reach_the_published_accuracy(tmp_path: Path) -> None:
    assert main(["--out-dir", str(tmp_path), "--quiet", "--no-figures"]) == 0
    results = json.loads((tmp_path / JSON_NAME).read_text())
    epochs = results["epochs"]
    assert len(epochs) == 20
    assert epochs[10]["valid_accuracy"] >= 0.99
    assert epochs[-1]["valid_accuracy"] >= 0.999
    assert list(results["length_generalization"]) == ["10", "20", "40"]
    assert results["length_generalization"]["20"]["accuracy"] >= 0.99


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compile_reports_the_compile_time(tmp_path: Path, capsys) -> None:
    # 64 samples in batches of 16: every batch has one shape, so only the first step compiles.
    argv = with_figures(small_args(tmp_path, "--epochs", "1", "--train-samples", "64", "--compile"))
    assert main(argv) == 0
    assert "torch.compile: the first training step took" in capsys.readouterr().out
    results = json.loads((tmp_path / JSON_NAME).read_text())
    assert results["compile_seconds"] > 0 and results["config"]["compile"] is True
    assert results["compile_seconds"] < results["epochs"][0]["seconds"]
    assert (tmp_path / FIGURE_NAME).exists()


def test_comparison_puts_the_published_rows_beside_the_run() -> None:
    history = [
        {"epoch": epoch, "train_loss": 1.5, "train_accuracy": 0.5, "valid_loss": 0.25, "valid_accuracy": 0.75}
        for epoch in range(12)
    ]
    lines = binary_counting.comparison_table(history).splitlines()
    assert len(lines) == 2 + 3  # header, rule, and the published epochs 0, 5 and 10 that the run has
    assert lines[2] == "| 0 | 23.02 / 1.50 | 10.06% / 50.00% | 4.82 / 0.25 | 16.70% / 75.00% |"
    assert lines[4].startswith("| 10 | 0.006 / 1.50 | 99.88% / 50.00% |")


def test_only_a_run_with_the_published_settings_is_compared() -> None:
    assert binary_counting.uses_published_settings(parse_args(["--seed", "3", "--cell", "torch"]))
    assert not binary_counting.uses_published_settings(parse_args(["--epochs", "5"]))


def test_a_variant_trains_and_is_recorded_with_its_path(tmp_path: Path) -> None:
    # Batches of 4 × hidden 20: small enough for the hand-written backward (lstm_cell.BPTT_LARGEST_STATE),
    # as is the default batch of 16 (a state of 320); 410 × 20 = 8200 is beyond it, and trains by autograd.
    args = parse_args(small_args(tmp_path, "--variant", "noaf", "--forget-bias", "1", "--batch-size", "4"))
    result = train(args)
    assert type(result.model.lstm.cells[0]) is VARIANTS["noaf"]
    results = json.loads((tmp_path / JSON_NAME).read_text())
    assert results["config"]["variant"] == "noaf" and results["config"]["forget_bias"] == 1.0
    assert results["lstm_path"] == "bptt, local derivatives by autograd"
    assert result.model.lstm.training_path(16) == "bptt, local derivatives by autograd"
    assert result.model.lstm.training_path(410) == "autograd"
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


# ---------------------------------------------------------------------------------------------------
# Mixed lengths, the every-step target and the longest counted length


def exact_counter(max_count_scale: float = 1.0) -> nn.Module:
    """A model whose weights are set by hand to count exactly: one noaf unit (h = o ⊙ c) whose gates
    are saturated (i = f = o = 1 in float32) and whose candidate is g = tanh(40 x), 1 for a one and
    0 for a zero; so c and h add 1 per one, and the head reads h × 1."""
    model = build_model("custom", 1, torch.device("cpu"), variant="noaf")
    cell = model.lstm.cells[0]
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        cell.b_i.fill_(40.0)
        cell.b_f.fill_(40.0)
        cell.b_o.fill_(40.0)
        cell.W_ig.fill_(40.0)
        model.head.weight.fill_(max_count_scale)
    return model.eval()


class FixedSteps(nn.Module):
    """A stand-in LSTM whose output at every step is given: (output, state) like nn.LSTM."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__()
        self.output = output

    def forward(self, x: torch.Tensor):
        return self.output, None


class GivenPredictions(nn.Module):
    """A model whose prediction after every step is the tensor it was given (batch, seq_len)."""

    def __init__(self, predictions: torch.Tensor) -> None:
        super().__init__()
        self.lstm = FixedSteps(predictions.unsqueeze(-1))
        self.head = nn.Linear(1, 1)
        with torch.no_grad():
            self.head.weight.fill_(1.0)
            self.head.bias.zero_()

    def states(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]


def test_mixed_dataset_pads_each_sequence_behind_its_length() -> None:
    x, y, lengths = binary_counting.make_mixed_dataset(300, 3, 9, torch.Generator().manual_seed(0)).tensors
    assert x.shape == (300, 9, 1) and y.shape == lengths.shape == (300,)
    assert set(lengths.tolist()) == set(range(3, 10))  # every length occurs
    for bits, count, length in zip(x, y, lengths, strict=True):
        assert bits[length:].abs().sum() == 0 and bits[:length].sum() == count


@pytest.mark.parametrize("bad", [(0, 3), (4, 3)])
def test_mixed_dataset_refuses_impossible_lengths(bad) -> None:
    with pytest.raises(ValueError, match="shortest"):
        binary_counting.make_mixed_dataset(5, *bad, torch.Generator())


def test_final_prediction_of_a_padded_sequence_is_that_of_the_sequence_alone() -> None:
    torch.manual_seed(0)
    model = build_model("custom", 5, torch.device("cpu"))
    x, _, lengths = binary_counting.make_mixed_dataset(6, 1, 8, torch.Generator().manual_seed(1)).tensors
    with torch.no_grad():
        padded = binary_counting.final_predictions(model, x, lengths)
        alone = torch.stack([model(bits[None, :length])[0] for bits, length in zip(x, lengths, strict=True)])
    torch.testing.assert_close(padded, alone)


def test_running_predictions_are_the_predictions_for_every_prefix() -> None:
    torch.manual_seed(0)
    model = build_model("custom", 5, torch.device("cpu"))
    x = make_dataset(4, 7, torch.Generator().manual_seed(2)).tensors[0]
    with torch.no_grad():
        running = binary_counting.running_predictions(model, x)
        prefixes = torch.stack([model(x[:, :n]) for n in range(1, 8)], dim=1)
    torch.testing.assert_close(running, prefixes)


def test_every_step_loss_and_accuracy_on_a_hand_made_example() -> None:
    x = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]).unsqueeze(-1)  # running counts 1 1 2 and 1 2 (2)
    lengths = torch.tensor([3, 2])  # the second sequence's last step is padding
    predictions = torch.tensor([[1.0, 1.2, 2.7], [0.6, 2.0, 9.0]])  # 9.0: at the padding, not scored
    counts = torch.tensor([2.0, 2.0])
    loss, accuracy = binary_counting.batch_loss(
        GivenPredictions(predictions), x, counts, lengths, "every-step"
    )
    # Errors at the five scored steps: 0, 0.2, 0.7, -0.4, 0; 2.7 rounds to 3, not 2.
    assert loss.item() == pytest.approx((0.2**2 + 0.7**2 + 0.4**2) / 5)
    assert accuracy.item() == pytest.approx(4 / 5)
    # Without lengths every step is scored, the padding's 9.0 against 2 too.
    loss, accuracy = binary_counting.batch_loss(GivenPredictions(predictions), x, counts, None, "every-step")
    assert loss.item() == pytest.approx((0.2**2 + 0.7**2 + 0.4**2 + 7.0**2) / 6)
    assert accuracy.item() == pytest.approx(4 / 6)
    # The final target reads each sequence at its own last step: 2.7 for 2, 2.0 for 2.
    loss, accuracy = binary_counting.batch_loss(GivenPredictions(predictions), x, counts, lengths, "final")
    assert loss.item() == pytest.approx(0.7**2 / 2) and accuracy.item() == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="target"):
        binary_counting.batch_loss(GivenPredictions(predictions), x, counts, lengths, "all")


def test_longest_counted_length_is_where_the_first_length_fails() -> None:
    longest = binary_counting.longest_counted_length
    assert longest([1.0, 0.99, 0.995, 0.5, 1.0]) == 3  # 495 of 500 right still counts
    assert longest([0.989, 1.0]) == 0
    assert longest([1.0] * 7) == 7
    assert longest(torch.tensor([1.0, 0.99, 0.98])) == 2  # float32 0.99 counts too


def test_scan_of_a_hand_built_counter_reaches_the_limit_and_of_an_untrained_model_is_zero() -> None:
    generator = torch.Generator().manual_seed(0)
    accuracy = binary_counting.counting_accuracy_by_length(exact_counter(), 200, generator, num_samples=100)
    assert accuracy.shape == (200,) and torch.all(accuracy == 1.0)
    assert binary_counting.longest_counted_length(accuracy) == 200
    # The same counter, its head off by 1 %, counts until the error reaches half a count (about 50 ones).
    off = binary_counting.counting_accuracy_by_length(exact_counter(1.01), 200, generator, num_samples=100)
    assert 60 < binary_counting.longest_counted_length(off) < 140
    torch.manual_seed(0)
    untrained = build_model("custom", 20, torch.device("cpu"))
    accuracy = binary_counting.counting_accuracy_by_length(untrained, 200, generator)
    assert binary_counting.longest_counted_length(accuracy) == 0


def test_mixed_lengths_and_every_step_target_train_and_record_the_scan(tmp_path: Path) -> None:
    options = ("--train-lengths", "2", "8", "--target", "every-step", "--max-test-length", "30")
    result = train(parse_args(small_args(tmp_path, *options)))
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert len(result.valid_dataset.tensors) == 3 and result.predictions_after.shape == (100,)
    results = json.loads((tmp_path / JSON_NAME).read_text())
    assert results["config"]["train_lengths"] == [2, 8] and results["config"]["seq_len"] == 8
    assert results["config"]["target"] == "every-step" and results["config"]["max_test_length"] == 30
    assert results["longest_counted_length"] == result.longest_counted_length
    assert len(results["accuracy_by_length"]) == 30
    assert results["longest_counted_length"] == binary_counting.longest_counted_length(
        results["accuracy_by_length"]
    )


@pytest.mark.parametrize(
    "options",
    [
        ("--train-lengths", "1", "6", "--max-test-length", "20"),
        ("--target", "every-step", "--variant", "noaf", "--max-test-length", "20"),
    ],
    ids=" ".join,
)
def test_new_options_are_deterministic(options: tuple[str, ...], tmp_path: Path) -> None:
    first = train(parse_args(small_args(tmp_path / "first", *options, "--epochs", "1")))
    second = train(parse_args(small_args(tmp_path / "second", *options, "--epochs", "1")))
    assert without_seconds(first.history) == without_seconds(second.history)
    assert first.accuracy_by_length == second.accuracy_by_length
    assert torch.equal(first.predictions_after, second.predictions_after)


def test_the_scan_changes_nothing_the_run_without_it_computes(tmp_path: Path) -> None:
    plain = train(parse_args(small_args(tmp_path / "plain", "--epochs", "1")))
    scanned = train(parse_args(small_args(tmp_path / "scanned", "--epochs", "1", "--max-test-length", "15")))
    assert without_seconds(plain.history) == without_seconds(scanned.history)
    assert plain.length_generalization == scanned.length_generalization
    assert plain.longest_counted_length is None and scanned.longest_counted_length is not None


def test_new_options_are_not_the_published_settings() -> None:
    assert not binary_counting.uses_published_settings(parse_args(["--target", "every-step"]))
    assert not binary_counting.uses_published_settings(parse_args(["--train-lengths", "1", "20"]))
    assert binary_counting.uses_published_settings(parse_args(["--max-test-length", "200"]))


# ---------------------------------------------------------------------------------------------------
# --readout c and --recurrent-l1


def cell_states_by_stepping(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(batch, seq_len, hidden): c after every step, from calling the model's (one-layer) cell by hand."""
    cell = model.lstm.cells[0]
    h = c = torch.zeros(len(x), cell.hidden_size)
    states = []
    for t in range(x.shape[1]):
        h, c = cell(x[:, t], (h, c))
        states.append(c)
    return torch.stack(states, dim=1)


@pytest.mark.parametrize("variant", ["standard", "nfg"])
def test_readout_c_heads_read_the_cell_state_at_every_step(variant: str) -> None:
    torch.manual_seed(0)
    model = build_model("custom", 3, torch.device("cpu"), variant=variant, readout="c")
    x = make_dataset(4, 9, torch.Generator().manual_seed(3)).tensors[0]
    with torch.no_grad():
        by_hand = model.head(cell_states_by_stepping(model, x)).squeeze(-1)
        torch.testing.assert_close(binary_counting.running_predictions(model, x), by_hand)
        torch.testing.assert_close(model(x), by_hand[:, -1])
        # The same weights read through h predict something else: the readout is really c.
        model.readout = "h"
        assert not torch.allclose(binary_counting.running_predictions(model, x), by_hand)
    x, _, lengths = binary_counting.make_mixed_dataset(6, 1, 8, torch.Generator().manual_seed(1)).tensors
    model.readout = "c"
    with torch.no_grad():
        padded = binary_counting.final_predictions(model, x, lengths)
        alone = torch.stack([model(bits[None, :length])[0] for bits, length in zip(x, lengths, strict=True)])
    torch.testing.assert_close(padded, alone)


def test_readout_c_trains_through_c_and_is_recorded_and_rebuilt(tmp_path: Path) -> None:
    options = ("--readout", "c", "--variant", "nfg", "--hidden-size", "1", "--target", "every-step")
    result = train(parse_args(small_args(tmp_path, *options, "--lr", "1e-2")))
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    results = json.loads((tmp_path / JSON_NAME).read_text())
    assert results["config"]["readout"] == "c" and results["lstm_path"] == "autograd"
    rebuilt = load_model(tmp_path / binary_counting.WEIGHTS_NAME)
    assert rebuilt.readout == "c"
    predictions = binary_counting.predict(rebuilt, result.valid_dataset, 50)
    assert torch.equal(predictions, result.predictions_after)


@pytest.mark.parametrize("cell", ["custom", "torch"])
def test_recurrent_penalty_is_lambda_times_the_recurrent_weights(cell: str) -> None:
    torch.manual_seed(0)
    model = build_model(cell, 4, torch.device("cpu"))
    names = ("weight_hh_l0",) if cell == "torch" else ("W_hi", "W_hf", "W_hg", "W_ho")
    recurrent = [parameter for name, parameter in model.lstm.named_parameters() if name.endswith(names)]
    assert len(recurrent) == len(names)
    expected = 0.3 * sum(parameter.abs().sum() for parameter in recurrent)
    torch.testing.assert_close(binary_counting.recurrent_penalty(model, 0.3), expected)
    assert binary_counting.recurrent_penalty(model, 0.0).item() == 0.0
    # Its gradient is λ · sign(W_h*) on the recurrent weights and nothing on every other parameter.
    x, counts = make_dataset(8, 6, torch.Generator().manual_seed(0)).tensors
    gradients = {}
    for weight in (0.0, 0.3):
        model.zero_grad()
        loss, _ = binary_counting.batch_loss(model, x, counts, None, "final")
        (loss + binary_counting.recurrent_penalty(model, weight)).backward()
        gradients[weight] = {
            name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None
        }
    for name, parameter in model.named_parameters():
        if parameter.grad is None:
            continue
        extra = (
            0.3 * parameter.sign() if any(parameter is p for p in recurrent) else torch.zeros_like(parameter)
        )
        torch.testing.assert_close(gradients[0.3][name] - gradients[0.0][name], extra.detach())


def test_recurrent_l1_changes_the_training_and_is_reported_apart(tmp_path: Path) -> None:
    plain = train(parse_args(small_args(tmp_path / "plain", "--epochs", "1")))
    penalized = train(parse_args(small_args(tmp_path / "l1", "--epochs", "1", "--recurrent-l1", "0.05")))
    assert "train_penalty" not in plain.history[0]
    epoch = penalized.history[0]
    assert epoch["train_penalty"] > 0 and epoch["train_loss"] != plain.history[0]["train_loss"]
    # The penalty is reported beside the MSE, not in it: after the epoch, the weights' penalty is
    # within the range of the epoch's mean penalty.
    final = binary_counting.recurrent_penalty(penalized.model, 0.05).item()
    assert final == pytest.approx(epoch["train_penalty"], rel=0.5)
    results = json.loads((tmp_path / "l1" / JSON_NAME).read_text())
    assert results["config"]["recurrent_l1"] == 0.05 and results["epochs"][0]["train_penalty"] > 0
    assert not binary_counting.uses_published_settings(parse_args(["--recurrent-l1", "0.05"]))
    assert not binary_counting.uses_published_settings(parse_args(["--readout", "c"]))


def test_a_stopped_run_with_readout_c_and_l1_resumes_to_the_uninterrupted_run(
    tmp_path: Path, monkeypatch
) -> None:
    options = ("--readout", "c", "--recurrent-l1", "0.01", "--variant", "nfg")
    whole = train(parse_args(small_args(tmp_path / "whole", *options)))
    stopped_run(tmp_path / "stopped", monkeypatch, *options)
    assert main(["--out-dir", str(tmp_path / "stopped"), "--resume", "--quiet", "--no-figures"]) == 0
    resumed = json.loads((tmp_path / "stopped" / JSON_NAME).read_text())
    assert resumed["config"]["readout"] == "c" and resumed["config"]["recurrent_l1"] == 0.01
    assert without_seconds(resumed["epochs"]) == without_seconds(whole.history)


def stopped_run(out_dir: Path, monkeypatch, *options: str) -> Path:
    """A run of SMALL with `options` stopped in its second epoch: the path of its checkpoint."""
    with monkeypatch.context() as patch:
        # predict runs before training, after epoch 0, and after epoch 1: stop at the third.
        interrupt_at_call(patch, binary_counting, "predict", 3)
        assert main(small_args(out_dir, *options)) == 130
    return out_dir / binary_counting.CHECKPOINT_NAME


@pytest.mark.parametrize("option", [("--readout", "c"), ("--recurrent-l1", "0.5")], ids=" ".join)
def test_resume_of_a_run_from_before_an_option_takes_its_default_as_the_run_s(
    option: tuple[str, str], tmp_path: Path, monkeypatch, capsys
) -> None:
    checkpoint_path = stopped_run(tmp_path, monkeypatch)
    checkpoint = torch.load(checkpoint_path, weights_only=False)
    for name in ("readout", "recurrent_l1"):  # as a checkpoint written before these options existed
        del checkpoint["config"][name]
    torch.save(checkpoint, checkpoint_path)
    before = (tmp_path / JSON_NAME).read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(["--out-dir", str(tmp_path), "--resume", "--quiet", "--no-figures", *option])
    assert exit_info.value.code == 2 and "contradicts the run" in capsys.readouterr().err
    assert (tmp_path / JSON_NAME).read_text() == before
    # Without the option it resumes as the run it was.
    assert main(["--out-dir", str(tmp_path), "--resume", "--quiet", "--no-figures"]) == 0
    assert json.loads((tmp_path / JSON_NAME).read_text())["config"]["readout"] == "h"


def test_resume_of_a_checkpoint_edited_to_settings_that_cannot_go_together_is_a_usage_error(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    checkpoint_path = stopped_run(tmp_path, monkeypatch, "--cell", "torch")
    checkpoint = torch.load(checkpoint_path, weights_only=False)
    checkpoint["config"]["readout"] = "c"
    torch.save(checkpoint, checkpoint_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["--out-dir", str(tmp_path), "--resume", "--quiet"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--resume:" in error and "torch.nn.LSTM" in error, error
