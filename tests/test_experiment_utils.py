"""The helpers both experiments share: argument checks, the run's start, safe writes, the model."""

import argparse
import json

import pytest
import torch

from experiment_utils import (
    add_common_arguments,
    build_model,
    markdown_table,
    non_negative_int,
    positive_float,
    positive_int,
    save_json,
    start_run,
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
    ],
)
def test_argument_checks_say_what_was_expected_and_what_came(check, text, words):
    with pytest.raises(argparse.ArgumentTypeError) as raised:
        check(text)
    for word in words:
        assert word in str(raised.value)


def test_argument_checks_accept_good_values():
    assert positive_int("3") == 3 and non_negative_int("0") == 0 and positive_float("1e-3") == 1e-3


@pytest.mark.parametrize(
    "bad", [["--threads", "0"], ["--device", "tpu"], ["--cell", "gru"], ["--seed", "-1"]]
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
