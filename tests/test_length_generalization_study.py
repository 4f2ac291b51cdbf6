"""Tests of length_generalization_study.py: a quick study, its files, and the committed study's record."""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from processes import wait_until

import binary_counting
import length_generalization_study as study
from experiment_utils import load_model

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "figures" / study.JSON_NAME


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("study")
    argv = ["--quick", "--seeds", "3", "--out-dir", str(out_dir), "--runs-dir", str(out_dir / "runs")]
    assert study.main(argv) == 0
    return out_dir


def test_quick_study_writes_every_configuration_over_its_seeds(quick_study: Path) -> None:
    results = json.loads((quick_study / study.JSON_NAME).read_text())
    names = [entry["name"] for entry in results["configurations"]]
    assert names == [name for name, _ in study.CONFIGURATIONS] and names[0] == "published"
    for entry in results["configurations"]:
        assert entry["seeds"] == [3] and len(entry["longest_counted_length"]) == 1
        assert entry["command"].startswith("python binary_counting.py ")
        assert all(len(accuracy) == entry["max_test_length"] for accuracy in entry["accuracy_by_length"])
        assert entry["target_length"] == study.QUICK_TARGET_LENGTH < entry["max_test_length"]
        for accuracy, within, full, last, inside in zip(
            entry["accuracy_by_length"],
            entry["longest_counted_length"],
            entry["longest_counted_length_full_scan"],
            entry["accuracy_at_max_test_length"],
            entry["inside"],
            strict=True,
        ):
            assert binary_counting.longest_counted_length(accuracy) == full
            assert binary_counting.longest_counted_length(accuracy[: entry["target_length"]]) == within
            assert last == accuracy[-1] and set(inside) == set(INSIDE_KEYS)
    assert (quick_study / study.FIGURE_NAME).read_bytes().startswith(b"\x89PNG")


def test_a_recorded_command_with_its_seed_gives_the_recorded_number(
    quick_study: Path, tmp_path: Path
) -> None:
    results = json.loads((quick_study / study.JSON_NAME).read_text())
    entry = results["configurations"][-1]
    argv = [*shlex.split(entry["command"])[2:], "--seed", "3", "--out-dir", str(tmp_path), "--quiet"]
    assert binary_counting.main(argv) == 0
    run = json.loads((tmp_path / binary_counting.JSON_NAME).read_text())
    assert run["longest_counted_length"] == entry["longest_counted_length_full_scan"][0]
    assert run["accuracy_by_length"] == entry["accuracy_by_length"][0]


def test_best_weights_rebuild_with_load_model(quick_study: Path) -> None:
    best = json.loads((quick_study / f"{study.BEST_NAME}.json").read_text())
    model = load_model(quick_study / f"{study.BEST_NAME}.pt")
    accuracy = binary_counting.counting_accuracy_by_length(model, 5, torch.Generator().manual_seed(0))
    assert accuracy.shape == (5,)
    entry = next(
        e
        for e in json.loads((quick_study / study.JSON_NAME).read_text())["configurations"]
        if e["name"] == best["name"]
    )
    assert best["longest_counted_length"] == max(entry["longest_counted_length"])
    assert best["longest_counted_length_full_scan"] in entry["longest_counted_length_full_scan"]


INSIDE_KEYS = (
    "count_per_one_first",
    "count_per_one_last",
    "count_per_zero_first",
    "count_per_zero_last",
    "saturated_units_first",
    "saturated_units_last",
    "forget_gate_min",
    "largest_recurrent_weight",
    "error_at_end",
)


