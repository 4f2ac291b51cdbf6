"""The helpers both experiments share: argument checks, the run's start, safe writes, the model."""

import argparse
import json
import os
import random
import re
import signal

import numpy as np
import pytest
import torch

import binary_counting
import compare_variants
import demo_script
import sine_wave_prediction
from experiment_utils import (
    MAX_SEED,
    OutputError,
    add_common_arguments,
    build_model,
    explicit_options,
    interrupts_held,
    load_model,
    markdown_table,
    non_negative_int,
    positive_float,
    positive_int,
    random_state,
    save_json,
    seed_everything,
    seed_value,
    set_random_state,
    start_run,
    thread_count,
    write_atomically,
)


@pytest.mark.parametrize(
    ("check", "text", "words"),
    [
        (positive_int, "0", ["positive", "0"]),
        (positive_int, "-3", ["positive", "-3"]),
        (positive_int, "2.5", ["whole number", "'2.5'"]),
        (non_negative_int, "-1", ["≥ 0", "-1"]),
        (positive_float, "0", ["positive", "'0'"]),
        (positive_float, "inf", ["finite", "'inf'"]),
        (positive_float, "nan", ["positive", "'nan'"]),
        (positive_float, "abc", ["positive number", "'abc'"]),
        (seed_value, str(2**32), ["from 0 to 4294967295", "4294967296"]),
        (thread_count, str((os.cpu_count() or 1) + 1), ["logical cores", str((os.cpu_count() or 1) + 1)]),
    ],
)
def test_argument_checks_say_what_was_expected_and_what_came(check, text, words):
    with pytest.raises(argparse.ArgumentTypeError) as raised:
        check(text)
    for word in words:
        assert word in str(raised.value)


def test_argument_checks_accept_good_values():
    assert positive_int("3") == 3 and non_negative_int("0") == 0 and positive_float("1e-3") == 1e-3
    assert seed_value(str(MAX_SEED)) == MAX_SEED and thread_count(str(os.cpu_count() or 1)) >= 1


def test_every_generator_takes_the_largest_seed():
    seed_everything(MAX_SEED)
    torch.Generator().manual_seed(MAX_SEED)
    np.random.default_rng(MAX_SEED)


@pytest.mark.parametrize(
    "bad",
    [
        ["--threads", "0"],
        ["--threads", str((os.cpu_count() or 1) + 1)],
        ["--device", "tpu"],
        ["--cell", "gru"],
        ["--seed", "-1"],
        ["--seed", str(MAX_SEED + 1)],
    ],
)
def test_common_options_refuse_bad_values_as_usage_errors(bad, capsys):
    parser = argparse.ArgumentParser()
    add_common_arguments(parser)
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(bad)
    assert exit_.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_start_run_seeds_sets_threads_and_picks_the_device():
    parser = argparse.ArgumentParser()
    add_common_arguments(parser)
    threads = torch.get_num_threads()
    try:
        device = start_run(parser.parse_args(["--seed", "7", "--threads", "1", "--device", "cpu"]))
        first = torch.rand(3)
        start_run(parser.parse_args(["--seed", "7", "--threads", "1", "--device", "cpu"]))
        assert torch.equal(first, torch.rand(3))
        assert torch.get_num_threads() == 1 and device == torch.device("cpu")
    finally:
        torch.set_num_threads(threads)


