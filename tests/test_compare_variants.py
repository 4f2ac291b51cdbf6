"""Tests of compare_variants.py: a tiny study end to end, its statistics, resuming, bad input, the README."""

import json
import math
import re
import statistics
from pathlib import Path

import pytest
import torch
from scipy import stats

import compare_variants
from experiment_utils import (
    INTERRUPTED_EXIT_STATUS,
    TERMINATED_EXIT_STATUS,
    Terminated,
    build_model,
    finite_or_none,
)

ROOT = Path(__file__).resolve().parent.parent
# Even smaller than --quick: one epoch of a few sequences, so that a run takes about a second.
TINY_SETTINGS = {
    "binary_counting": {"epochs": 1, "train_samples": 64, "valid_samples": 32},
    "sine_wave": {"epochs": 1, "batch_size": 64, "window": 10},
}


pytestmark = pytest.mark.usefixtures("restore_threads")  # tests/conftest.py


@pytest.fixture
def tiny(monkeypatch):
    """--quick made tiny; the runs' settings travel to the worker processes with each job."""
    monkeypatch.setattr(compare_variants, "QUICK_SETTINGS", TINY_SETTINGS)


def strict_json(path: Path) -> dict:
    def refuse(constant: str):
        raise ValueError(f"{path} holds {constant}, which strict JSON does not allow")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_tiny_quick_study_writes_a_well_formed_json_figure_and_table(tmp_path, tiny, capsys):
    argv = ["--quick", "--seeds", "2", "--variants", "cifg", "--workers", "2", "--quiet"]
    assert compare_variants.main([*argv, "--out-dir", str(tmp_path)]) == 0
    study = strict_json(tmp_path / compare_variants.JSON_NAME)
    assert {"runs", "summary", "seeds", "seconds"} <= study.keys()
    assert study["seeds"] == [0, 1] and study["complete"] and study["missing"] == []
    assert 0 < study["seconds"] < 600
    assert list(study["summary"]) == ["standard", "cifg"]  # the baseline is always trained
    runs = {(run["task"], run["condition"], run["seed"]) for run in study["runs"]}
    assert runs == {
        (task, name, seed)
        for task in compare_variants.TASKS
        for name in ("standard", "cifg")
        for seed in (0, 1)
    }
    for run in study["runs"]:
        keys = {metric.key for metric in compare_variants.METRICS if metric.task == run["task"]}
        assert keys | {compare_variants.PARAMETERS[run["task"]]} == run["metrics"].keys()
        assert run["variant"] == run["condition"] and run["epochs"] == 1
    for condition, by_metric in study["summary"].items():
        assert by_metric["sine_final_mse"]["n"] == 2
        assert (by_metric["sine_final_mse"]["p"] is None) == (condition == "standard")
    for name in ("standard", "cifg"):  # the parameters of the model each script builds
        model = build_model("custom", 20, torch.device("cpu"), variant=name)
        expected = sum(parameter.numel() for parameter in model.parameters())
        assert study["summary"][name]["counting_parameters"]["median"] == expected
    figure = tmp_path / compare_variants.FIGURE_NAME
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert compare_variants.summary_table(study) in out
    assert "Only 2 seed(s)" in out  # the note on too few seeds
    text = compare_variants.reading(study)  # the README's and the notebook's reading, on a partial study
    assert "The study took" in text and "`nfg` was not trained" in text
    assert "no peepholes cost nothing**: not tested (a variant is missing)" in text
    # Run again: everything is finished, so nothing is trained and the study is as it was.
    assert compare_variants.main([*argv, "--out-dir", str(tmp_path)]) == 0
    again = strict_json(tmp_path / compare_variants.JSON_NAME)
    assert again["runs"] == study["runs"] and len(again["sessions"]) == 2


def test_runs_use_the_published_settings_of_both_scripts():
    args = compare_variants.parse_args(["--out-dir", "unused"])
    assert args.seeds == 5 and args.variants == list(compare_variants.CONDITIONS)
    assert {"standard-fb1", *compare_variants.VARIANTS} == set(args.variants)
    # Where and how a run trains, not what it trains.
    free = {"threads", "quiet", "no_figures", "device", "out_dir", "seed", "variant", "forget_bias"}
    for task, script in compare_variants.TASKS.items():
        run = vars(compare_variants.run_config(args, task, 3, "standard-fb1", Path("x")))
        published = vars(script.Config())
        assert {key: value for key, value in run.items() if key not in free} == {
            key: value for key, value in published.items() if key not in free
        }
        assert (run["seed"], run["variant"], run["forget_bias"], run["threads"]) == (3, "standard", 1.0, 1)


