"""The README's results are the committed runs' results: every table is rendered from their JSON."""

import json
import re
import sys
from pathlib import Path

import pytest
import torch

import binary_counting
import sine_wave_prediction
from experiment_utils import load_model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_lstm  # noqa: E402  (the benchmark is a script in its own folder)

README = (ROOT / "README.md").read_text()


def results(name: str) -> dict:
    return json.loads((ROOT / name).read_text())


def test_binary_counting_tables_match_the_committed_run():
    run = results("figures/binary_counting.json")
    assert binary_counting.uses_published_settings(binary_counting.parse_args(_argv(run["config"])))
    assert binary_counting.comparison_table(run["epochs"]) in README
    assert binary_counting.report(run["epochs"]) in README
    assert binary_counting.generalization_table(run["length_generalization"]) in README


def test_sine_wave_table_matches_the_committed_run():
    run = results("figures/sine_wave.json")
    defaults = vars(sine_wave_prediction.parse_args([]))
    for setting in ("window", "hidden_size", "epochs", "lr", "batch_size"):
        assert run["config"][setting] == defaults[setting], setting
    assert sine_wave_prediction.report(run["epochs"]) in README
    assert list(run["generalization"]) == list(sine_wave_prediction.UNSEEN_SIGNALS)
    assert sine_wave_prediction.generalization_table(run) in README
    assert len(run["forecast"]) == 40


def test_benchmark_page_is_the_one_its_run_writes():
    # benchmarks/README.md: the tables and every stated number (the ratios against the project's bounds,
    # what lstm_bptt's buffers save) are those of the committed run, as `bench_lstm.py --readme` writes them.
    run = results("benchmarks/results.json")
    assert (ROOT / "benchmarks" / "README.md").read_text() == bench_lstm.readme_text(run)
    assert "(benchmarks/README.md)" in README


def test_demo_time_is_the_measured_one():
    demo = results("benchmarks/results.json")["demo"]
    stated = re.findall(r"about (\d+) s on a 2-core CPU|it took (\d+) s", README)
    assert len(stated) == 2 and all(int(a or b) == round(demo["seconds"]) for a, b in stated)
    assert demo["seconds"] <= 60


def test_readme_gives_one_regeneration_command_per_experiment_naming_the_folder():
    for script in (binary_counting, sine_wave_prediction):
        command = f"python {script.__name__}.py --out-dir figures"
        assert f"\n{command}\n" in README, command
        args = script.parse_args(command.split()[2:])
        assert args.out_dir == Path("figures") and vars(args) == {
            **vars(script.parse_args([])),
            "out_dir": Path("figures"),
        }
        assert (ROOT / "figures" / script.JSON_NAME).is_file()


def test_committed_binary_counting_weights_are_the_reported_model():
    check_binary_counting_weights(ROOT / "figures")


def test_committed_sine_wave_weights_are_the_reported_model():
    check_sine_wave_weights(ROOT / "figures")


def check_binary_counting_weights(folder: Path) -> None:
    """The weights beside the JSON rebuild a model that scores what the JSON's last epoch reports."""
    weights = folder / binary_counting.WEIGHTS_NAME
    if not weights.is_file():
        pytest.skip("weights not yet committed")
    run = json.loads((folder / binary_counting.JSON_NAME).read_text())
    config = run["config"]
    _, valid, _ = binary_counting.make_datasets(
        config["seed"], config["seq_len"], config["train_samples"], config["valid_samples"]
    )
    loss, accuracy = binary_counting.evaluate(
        load_model(weights), valid, binary_counting.EVALUATION_BATCH_SIZE
    )
    # Another CPU may round the last bits differently from the one that trained.
    assert loss == pytest.approx(run["epochs"][-1]["valid_loss"], rel=1e-4)
    assert accuracy == pytest.approx(run["epochs"][-1]["valid_accuracy"], abs=2 / config["valid_samples"])


def check_sine_wave_weights(folder: Path) -> None:
    """The weights beside the JSON rebuild a model that forecasts what the JSON reports."""
    weights = folder / sine_wave_prediction.WEIGHTS_NAME
    if not weights.is_file():
        pytest.skip("weights not yet committed")
    run = json.loads((folder / sine_wave_prediction.JSON_NAME).read_text())
    window = run["config"]["window"]
    seed_window = sine_wave_prediction.make_series()[: sine_wave_prediction.TRAIN_POINTS][-window:]
    forecast = sine_wave_prediction.forecast(load_model(weights), seed_window, sine_wave_prediction.HELD_OUT)
    torch.testing.assert_close(forecast, torch.tensor(run["forecast"]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "path", re.findall(r"\]\(((?:figures|benchmarks|tests)/[^)]+|[\w.]+\.(?:py|ipynb))\)", README)
)
def test_linked_files_exist(path):
    assert (ROOT / path).is_file(), path


def test_readme_shows_the_published_figures():
    for name in ("train_binary.png", "sine_epoch0.png", "sine_epoch2.png", "sine_epoch9.png"):
        assert f"(figures/{name})" in README


def _argv(config: dict) -> list[str]:
    """The command line that reproduces a run's experiment settings."""
    names = ("seq_len", "train_samples", "valid_samples", "hidden_size", "epochs", "batch_size", "lr")
    return [item for name in names for item in (f"--{name.replace('_', '-')}", str(config[name]))]