def test_an_interrupted_write_leaves_the_old_file_and_no_partial_file(tmp_path):
    path = tmp_path / "results.json"
    save_json({"epochs": [1]}, path)

    def fail_halfway(partial):
        partial.write_text('{"epochs": [1, ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, fail_halfway)
    assert json.loads(path.read_text()) == {"epochs": [1]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_both_cells_start_from_the_same_function():
    predictions = []
    for cell in ("custom", "torch"):
        torch.manual_seed(0)
        model = build_model(cell, 5, torch.device("cpu"))
        torch.manual_seed(1)
        predictions.append(model(torch.rand(4, 6, 1)))
    torch.testing.assert_close(predictions[0], predictions[1])


def test_markdown_table_has_a_header_rule_and_rows():
    assert markdown_table(("a", "b"), [(1, 2)]) == "| a | b |\n|---|---|\n| 1 | 2 |"


def test_two_writers_of_one_file_use_their_own_temporary_names(tmp_path):
    path = tmp_path / "results.json"

    def write_while_another_writes(partial):
        partial.write_text('{"writer": "first"}')
        save_json({"writer": "second"}, path)  # a second process writing the same file meanwhile

    write_atomically(path, write_while_another_writes)
    assert json.loads(path.read_text()) == {"writer": "first"}, "the last to finish wins the whole file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_json_is_strict_with_non_finite_numbers_as_null(tmp_path):
    path = tmp_path / "results.json"
    save_json({"loss": float("nan"), "epochs": [{"loss": float("inf")}, (1.5, -float("inf"))]}, path)
    text = path.read_text()

    def refuse(constant):
        raise ValueError(constant)

    assert json.loads(text, parse_constant=refuse) == {"loss": None, "epochs": [{"loss": None}, [1.5, None]]}


def test_a_failed_write_is_one_line_naming_the_file(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(OutputError) as raised:
        save_json({}, blocker / "results.json")
    assert str(raised.value).startswith(f"could not write {blocker / 'results.json'}: ")
    assert "\n" not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_signals_wait_until_the_held_block_ends():
    steps = []
    with pytest.raises(KeyboardInterrupt), interrupts_held():
        os.kill(os.getpid(), signal.SIGINT)
        steps.append("the block went on")
    assert steps == ["the block went on"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_random_state_puts_every_generator_back():
    device = torch.device("cpu")
    generators = {"data": torch.Generator().manual_seed(1)}

    def draw():
        return (
            random.random(),
            np.random.rand(),
            torch.rand(2).tolist(),
            torch.rand(2, generator=generators["data"]).tolist(),
        )

    state = random_state(device, generators)
    first = draw()
    set_random_state(state, device, generators)
    assert draw() == first


def test_explicit_options_are_those_written_out_even_at_their_default():
    parser = argparse.ArgumentParser()
    add_common_arguments(parser)
    assert explicit_options(parser, ["--seed", "0", "--quiet"]) == {"seed", "quiet"}
    assert explicit_options(parser, []) == set()


# ---------------------------------------------------------------------------------------------------
# Configurations: the command line only builds a script's Config


@pytest.mark.parametrize(
    ("script", "argv", "settings"),
    [
        (binary_counting, [], {}),
        (
            binary_counting,
            ["--epochs", "5", "--seed", "1", "--lengths", "40", "10"],
            {"epochs": 5, "seed": 1, "lengths": [10, 40]},
        ),
        (
            binary_counting,
            ["--train-lengths", "1", "20", "--target", "every-step"],
            {"train_lengths": [1, 20], "target": "every-step"},
        ),
        (
            binary_counting,
            ["--variant", "cifg", "--forget-bias", "1", "--readout", "c"],
            {"variant": "cifg", "forget_bias": 1.0, "readout": "c"},
        ),
        (sine_wave_prediction, [], {}),
        (
            sine_wave_prediction,
            ["--epochs", "3", "--batch-size", "8", "--cell", "torch"],
            {"epochs": 3, "batch_size": 8, "cell": "torch"},
        ),
        (
            sine_wave_prediction,
            ["--plot-epochs", "2", "0", "--out-dir", "elsewhere"],
            {"plot_epochs": [0, 2], "out_dir": "elsewhere"},
        ),
    ],
)
def test_a_command_line_builds_the_config_its_options_name(script, argv, settings):
    assert script.parse_args(argv) == script.Config(**settings)


def test_the_configs_defaults_are_the_published_settings():
    binary = binary_counting.Config()
    assert (binary.epochs, binary.seq_len, binary.train_samples, binary.valid_samples) == (
        20,
        20,
        10000,
        1000,
    )
    assert (binary.batch_size, binary.hidden_size, binary.lr) == (16, 20, 1e-3)
    assert binary_counting.uses_published_settings(binary)
    sine = sine_wave_prediction.Config()
    assert (sine.window, sine.hidden_size, sine.lr, sine.batch_size, sine.epochs) == (40, 50, 0.01, 1, 10)
    assert sine.plot_epochs == list(sine_wave_prediction.PLOT_EPOCHS) == [0, 2, 9]
    assert binary.cell == sine.cell == "custom" and binary.variant == sine.variant == "standard"


@pytest.mark.parametrize(
    ("script", "settings", "message"),
    [
        (
            binary_counting,
            {"compile": True, "target": "every-step"},
            "--compile compiles the model's read-out",
        ),
        (binary_counting, {"readout": "c", "cell": "torch"}, "--readout c reads the cell state"),
        (binary_counting, {"train_lengths": [5, 2]}, "expected MIN ≤ MAX, got 5 2"),
        (binary_counting, {"train_lengths": [1, 20], "seq_len": 30}, "replaces --seq-len"),
        (binary_counting, {"variant": "cifg", "cell": "torch"}, "--variant cifg needs --cell custom"),
        (binary_counting, {"variant": "gru"}, "neither a built-in cell"),
        (binary_counting, {"cell": "gru"}, "cell must be one of"),
        (sine_wave_prediction, {"window": 760}, "--window must be below the 760 training points"),
        (
            sine_wave_prediction,
            {"epochs": 3, "plot_epochs": [0, 5]},
            "--plot-epochs 5 outside this run's epochs",
        ),
        (sine_wave_prediction, {"device": "tpu"}, "device must be one of"),
    ],
)
def test_a_config_refuses_settings_that_cannot_go_together(script, settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        script.Config(**settings)


def test_the_demo_builds_each_scripts_config_from_its_own():
    demo = demo_script.Config(seed=3, variant="nfg", quiet=True, out_dir="somewhere")
    binary = demo_script.experiment_config(demo, binary_counting, demo_script.QUICK_BINARY_COUNTING)
    assert binary == binary_counting.Config(epochs=6, seed=3, variant="nfg", quiet=True, out_dir="somewhere")
    full = demo_script.experiment_config(
        demo_script.Config(full=True), sine_wave_prediction, demo_script.QUICK_SINE_WAVE
    )
    assert full == sine_wave_prediction.Config(out_dir=demo_script.Config().out_dir)
    with pytest.raises(ValueError, match="no --resume"):
        demo_script.Config(resume=True)


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"epochs": 0}, ValueError, "epochs: expected a positive whole number, got 0"),
        ({"lr": -1.0}, ValueError, "lr: expected a positive finite number, got -1.0"),
        ({"lr": float("nan")}, ValueError, "lr: expected a positive finite number"),
        ({"batch_size": "16"}, TypeError, "batch_size: expected a whole number, got '16'"),
        ({"epochs": 2.5}, TypeError, "epochs: expected a whole number, got 2.5"),
        ({"lengths": 40}, TypeError, "lengths: expected a list of whole numbers, got 40"),
        ({"lengths": [10, 0]}, ValueError, "lengths: expected a positive whole number, got 0"),
        ({"quiet": 1}, TypeError, "quiet: expected True or False, got 1"),
        ({"seed": -1}, ValueError, "seed: expected a whole number ≥ 0, got -1"),
        ({"seed": 2**32}, ValueError, "seed: expected 0 … 4294967295"),
        ({"forget_bias": float("inf")}, ValueError, "forget_bias: expected a finite number, got inf"),
        ({"recurrent_l1": -0.5}, ValueError, "recurrent_l1: expected a finite number ≥ 0"),
    ],
)
def test_a_config_built_in_code_names_a_bad_value(settings, error, message):
    with pytest.raises(error, match=re.escape(message)):
        binary_counting.Config(**settings)


def test_a_config_accepts_the_values_the_command_line_accepts():
    config = binary_counting.Config(seed=0, recurrent_l1=0.0, lr=1, forget_bias=-3.0, lengths=(40, 10))
    assert config.lengths == [10, 40] and config.forget_bias == -3.0
    assert sine_wave_prediction.Config(plot_epochs=[0]).plot_epochs == [0]
    with pytest.raises(ValueError, match="plot_epochs: expected a whole number ≥ 0, got -1"):
        sine_wave_prediction.Config(plot_epochs=[-1])


def test_resuming_a_config_built_in_code_refuses_other_settings(tmp_path):
    tiny = {"epochs": 1, "train_samples": 64, "valid_samples": 32, "quiet": True, "no_figures": True}
    with pytest.raises(ValueError, match="resume: no run to resume in"):
        binary_counting.train(binary_counting.Config(**tiny, resume=True, out_dir=tmp_path))
    first = binary_counting.train(binary_counting.Config(**tiny, out_dir=tmp_path))
    with pytest.raises(ValueError, match=re.escape("lr 0.5 here, 0.001 there")):
        binary_counting.train(binary_counting.Config(**tiny, lr=0.5, resume=True, out_dir=tmp_path))
    again = binary_counting.train(binary_counting.Config(**tiny, resume=True, out_dir=tmp_path))
    assert again.history == first.history  # its own settings: nothing left to train
    model = load_model(tmp_path / binary_counting.WEIGHTS_NAME, config=binary_counting.Config(**tiny))
    assert model.lstm.hidden_size == 20


def test_a_config_records_numbers_as_the_command_line_does():
    config = binary_counting.Config(lr=1, forget_bias=1)
    assert config == binary_counting.parse_args(["--lr", "1", "--forget-bias", "1"])
    assert isinstance(config.lr, float) and isinstance(config.forget_bias, float)


def test_the_study_config_keeps_its_baseline_and_refuses_no_workers():
    assert compare_variants.Config(variants=["cifg"]).variants == ["standard", "cifg"]
    for name in ("seeds", "workers"):
        with pytest.raises(ValueError, match=f"{name}: expected a positive whole number, got 0"):
            compare_variants.Config(**{name: 0})