def test_welch_test_agrees_with_the_welch_formula():
    # Hand-made numbers of unequal size and spread, where Student's and Welch's tests differ.
    values = [0.81, 0.95, 1.32, 0.74, 1.10, 0.88, 1.45]
    baseline = [0.52, 0.61, 0.49, 0.58]
    mean, variance, n = statistics.mean(values), statistics.variance(values), len(values)
    mean_0, variance_0, n_0 = statistics.mean(baseline), statistics.variance(baseline), len(baseline)
    standard_error = math.sqrt(variance / n + variance_0 / n_0)
    t = (mean - mean_0) / standard_error
    # The Welch–Satterthwaite degrees of freedom (Welch 1947).
    df = standard_error**4 / ((variance / n) ** 2 / (n - 1) + (variance_0 / n_0) ** 2 / (n_0 - 1))
    p = 2 * stats.t.sf(abs(t), df)
    assert compare_variants.welch_test(values, baseline) == pytest.approx((t, p), rel=1e-9)
    assert compare_variants.welch_test(baseline, values) == pytest.approx((-t, p), rel=1e-9)

    summary = compare_variants.summarize([*values, None], baseline)
    assert summary["n"] == n and summary["missing"] == 1
    assert summary["mean"] == pytest.approx(mean) and summary["median"] == pytest.approx(
        statistics.median(values)
    )
    assert summary["sd"] == pytest.approx(statistics.stdev(values))
    assert (summary["t"], summary["p"]) == pytest.approx((t, p), rel=1e-9)


def test_statistics_that_are_undefined_are_none():
    assert compare_variants.welch_test([1.0, 1.0], [1.0, 1.0]) == (None, None)  # no variance at all
    assert compare_variants.welch_test([1.0], [1.0, 2.0]) == (None, None)  # one value has no variance
    one = compare_variants.summarize([2.0], [1.0, 2.0])
    assert (one["n"], one["mean"], one["sd"], one["p"]) == (1, 2.0, None, None)
    assert compare_variants.summarize([None, None], None) == {
        "n": 0,
        "missing": 2,
        "mean": None,
        "sd": None,
        "median": None,
        "t": None,
        "p": None,
    }
    assert compare_variants.few_seeds_note(5) is None and "2 seed(s)" in compare_variants.few_seeds_note(2)
    assert "Unfinished: as few as 0 of the 5 planned" in compare_variants.few_seeds_note(0, 5)
    assert "Only 2 seed(s) per variant" in compare_variants.few_seeds_note(2, 2)


def fake_run(task: str, condition: str, seed: int, argv: list[str]) -> dict:
    """A run's record without training: the statistics and the bookkeeping see what they would."""
    metrics = {metric.key: 0.5 + seed / 10 for metric in compare_variants.METRICS if metric.task == task}
    metrics[compare_variants.PARAMETERS[task]] = 100
    return {"task": task, "condition": condition, "seed": seed, "seconds": 0.0, "metrics": metrics}


@pytest.mark.parametrize(
    "stop, status", [(KeyboardInterrupt, INTERRUPTED_EXIT_STATUS), (Terminated, TERMINATED_EXIT_STATUS)]
)
def test_resuming_an_interrupted_study_repeats_no_finished_run(tmp_path, monkeypatch, capsys, stop, status):
    argv = ["--seeds", "2", "--variants", "nfg", "--workers", "1", "--quiet", "--out-dir", str(tmp_path)]
    calls = []

    def stopped_at_the_fourth(*job):
        calls.append(job[:3])
        if len(calls) == 4:
            raise stop
        return fake_run(*job)

    monkeypatch.setattr(compare_variants, "train_run", stopped_at_the_fourth)
    assert compare_variants.main(argv) == status
    assert "run the same command again to continue" in capsys.readouterr().err
    study = strict_json(tmp_path / compare_variants.JSON_NAME)
    finished = [(run["task"], run["condition"], run["seed"]) for run in study["runs"]]
    assert finished == calls[:3] and not study["complete"]
    planned = {compare_variants.run_id(task, name, seed) for task, name, seed in calls[:3]}
    assert compare_variants.run_id(*calls[3]) in study["missing"]
    assert len(study["missing"]) == 2 * 2 * 2 - 3 and not planned & set(study["missing"])

    resumed = []
    monkeypatch.setattr(compare_variants, "train_run", lambda *job: resumed.append(job[:3]) or fake_run(*job))
    assert compare_variants.main(argv) == 0
    assert not set(resumed) & set(finished)
    study = strict_json(tmp_path / compare_variants.JSON_NAME)
    everything = [(run["task"], run["condition"], run["seed"]) for run in study["runs"]]
    assert sorted(everything) == sorted(set(everything)) == sorted(finished + resumed)
    assert study["complete"] and study["missing"] == [] and len(study["sessions"]) == 2
    assert study["summary"]["nfg"]["sine_final_mse"]["n"] == 2

    # --report-only redraws from the runs and trains nothing: no new session, the same summary.
    monkeypatch.setattr(compare_variants, "train_run", None)
    figure = tmp_path / compare_variants.FIGURE_NAME
    figure.unlink()
    assert compare_variants.main([*argv, "--report-only"]) == 0
    assert strict_json(tmp_path / compare_variants.JSON_NAME) == study and figure.is_file()