def test_inside_a_hand_built_counter_every_one_adds_one_and_nothing_else_changes() -> None:
    from test_binary_counting import exact_counter

    inside = study.inside_counter(exact_counter(), 300, 2)
    assert inside["count_per_one_first"] == inside["count_per_one_last"] == 1.0
    assert inside["count_per_zero_first"] == inside["count_per_zero_last"] == 0.0
    assert inside["forget_gate_min"] == 1.0 and inside["largest_recurrent_weight"] == 0.0
    assert inside["error_at_end"] == 0.0
    # Its c, the count, is at most 2 after the first 2 bits (tanh 2 = 0.96) and above 3 after 300.
    assert inside["saturated_units_first"] == 0.0 and inside["saturated_units_last"] == 1.0
    # The head off by 1 %: each one adds 1.01, and the error after 300 bits is 1 % of about 150.
    inside = study.inside_counter(exact_counter(1.01), 300, 20)
    assert inside["count_per_one_last"] == pytest.approx(1.01)
    assert 1.0 < inside["error_at_end"] < 2.0


def test_report_only_redraws_the_figure_from_the_json_and_trains_nothing(
    quick_study: Path, tmp_path: Path
) -> None:
    for name in (study.JSON_NAME, f"{study.BEST_NAME}.json", f"{study.BEST_NAME}.pt"):
        shutil.copy(quick_study / name, tmp_path / name)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    assert study.main(["--report-only", "--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / study.FIGURE_NAME).read_bytes().startswith(b"\x89PNG")
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.name in before} == before
    assert not (tmp_path / "runs").exists()


def test_report_only_without_a_study_is_a_usage_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        study.main(["--report-only", "--out-dir", str(tmp_path)])
    assert exit_info.value.code == 2 and "no study to report" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_only_reruns_the_named_configurations_and_keeps_the_others(quick_study: Path) -> None:
    before = json.loads((quick_study / study.JSON_NAME).read_text())["configurations"]
    argv = ["--quick", "--only", "published", "--seeds", "3", "--out-dir", str(quick_study)]
    assert study.main([*argv, "--runs-dir", str(quick_study / "rerun")]) == 0
    after = json.loads((quick_study / study.JSON_NAME).read_text())["configurations"]
    assert [entry["name"] for entry in after] == [entry["name"] for entry in before]
    assert after[1:] == before[1:] and after[0]["run_dirs"] != before[0]["run_dirs"]
    assert after[0]["longest_counted_length"] == before[0]["longest_counted_length"]  # same seed


def test_only_works_where_the_kept_best_run_s_folder_is_missing(quick_study: Path, tmp_path: Path) -> None:
    # As in a fresh clone: the committed JSON names run folders under the git-ignored runs/.
    for name in (study.JSON_NAME, f"{study.BEST_NAME}.json", f"{study.BEST_NAME}.pt"):
        shutil.copy(quick_study / name, tmp_path / name)
    results = json.loads((tmp_path / study.JSON_NAME).read_text())
    best, _ = study.best_run(results)
    other = next(entry["name"] for entry in results["configurations"] if entry["name"] != best["name"])
    for entry in results["configurations"]:
        entry["run_dirs"] = [str(tmp_path / "gone" / Path(run_dir).name) for run_dir in entry["run_dirs"]]
    (tmp_path / study.JSON_NAME).write_text(json.dumps(results))
    best_weights = (tmp_path / f"{study.BEST_NAME}.pt").read_bytes()
    argv = ["--quick", "--only", other, "--seeds", "3", "--out-dir", str(tmp_path)]
    assert study.main([*argv, "--runs-dir", str(tmp_path / "rerun")]) == 0
    after = json.loads((tmp_path / study.JSON_NAME).read_text())
    if study.best_run(after)[0]["name"] == best["name"]:
        assert (tmp_path / f"{study.BEST_NAME}.pt").read_bytes() == best_weights  # kept, not rebuilt


def test_a_best_run_whose_folder_holds_another_run_is_never_copied(
    quick_study: Path, tmp_path: Path, capsys
) -> None:
    # As after an interrupted re-run of the same seed: the folder's weights are no longer that run's.
    out_dir = tmp_path / "study"
    shutil.copytree(quick_study, out_dir)
    results = json.loads((out_dir / study.JSON_NAME).read_text())
    best, index = study.best_run(results)
    run_json = Path(best["run_dirs"][index]) / binary_counting.JSON_NAME
    replaced = tmp_path / "replaced"
    shutil.copytree(run_json.parent, replaced)
    other_run = json.loads((replaced / binary_counting.JSON_NAME).read_text())
    other_run["accuracy_by_length"] = [0.0] * len(other_run["accuracy_by_length"])
    (replaced / binary_counting.JSON_NAME).write_text(json.dumps(other_run))
    for entry in results["configurations"]:
        entry["run_dirs"] = [
            str(replaced) if run_dir == best["run_dirs"][index] else run_dir for run_dir in entry["run_dirs"]
        ]
    (out_dir / study.JSON_NAME).write_text(json.dumps(results))
    for name in (f"{study.BEST_NAME}.json", f"{study.BEST_NAME}.pt"):
        (out_dir / name).unlink()
    figure = (out_dir / study.FIGURE_NAME).read_bytes()
    other = next(entry["name"] for entry in results["configurations"] if entry["name"] != best["name"])
    argv = ["--quick", "--only", other, "--seeds", "3", "--out-dir", str(out_dir)]
    assert study.main([*argv, "--runs-dir", str(tmp_path / "rerun")]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: the best run") and "--only" in error, error
    assert not (out_dir / f"{study.BEST_NAME}.pt").exists()
    assert (out_dir / study.FIGURE_NAME).read_bytes() == figure


@pytest.mark.parametrize(
    "text", ["", "[1, 2]", '{"description": "x"}', '{"configurations": {}}', '{"configurations": ["x"]}']
)
def test_a_json_in_out_dir_that_is_no_study_is_a_usage_error(text: str, tmp_path: Path, capsys) -> None:
    (tmp_path / study.JSON_NAME).write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        study.main(
            ["--quick", "--seeds", "3", "--out-dir", str(tmp_path), "--runs-dir", str(tmp_path / "runs")]
        )
    assert exit_info.value.code == 2 and "choose another --out-dir" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == [study.JSON_NAME]


def test_ctrl_c_keeps_every_finished_configuration(tmp_path: Path) -> None:
    seeds = [str(seed) for seed in range(8)]  # slow enough to be stopped after its first configuration
    command = [sys.executable, "length_generalization_study.py", "--quick", "--seeds", *seeds]
    command += ["--out-dir", str(tmp_path), "--runs-dir", str(tmp_path / "runs")]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until(process, (tmp_path / study.JSON_NAME).is_file, "configuration")
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Interrupted: stopped after"), stderr
    finished = int(lines[0].split("stopped after ")[1].split()[0])
    kept = json.loads((tmp_path / study.JSON_NAME).read_text())["configurations"]
    assert 1 <= finished == len(kept) < len(study.configurations(quick=True))
    assert all(entry["seeds"] == list(range(8)) for entry in kept)
    assert f"{finished} finished configuration(s); to finish, run again with --only" in stdout
    assert (tmp_path / f"{study.BEST_NAME}.pt").is_file() and (tmp_path / study.FIGURE_NAME).is_file()


def test_unknown_configuration_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        study.parse_args(["--only", "nonsense"])
    assert exit_info.value.code == 2 and "no configuration named" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# The committed study


def committed() -> dict:
    if not COMMITTED.is_file():
        pytest.skip("the study is not yet committed")
    return json.loads(COMMITTED.read_text())


def test_quick_never_writes_into_the_committed_study_by_default() -> None:
    args = study.parse_args(["--quick"])
    assert args.out_dir == study.QUICK_OUT_DIR and args.runs_dir == study.QUICK_OUT_DIR / "runs"
    assert study.QUICK_OUT_DIR.parts[0] == "runs"  # git-ignored
    full = study.parse_args([])
    assert (full.out_dir, full.runs_dir) == (Path("figures"), Path("runs/length_generalization"))


@pytest.mark.parametrize("option", ["--out-dir", "--runs-dir"])
def test_a_folder_that_is_a_file_is_a_usage_error_before_any_training(option, tmp_path: Path, capsys) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        study.main(["--quick", "--seeds", "3", "--out-dir", str(tmp_path / "out"), option, str(a_file)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert f"{option}: expected a folder" in error, error
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file"]  # nothing trained or written


@pytest.mark.parametrize(
    "damage",
    [
        lambda study: study["configurations"].clear(),
        lambda study: study["configurations"][0].update(longest_counted_length=[]),
        lambda study: study["configurations"][0].update(longest_counted_length=None),
        lambda study: study["configurations"][0].pop("max_train_length"),
        lambda study: study["configurations"][0].update(accuracy_by_length="x"),
    ],
    ids=["no configurations", "no lengths", "null lengths", "no max_train_length", "accuracies a string"],
)
def test_a_damaged_study_json_is_a_usage_error_before_anything(
    damage, quick_study: Path, tmp_path: Path, capsys
) -> None:
    results = json.loads((quick_study / study.JSON_NAME).read_text())
    damage(results)
    (tmp_path / study.JSON_NAME).write_text(json.dumps(results))
    for argv in (["--report-only"], ["--quick", "--only", "published", "--seeds", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            study.main([*argv, "--out-dir", str(tmp_path), "--runs-dir", str(tmp_path / "runs")])
        assert exit_info.value.code == 2 and "--out-dir:" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == [study.JSON_NAME]


def test_report_only_into_a_figure_that_is_a_folder_is_one_line(
    quick_study: Path, tmp_path: Path, capsys
) -> None:
    shutil.copy(quick_study / study.JSON_NAME, tmp_path / study.JSON_NAME)
    (tmp_path / study.FIGURE_NAME).mkdir()
    assert study.main(["--report-only", "--out-dir", str(tmp_path)]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error:"), error


def test_committed_study_has_five_seeds_per_configuration_and_the_published_one() -> None:
    results = committed()
    names = [entry["name"] for entry in results["configurations"]]
    assert "published" in names
    for entry in results["configurations"]:
        assert len(set(entry["seeds"])) == len(entry["seeds"]) >= 5
        for key in ("longest_counted_length", "longest_counted_length_full_scan", "inside"):
            assert len(entry[key]) == len(entry["seeds"]), key
        assert entry["max_train_length"] == 20 and entry["target_length"] == 200
        assert entry["max_test_length"] == 1000
        for accuracy, within, full in zip(
            entry["accuracy_by_length"],
            entry["longest_counted_length"],
            entry["longest_counted_length_full_scan"],
            strict=True,
        ):
            assert binary_counting.longest_counted_length(accuracy) == full and within == min(full, 200)
        argv = shlex.split(entry["command"])
        assert argv[:2] == ["python", "binary_counting.py"]
        assert not {"--seed", "--out-dir", "--quiet"} & set(argv)
        args = binary_counting.parse_args(argv[2:])
        assert args.max_test_length == 1000 and args.seq_len == 20
    published = next(entry for entry in results["configurations"] if entry["name"] == "published")
    args = binary_counting.parse_args(shlex.split(published["command"])[2:])
    assert {**vars(args), "max_test_length": None} == vars(binary_counting.parse_args([]))


def test_committed_commands_are_the_study_script_s() -> None:
    results = committed()
    expected = {name: study.command_of(options) for name, options in study.configurations()}
    assert {entry["name"]: entry["command"] for entry in results["configurations"]} == expected


def test_readme_table_is_rendered_from_the_committed_study() -> None:
    results = committed()
    assert study.summary_table(results) in (ROOT / "README.md").read_text()
    medians = [statistics.median(entry["longest_counted_length"]) for entry in results["configurations"]]
    assert all(0 <= median <= 200 for median in medians)


def committed_best() -> tuple[dict, torch.nn.Module]:
    return (
        json.loads((ROOT / "figures" / f"{study.BEST_NAME}.json").read_text()),
        load_model(ROOT / "figures" / f"{study.BEST_NAME}.pt"),
    )


def test_committed_best_weights_are_the_best_run() -> None:
    results = committed()
    best, model = committed_best()
    configuration, index = study.best_run(results)
    assert best["name"] == configuration["name"] and best["seed"] == configuration["seeds"][index]
    generator = torch.Generator().manual_seed(0)
    accuracy = binary_counting.counting_accuracy_by_length(model, 1000, generator)
    # Fresh sequences, not the run's own: the measure is a share of 500, so allow a few lengths' noise.
    full = best["longest_counted_length_full_scan"]
    assert binary_counting.longest_counted_length(accuracy) >= 0.8 * full
    # What the study recorded inside that run, recomputed from the committed weights.
    inside = study.inside_counter(model, 1000, 20)
    for key, value in configuration["inside"][index].items():
        assert inside[key] == pytest.approx(value, rel=1e-3, abs=1e-5), key


@pytest.mark.slow
def test_committed_number_of_the_quickest_configuration_reproduces(tmp_path: Path) -> None:
    results = committed()
    entry = min(results["configurations"], key=lambda entry: statistics.median(entry["seconds"]))
    assert_reproduces(entry, 0, tmp_path)


@pytest.mark.slow
def test_one_seed_of_the_best_configuration_reproduces_its_number(tmp_path: Path) -> None:
    configuration, index = study.best_run(committed())
    run = assert_reproduces(configuration, index, tmp_path)
    # The target, every length to 200, is the committed number exactly; the scan to 1 000 ends where
    # the errors accumulated over hundreds of steps pass half a count, which float rounding of another
    # machine or PyTorch version can move by a few lengths.
    full = configuration["longest_counted_length_full_scan"][index]
    assert run["longest_counted_length"] == pytest.approx(full, rel=0.05)


def assert_reproduces(entry: dict, index: int, out_dir: Path) -> dict:
    """Run the entry's command with its seed `index`: the run's JSON, its number to the target checked."""
    argv = [
        *shlex.split(entry["command"])[2:],
        "--seed",
        str(entry["seeds"][index]),
        "--out-dir",
        str(out_dir),
    ]
    assert binary_counting.main([*argv, "--quiet", "--no-figures"]) == 0
    run = json.loads((out_dir / binary_counting.JSON_NAME).read_text())
    target = entry["target_length"]
    assert min(run["longest_counted_length"], target) == entry["longest_counted_length"][index]
    return run


def readme_words() -> str:
    """The README with every run of white space one space, so that a sentence is found across lines."""
    return " ".join((ROOT / "README.md").read_text().split())


def test_readme_reading_matches_the_committed_study() -> None:
    """The README's sentences about the study, checked against its JSON."""
    results = committed()
    entries = {entry["name"]: entry for entry in results["configurations"]}
    medians = {name: statistics.median(entry["longest_counted_length"]) for name, entry in entries.items()}
    readme = readme_words()
    assert sum(sum(entry["seconds"]) for entry in entries.values()) < 35 * 60  # "about 30 minutes"
    # The first block: changes to the training hold to about the training length.
    assert medians["published"] == 0
    assert medians["mixed lengths, every-step target"] < medians["mixed lengths"] < 20
    first = [name for name, _ in study.FIRST_BLOCK]
    assert max(first, key=medians.get) == "+ noaf (unbounded h)" and 20 < medians["+ noaf (unbounded h)"] < 25
    for name in ("+ noaf, forget bias 5", "+ noaf, hidden size 4, 10 epochs"):
        assert medians[name] < medians["+ noaf (unbounded h)"]
    for name in first[1:]:
        assert f"median {medians[name]:g}" in readme, name
    # The second block, lever by lever.
    baseline = medians["every-step, lr 1e-2, batch 32, 20 epochs"]
    assert baseline <= 21 and f"counts to {baseline:g}" in readme
    for name in ("+ readout c", "+ readout c, hidden size 1"):
        assert baseline < medians[name] < 40 and f"median {medians[name]:g}" in readme
    leaking = {key: study.median_inside(entries["+ readout c, hidden size 1"], key) for key in INSIDE_KEYS}
    assert leaking["forget_gate_min"] < 0.95 and leaking["count_per_zero_last"] < -0.5  # "takes … off"
    assert leaking["count_per_one_last"] < 0.9 < leaking["count_per_one_first"]
    for sentence in (
        f"smallest f over 1 000 steps is {leaking['forget_gate_min']:.2f}",
        f"a 1 adds only {leaking['count_per_one_last']:.2f}",
        f"a 0 takes {-leaking['count_per_zero_last']:.2f} off",
    ):
        assert sentence in readme, sentence
    no_leak = [medians["+ readout c, nfg"], medians["+ readout c, forget bias 20"]]
    # "about doubles", "still far from 200"
    assert min(no_leak) / medians["+ readout c"] > 1.8 and max(no_leak) < 100
    assert "(`nfg` median {:g}, `--forget-bias 20` median {:g})".format(*no_leak) in readme
    for name in ("+ readout c, hidden size 1, forget bias 20", "+ readout c, hidden size 1, nfg"):
        entry = entries[name]
        assert entry["longest_counted_length"] == [200] * len(entry["seeds"]), name  # "every seed"
        assert statistics.median(entry["longest_counted_length_full_scan"]) == 1000
        assert statistics.median(entry["accuracy_at_max_test_length"]) == 1.0
        full = entry["longest_counted_length_full_scan"]
        assert f"{min(full):,}–{max(full):,}".replace(",", " ") in readme
    penalized = entries["+ readout c, nfg, recurrent L1 1e-3"]
    lengths = penalized["longest_counted_length"]
    assert lengths.count(200) == 4 and min(lengths) == 10 and "4 of 5 seeds" in readme
    assert f"median {statistics.median(penalized['longest_counted_length_full_scan']):g} to 1 000" in readme
    assert f"One seed, though, counts only to {min(lengths)}." in readme
    largest = {name: study.median_inside(entries[name], "largest_recurrent_weight") for name in entries}
    assert largest["+ readout c, nfg, recurrent L1 1e-3"] < 0.015 < 0.5 < largest["+ readout c, nfg"]
    # Why 20 units fail: the numbers of the inside table, and what they say.
    assert study.inside_table(results, study.INSIDE_COMPARED) in (ROOT / "README.md").read_text()
    twenty = entries["+ readout c, nfg"]
    saturated = [study.median_inside(twenty, f"saturated_units_{end}") for end in ("first", "last")]
    assert 0.25 < saturated[0] < 0.4 < 0.8 < saturated[1]  # "a third", "most"
    zero = [study.median_inside(twenty, f"count_per_zero_{end}") for end in ("first", "last")]
    assert 2 * zero[0] < zero[1]

    # "what a bit adds … drifts … by at least 0.004 … against at most 0.0022 in every one-unit counter"
    def drift(inside: dict) -> float:
        return max(
            abs(inside[f"count_per_{bit}_last"] - inside[f"count_per_{bit}_first"]) for bit in ("one", "zero")
        )

    for name in ("+ readout c, nfg", "+ readout c, forget bias 20"):
        assert min(drift(inside) for inside in entries[name]["inside"]) >= 0.004, name
    for name in ("+ readout c, hidden size 1, nfg", "+ readout c, hidden size 1, forget bias 20"):
        assert max(drift(inside) for inside in entries[name]["inside"]) <= 0.0022, name
        assert all(inside["saturated_units_first"] == 1.0 for inside in entries[name]["inside"]), name
    # The unbounded h of the first block: its median accuracy at 30 and 40 bits.
    noaf = [
        statistics.median(a[n - 1] for a in entries["+ noaf (unbounded h)"]["accuracy_by_length"])
        for n in (30, 40)
    ]
    assert "is {:.0%} at 30 bits and {:.0%} at 40".format(*noaf).replace("%", " %") in readme
    # "20 epochs: 6 260 steps" at batch 32.
    assert f"20 epochs: {20 * -(-10000 // 32):,} steps".replace(",", " ") in readme
    error = study.median_inside(twenty, "error_at_end")
    assert 2 < error < 10  # "an error of several counts"
    cut = {key: study.median_inside(penalized, key) for key in INSIDE_KEYS}
    assert 0.5 < cut["saturated_units_last"] < 0.8  # "most units still saturate"
    assert abs(cut["count_per_zero_last"]) < 0.001
    stated = [
        f"(`nfg`, 20 units: {saturated[0]:.0%})".replace("%", " %"),
        f"after 1 000 most ({saturated[1]:.0%})".replace("%", " %"),
        f"the median error is {error:.2f}",
        f"saturate ({cut['saturated_units_last']:.0%})".replace("%", " %"),
        f"W_h* (at most {cut['largest_recurrent_weight']:.2f})",
        f"a 0 adds {cut['count_per_zero_last']:.4f} at the end",
        f"drives the largest |W_h*| to {largest['+ readout c, nfg, recurrent L1 1e-3']:.2f}",
        f"{largest['+ readout c, nfg']:.2f} without it",
    ]
    for sentence in stated:
        assert sentence in readme, sentence


def test_readme_inside_the_best_run_is_its_trace() -> None:
    best, model = committed_best()
    assert (best["name"], best["seed"]) == ("+ readout c, hidden size 1, forget bias 20", 0)
    perfect = sum(
        (within, full) == (200, 1000)
        for entry in committed()["configurations"]
        for within, full in zip(
            entry["longest_counted_length"], entry["longest_counted_length_full_scan"], strict=True
        )
    )
    assert f"the first of the {perfect} runs that count to 200 and to 1 000" in readme_words()
    reading = study.one_unit_reading(model)
    readme = readme_words()

    def shown(value: float, digits: int) -> str:
        return f"{value:.{digits}f}".replace("-", "−")

    assert reading["forget_gate_min"] == 1.0  # "f is 1 at every step"
    assert model.lstm.cells[0].b_f.item() == pytest.approx(20.0, abs=1e-6)  # "its bias is still 20.0"
    assert (
        f"{shown(reading['write_per_one'], 3)} at every 1 (± {reading['write_per_one_spread']:.1g})" in readme
    )
    assert f"and {reading['write_per_zero']:.1g} at a 0" in readme
    assert f"c × ({shown(reading['head_weight'], 3)})" in readme
    assert f"each 1 adds {shown(reading['count_per_one'], 4)} to the prediction" in readme
    assert f"off by {reading['error_at_end']:.2f}" in readme
    assert f"≥ 0.99 from step {reading['saturated_from_step']} on" in readme
    after = (
        shown(reading["h_after_one"], 3),
        shown(reading["h_after_zero"], 3),
        f"{reading['h_spread']:.3f}",
    )
    assert "({} after a 1, {} after a 0, each within {} from step 21".format(*after) in readme
    assert f"up to {reading['largest_recurrent_weight']:.2f})" in readme
    # A 1 is counted as one, a 0 as nothing, and the state saturates within the training lengths.
    assert abs(reading["count_per_one"] - 1) < 0.01 and abs(reading["write_per_zero"]) < 0.01
    assert reading["saturated_from_step"] <= 20
    # "The best run's |c| passes 2.65 (|tanh c| = 0.99) after 4 ones."
    ones = next(n for n in range(1, 20) if n * abs(reading["write_per_one"]) >= math.atanh(0.99))
    assert ones == 4 and f"passes 2.65 (|tanh c| = 0.99) after {ones} ones" in readme
    # "in float32 σ(20) rounds to exactly 1, so … f(1 − f) is 0"
    one = torch.sigmoid(torch.tensor(20.0))
    assert one == 1.0 and one * (1 - one) == 0


def test_the_command_line_builds_the_study_s_config():
    quick = study.parse_args(["--quick", "--seeds", "1"])
    assert quick == study.Config(quick=True, seeds=[1]) and quick.out_dir == study.QUICK_OUT_DIR
    assert study.parse_args([]) == study.Config() and study.Config().out_dir == Path("figures")
