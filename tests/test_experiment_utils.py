"""The helpers both experiments share: argument checks, the run's start, safe writes, the model."""

import argparse
import json
import os
import random
import signal

import numpy as np
import pytest
import torch

from experiment_utils import (
    MAX_SEED,
    OutputError,
    add_common_arguments,
    build_model,
    explicit_options,
    interrupts_held,
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