@pytest.mark.parametrize(
    "argv",
    [["--seeds", "0"], ["--variants", "lstm"], ["--workers", "100000"], ["--seeds", "two"]],
)
def test_bad_options_are_usage_errors_before_anything_is_written(tmp_path, argv):
    with pytest.raises(SystemExit) as stop:
        compare_variants.parse_args([*argv, "--out-dir", str(tmp_path / "study")])
    assert stop.value.code == 2
    assert list(tmp_path.iterdir()) == []


def test_an_out_dir_that_is_a_file_or_holds_another_study_is_a_usage_error(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as stop:
        compare_variants.parse_args(["--out-dir", str(tmp_path / "file")])
    assert stop.value.code == 2
    monkeypatch.setattr(compare_variants, "train_run", fake_run)
    assert (
        compare_variants.main(
            ["--quick", "--variants", "nog", "--quiet", "--workers", "1", "--out-dir", str(tmp_path)]
        )
        == 0
    )
    written = (tmp_path / compare_variants.JSON_NAME).read_text()
    with pytest.raises(SystemExit) as stop:  # nothing to report on
        compare_variants.parse_args(["--report-only", "--out-dir", str(tmp_path / "empty")])
    assert stop.value.code == 2
    for other in (
        ["--quick", "--variants", "nig"],
        ["--seeds", "2"],
        ["--quick", "--variants", "nog", "--seeds", "3"],
    ):
        with pytest.raises(SystemExit) as stop:
            compare_variants.parse_args([*other, "--out-dir", str(tmp_path)])
        assert stop.value.code == 2
    assert (tmp_path / compare_variants.JSON_NAME).read_text() == written


# ---------------------------------------------------------------------------------------------------
# The committed study and the README


def committed_study() -> dict:
    path = ROOT / "figures" / compare_variants.JSON_NAME
    if not path.is_file():
        pytest.skip("the study is not yet committed")
    return strict_json(path)


def test_the_committed_study_is_the_documented_command_at_its_defaults():
    study = committed_study()
    assert study["config"] == compare_variants.study_config(
        compare_variants.parse_args(["--out-dir", str(ROOT / "figures")])
    )
    readme = (ROOT / "README.md").read_text()
    assert "\npython compare_variants.py --out-dir figures\n" in readme
    assert (ROOT / "figures" / compare_variants.FIGURE_NAME).is_file()
    assert f"(figures/{compare_variants.FIGURE_NAME})" in readme


def test_the_committed_summary_is_computed_from_the_committed_runs():
    study = committed_study()
    recomputed = compare_variants.study_summary(study["runs"], list(study["config"]["variants"]))
    assert finite_or_none(recomputed) == study["summary"]


def test_readme_table_is_rendered_from_the_committed_study():
    study = committed_study()
    readme = (ROOT / "README.md").read_text()
    assert compare_variants.summary_table(study) in readme
    # The reading (the duration, and which of Greff et al.'s findings hold) is generated from the study.
    assert compare_variants.reading(study) in readme
    assert len(re.findall(r"The study took \d+ minutes", readme)) == 1


def test_the_command_line_builds_the_study_s_config(tmp_path):
    args = compare_variants.parse_args(["--quick", "--variants", "cifg", "--out-dir", str(tmp_path)])
    assert args == compare_variants.Config(quick=True, variants=["standard", "cifg"], out_dir=tmp_path)
    assert args.seeds == compare_variants.QUICK_SEEDS
    published = compare_variants.parse_args(["--out-dir", str(tmp_path)])
    assert published == compare_variants.Config(out_dir=tmp_path) and published.seeds == 5
