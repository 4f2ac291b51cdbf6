"""Runs that are never lost, corrupted or faked, for both training scripts.

Default output outside the tracked files; weights that rebuild the model; --resume after kill -9
giving the very epochs of an uninterrupted run; divergence; strict JSON; SIGTERM; two runs into one
folder; bad output folders, seeds and thread counts as usage errors; write errors in one line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from processes import interrupt_at_call, wait_until

import binary_counting
import sine_wave_prediction
from experiment_utils import MAX_SEED, load_checkpoint, load_model

REPOSITORY = Path(__file__).resolve().parent.parent
TINY = {
    binary_counting: [
        *("--train-samples", "64", "--valid-samples", "32", "--seq-len", "5"),
        *("--hidden-size", "4", "--lengths", "5", "7", "--quiet", "--no-figures"),
    ],
    sine_wave_prediction: ["--window", "8", "--hidden-size", "4", "--batch-size", "64", "--quiet"],
}
# Learning rates at which each tiny run diverges in its first epoch.
DIVERGING = {binary_counting: ["--lr", "1e30"], sine_wave_prediction: ["--lr", "1e6"]}
SCRIPTS = pytest.mark.parametrize("script", list(TINY), ids=lambda script: script.__name__)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(script, out_dir: Path, *extra: str) -> list[str]:
    return [*TINY[script], "--out-dir", str(out_dir), *extra]


# A tiny run can finish all its epochs between two looks at its JSON: a run that must be killed part-way
# waits this long after writing each epoch's files (its numbers are the script's own).
PAUSED = (
    "import sys, time, {name}\n"
    "write = {name}.write_outputs\n"
    "def paused(*args, **kwargs):\n    write(*args, **kwargs)\n    time.sleep(1)\n"
    "{name}.write_outputs = paused\n"
    "sys.exit({name}.main(sys.argv[1:]))"
)


def start(script, *argv: str, cwd: Path = REPOSITORY, paused: bool = False) -> subprocess.Popen:
    """The script as a user starts it, on one thread like the tests in this process; `paused`: with a
    pause after each epoch's files (PAUSED)."""
    command = ["-c", PAUSED.format(name=script.__name__)] if paused else [f"{script.__name__}.py"]
    return subprocess.Popen(
        [sys.executable, *command, *argv],
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def strict_json(path: Path) -> dict:
    """The file as JSON, refusing NaN and Infinity, which strict JSON readers refuse too."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{path.name} holds {constant}: not strict JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def without_seconds(epochs: list[dict]) -> list[dict]:
    """Every metric of every epoch; wall time is the one field that differs between identical runs."""
    return [{key: value for key, value in epoch.items() if key != "seconds"} for epoch in epochs]


def wait_for_epochs(process: subprocess.Popen, json_path: Path, count: int = 1) -> None:
    def ready() -> bool:
        return json_path.exists() and len(strict_json(json_path)["epochs"]) >= count

    wait_until(process, ready, f"{count} epoch(s)")


def partial_files(directory: Path) -> list[str]:
    return [name for name in os.listdir(directory) if name.endswith(".partial")]


# ---------------------------------------------------------------------------------------------------
# 1. Default output outside the tracked files


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_trial_run_in_a_clone_leaves_git_status_clean(tmp_path: Path, monkeypatch) -> None:
    # A copy of the working tree's tracked files (committed or not), so the test checks this code.
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPOSITORY, capture_output=True, text=True, check=True
    )
    clone = tmp_path / "clone"
    for name in filter(None, listed.stdout.split("\0")):
        if (REPOSITORY / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPOSITORY / name, clone / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "clone"]):
        subprocess.run([*git, *command], cwd=clone, check=True, capture_output=True)

    # Both scripts, no --out-dir: their defaults, relative to the clone. They run in this process,
    # from the same code, to spare a second start of Python and torch.
    monkeypatch.chdir(clone)
    assert binary_counting.main([*TINY[binary_counting], "--epochs", "1"]) == 0
    assert sine_wave_prediction.main([*TINY[sine_wave_prediction], "--epochs", "1"]) == 0
    for script, folder in (
        (binary_counting, "runs/binary_counting"),
        (sine_wave_prediction, "runs/sine_wave"),
    ):
        assert (clone / folder / script.JSON_NAME).is_file()
        assert (clone / folder / script.WEIGHTS_NAME).is_file()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True)
    assert status.stdout == "", status.stdout


@SCRIPTS
def test_the_default_folder_is_under_runs(script) -> None:
    assert script.parse_args([]).out_dir == Path(script.DEFAULT_OUT_DIR)
    assert Path(script.DEFAULT_OUT_DIR).parts[0] == "runs"


# ---------------------------------------------------------------------------------------------------
# 2. Weights: saved after every epoch, loadable with weights_only, rebuilding the very model

WHOLE_RUN_EPOCHS = 3


@pytest.fixture(scope="module")
def whole_runs(tmp_path_factory) -> dict:
    """One uninterrupted tiny run per script, made when first asked for: script → (args, result)."""
    runs = {}

    def run(script):
        if script not in runs:
            out_dir = tmp_path_factory.mktemp(f"whole_{script.__name__}")
            args = script.parse_args(tiny(script, out_dir, "--epochs", str(WHOLE_RUN_EPOCHS)))
            runs[script] = (args, script.train(args))
        return runs[script]

    return run


def test_saved_weights_reproduce_the_validation_predictions(whole_runs) -> None:
    args, result = whole_runs(binary_counting)
    weights = args.out_dir / binary_counting.WEIGHTS_NAME
    state = torch.load(weights, weights_only=True)
    assert state.keys() == result.model.state_dict().keys()

    model = load_model(weights)
    predictions = binary_counting.predict(model, result.valid_dataset, binary_counting.EVALUATION_BATCH_SIZE)
    assert torch.equal(predictions, result.predictions_after)


def test_saved_weights_reproduce_the_forecast(whole_runs) -> None:
    args, result = whole_runs(sine_wave_prediction)
    model = load_model(args.out_dir / sine_wave_prediction.WEIGHTS_NAME)
    seed_window = sine_wave_prediction.make_series()[: sine_wave_prediction.TRAIN_POINTS][-args.window :]
    forecast = sine_wave_prediction.forecast(model, seed_window, sine_wave_prediction.HELD_OUT)
    assert torch.equal(forecast, result.forecasts[WHOLE_RUN_EPOCHS - 1])
    assert forecast.tolist() == strict_json(args.out_dir / sine_wave_prediction.JSON_NAME)["forecast"]


def test_saved_weights_rebuild_the_torch_cell_too(tmp_path: Path) -> None:
    args = sine_wave_prediction.parse_args(
        tiny(sine_wave_prediction, tmp_path, "--epochs", "1", "--cell", "torch")
    )
    result = sine_wave_prediction.train(args)
    model = load_model(tmp_path / sine_wave_prediction.WEIGHTS_NAME)
    assert isinstance(model.lstm, torch.nn.LSTM)
    for name, value in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name


def test_weights_are_written_after_every_epoch(tmp_path: Path, monkeypatch) -> None:
    saved = []
    save_torch = sine_wave_prediction.save_torch

    def recording_save_torch(data, path):
        saved.append(Path(path).name)
        save_torch(data, path)

    monkeypatch.setattr(sine_wave_prediction, "save_torch", recording_save_torch)
    sine_wave_prediction.train(
        sine_wave_prediction.parse_args(tiny(sine_wave_prediction, tmp_path, "--epochs", "2"))
    )
    after_every_epoch = [sine_wave_prediction.WEIGHTS_NAME, sine_wave_prediction.CHECKPOINT_NAME] * 2
    # and once more at the end, beside the JSON that then holds the forecasts of unseen signals
    assert saved == [*after_every_epoch, sine_wave_prediction.WEIGHTS_NAME]


# ---------------------------------------------------------------------------------------------------
# 3. --resume


def test_kill_9_then_resume_gives_the_epochs_of_an_uninterrupted_run(tmp_path: Path, whole_runs) -> None:
    # binary_counting restores the most: Adam's moments, the data and the shuffling generators,
    # and after the last epoch the data generator's draws of the length-generalization sets.
    script = binary_counting
    killed = tmp_path / "killed"
    process = start(script, *tiny(script, killed, "--epochs", str(WHOLE_RUN_EPOCHS)), paused=True)
    try:
        wait_for_epochs(process, killed / script.JSON_NAME)
        process.kill()
        process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    finished = len(strict_json(killed / script.JSON_NAME)["epochs"])
    assert 1 <= finished < WHOLE_RUN_EPOCHS

    # No settings but the folder: they come from the run.
    assert script.main(["--out-dir", str(killed), "--resume", "--quiet"]) == 0
    assert_same_run(script, killed, whole_runs(script)[0].out_dir)


def test_a_run_stopped_in_its_second_epoch_resumes_to_the_uninterrupted_run(
    tmp_path: Path, whole_runs, monkeypatch
) -> None:
    script = sine_wave_prediction
    with monkeypatch.context() as patch:
        interrupt_at_call(patch, script, "forecast", 2)  # in the second epoch
        assert script.main(tiny(script, tmp_path, "--epochs", str(WHOLE_RUN_EPOCHS))) == 130
    assert script.main(["--out-dir", str(tmp_path), "--resume", "--quiet"]) == 0
    assert_same_run(script, tmp_path, whole_runs(script)[0].out_dir)


def assert_same_run(script, resumed_dir: Path, uninterrupted_dir: Path) -> None:
    """Every metric of every epoch, every other result, the settings and the weights are equal."""
    resumed = strict_json(resumed_dir / script.JSON_NAME)
    uninterrupted = strict_json(uninterrupted_dir / script.JSON_NAME)
    assert without_seconds(resumed["epochs"]) == without_seconds(uninterrupted["epochs"])
    for key in uninterrupted.keys() - {"config", "epochs"}:
        assert resumed[key] == uninterrupted[key], key
    for config in (resumed["config"], uninterrupted["config"]):
        del config["out_dir"]
    assert resumed["config"] == uninterrupted["config"]
    resumed_weights = torch.load(resumed_dir / script.WEIGHTS_NAME, weights_only=True)
    for name, value in torch.load(uninterrupted_dir / script.WEIGHTS_NAME, weights_only=True).items():
        assert torch.equal(resumed_weights[name], value), name


def test_resume_with_contradicting_settings_is_a_usage_error(whole_runs, capsys) -> None:
    out_dir = whole_runs(binary_counting)[0].out_dir
    with pytest.raises(SystemExit) as exit_info:
        binary_counting.parse_args(["--out-dir", str(out_dir), "--resume", "--epochs", "20"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "usage:" in error and f"--epochs 20 (the run has {WHOLE_RUN_EPOCHS})" in error


def test_resume_takes_the_stored_settings_and_accepts_the_same_ones(whole_runs) -> None:
    out_dir = whole_runs(binary_counting)[0].out_dir
    argv = [
        "--out-dir",
        str(out_dir),
        "--resume",
        "--epochs",
        str(WHOLE_RUN_EPOCHS),
        "--lengths",
        "7",
        "5",
        "5",
    ]
    args = binary_counting.parse_args(argv)
    assert (args.epochs, args.hidden_size, args.lengths, args.seq_len) == (WHOLE_RUN_EPOCHS, 4, [5, 7], 5)


def test_resume_without_a_run_is_a_usage_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        sine_wave_prediction.parse_args(["--out-dir", str(tmp_path), "--resume"])
    assert exit_info.value.code == 2
    assert "no run to resume" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def damage(checkpoint: dict, script, kind: str) -> object:
    """The checkpoint as an older format, a foreign file or an edited run would leave it."""
    if kind == "not a dict":
        return [checkpoint]
    if kind == "config not a dict":
        return {**checkpoint, "config": "hidden_size=4"}
    if kind == "no random state":
        return {key: value for key, value in checkpoint.items() if key != "random"}
    if kind == "no script value":
        return {key: value for key, value in checkpoint.items() if key != script.RESUME_KEYS.extras[0]}
    if kind == "a generator missing":
        generators = dict(checkpoint["random"]["generators"])
        generators.pop(script.RESUME_KEYS.generators[0])
        return {**checkpoint, "random": {**checkpoint["random"], "generators": generators}}
    if kind == "weights unlike the config":
        return {**checkpoint, "config": {**checkpoint["config"], "hidden_size": 5}}
    if kind == "settings no model has":
        return {**checkpoint, "config": {**checkpoint["config"], "variant": "gru"}}
    if kind == "optimizer at another lr":
        optimizer = checkpoint["optimizer"]
        groups = [{**optimizer["param_groups"][0], "lr": 5.0}]
        return {**checkpoint, "optimizer": {**optimizer, "param_groups": groups}}
    if kind == "optimizer state for no parameter":
        optimizer = checkpoint["optimizer"]
        state = {str(key): value for key, value in optimizer["state"].items()} | {"momentum": {}}
        return {**checkpoint, "optimizer": {**optimizer, "state": state}}
    if kind == "weights of another dtype":
        return {**checkpoint, "model": {name: value.double() for name, value in checkpoint["model"].items()}}
    if kind == "more epochs than its settings":
        return {**checkpoint, "config": {**checkpoint["config"], "epochs": 1}}
    if kind == "a count that is a string":
        return {**checkpoint, "config": {**checkpoint["config"], "epochs": "3"}}
    if kind == "a negative learning rate":
        return {**checkpoint, "config": {**checkpoint["config"], "lr": -1.0}}
    if kind == "a flag that is a number":
        return {**checkpoint, "config": {**checkpoint["config"], "no_figures": 1}}
    if kind == "history out of order":
        return {**checkpoint, "history": checkpoint["history"][::-1]}
    if kind == "optimizer of another model":
        optimizer = checkpoint["optimizer"]
        groups = [{**optimizer["param_groups"][0], "params": [0]}]
        return {**checkpoint, "optimizer": {**optimizer, "param_groups": groups}}
    raise AssertionError(kind)


DAMAGES = [
    "not a dict",
    "config not a dict",
    "no random state",
    "no script value",
    "a generator missing",
    "weights unlike the config",
    "settings no model has",
    "history out of order",
    "optimizer of another model",
    "optimizer at another lr",
    "optimizer state for no parameter",
    "weights of another dtype",
    "more epochs than its settings",
    "a count that is a string",
    "a negative learning rate",
    "a flag that is a number",
]


@SCRIPTS
@pytest.mark.parametrize("kind", DAMAGES)
def test_resume_of_a_damaged_checkpoint_is_a_usage_error(script, kind, whole_runs, tmp_path, capsys) -> None:
    source = whole_runs(script)[0].out_dir
    out_dir = tmp_path / "run"
    shutil.copytree(source, out_dir)
    checkpoint_path = out_dir / script.CHECKPOINT_NAME
    torch.save(damage(load_checkpoint(checkpoint_path), script, kind), checkpoint_path)
    before = {path.name: path.read_bytes() for path in out_dir.iterdir()}
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--out-dir", str(out_dir), "--resume", "--quiet"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--resume:" in error and "start a new run without --resume" in error, error
    assert {path.name: path.read_bytes() for path in out_dir.iterdir()} == before  # nothing written


def test_resume_of_a_finished_run_changes_no_result(whole_runs) -> None:
    out_dir = whole_runs(binary_counting)[0].out_dir
    before = strict_json(out_dir / binary_counting.JSON_NAME)
    assert binary_counting.main(["--out-dir", str(out_dir), "--resume", "--quiet"]) == 0
    assert strict_json(out_dir / binary_counting.JSON_NAME) == before


def test_resume_after_a_kill_between_the_last_checkpoint_and_the_json(tmp_path: Path) -> None:
    script = sine_wave_prediction
    assert script.main(tiny(script, tmp_path, "--epochs", "2")) == 0
    complete = strict_json(tmp_path / script.JSON_NAME)
    # What a kill after the last checkpoint but before the JSON leaves: the JSON one epoch behind.
    (tmp_path / script.JSON_NAME).write_text(json.dumps({**complete, "epochs": complete["epochs"][:1]}))
    assert script.main(["--out-dir", str(tmp_path), "--resume", "--quiet"]) == 0
    assert strict_json(tmp_path / script.JSON_NAME) == complete


# ---------------------------------------------------------------------------------------------------
# 4. Divergence and strict JSON


@SCRIPTS
def test_a_diverging_run_stops_with_one_line_and_strict_json(script, tmp_path: Path, capsys) -> None:
    status = script.main(tiny(script, tmp_path, "--epochs", "3", *DIVERGING[script]))
    captured = capsys.readouterr()
    assert status not in (0, 2)
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "epoch 0" in lines[0] and "nan" in lines[0].lower() and "--lr" in lines[0]
    assert "| 0 |" in captured.out, "the table of the epochs so far"

    results = strict_json(tmp_path / script.JSON_NAME)
    assert [epoch["epoch"] for epoch in results["epochs"]] == [0], "stopped after the epoch it happened in"
    assert results["epochs"][0]["train_loss"] is None  # NaN, written as null

    with pytest.raises(SystemExit) as exit_info:  # and the diverged run is no run to resume
        script.parse_args(["--out-dir", str(tmp_path), "--resume"])
    assert exit_info.value.code == 2
    assert "diverged" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# 5. SIGTERM stops a run as Ctrl-C does


def test_sigterm_stops_like_ctrl_c_with_status_143(tmp_path: Path) -> None:
    script = sine_wave_prediction  # the stop itself is shared code; binary_counting's Ctrl-C is tested
    process = start(script, *tiny(script, tmp_path, "--epochs", "10000"))
    try:
        wait_for_epochs(process, tmp_path / script.JSON_NAME)
        process.terminate()
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    finished = int(lines[0].split("stopped after ")[1].split()[0])
    assert lines[0].startswith("Terminated")
    rows = [line for line in stdout.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == finished, "the table holds every finished epoch"

    # Every file holds the same finished epochs.
    epochs = strict_json(tmp_path / script.JSON_NAME)["epochs"]
    checkpoint = load_checkpoint(tmp_path / script.CHECKPOINT_NAME)
    assert [epoch["epoch"] for epoch in epochs] == list(range(finished))
    assert without_seconds(checkpoint["history"]) == without_seconds(epochs)
    weights = torch.load(tmp_path / script.WEIGHTS_NAME, weights_only=True)
    assert all(torch.equal(weights[name], value) for name, value in checkpoint["model"].items())
    assert not partial_files(tmp_path)


# ---------------------------------------------------------------------------------------------------
# 6. Two runs into one folder


def test_two_runs_into_one_folder_both_finish_and_leave_whole_files(tmp_path: Path) -> None:
    # Both write sine_loss.png, the weights, the checkpoint and the JSON after every epoch: under the
    # one temporary name each file once had, one run renamed the other's half-written file away.
    argv = tiny(sine_wave_prediction, tmp_path, "--epochs", "2", "--plot-epochs")
    processes = [start(sine_wave_prediction, *argv, "--seed", seed) for seed in ("0", "1")]
    try:
        outputs = [process.communicate(timeout=180) for process in processes]
    finally:
        for process in processes:
            process.kill()
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0 and "Traceback" not in stderr, stderr
    results = strict_json(tmp_path / sine_wave_prediction.JSON_NAME)
    assert results["config"]["seed"] in (0, 1) and len(results["epochs"]) == 2
    load_checkpoint(tmp_path / sine_wave_prediction.CHECKPOINT_NAME)
    load_model(tmp_path / sine_wave_prediction.WEIGHTS_NAME)
    assert not partial_files(tmp_path)


# ---------------------------------------------------------------------------------------------------
# 7. Bad output folders and values: usage errors before training; write errors in one line


def bad_out_dirs(tmp_path: Path) -> dict[str, Path]:
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    cases = {"a file": a_file, "below a file": a_file / "out"}
    if Path("/proc/self").is_dir():  # no one, root included, can create a folder in /proc
        cases["not creatable"] = Path("/proc/no_such_folder/out")
    return cases


@SCRIPTS
@pytest.mark.parametrize("case", ["a file", "below a file", "not creatable"])
def test_unusable_out_dir_is_a_usage_error(script, case: str, tmp_path: Path, capsys) -> None:
    cases = bad_out_dirs(tmp_path)
    if case not in cases:
        pytest.skip("needs Linux's /proc")
    with pytest.raises(SystemExit) as exit_info:
        script.main(tiny(script, cases[case], "--epochs", "1"))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("usage:") and "--out-dir" in error and str(cases[case]) in error
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file"]


@SCRIPTS
@pytest.mark.parametrize(
    ("option", "value"),
    [("--seed", str(MAX_SEED + 1)), ("--threads", str((os.cpu_count() or 1) + 1))],
)
def test_values_the_generators_or_the_machine_cannot_take_are_usage_errors(
    script, option: str, value: str, tmp_path: Path, capsys
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        script.main(tiny(script, tmp_path / "out", option, value))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert option in error and value in error and "expected a whole number from" in error
    assert not (tmp_path / "out").exists()


@SCRIPTS
def test_a_write_error_is_one_line(script, tmp_path: Path, capsys) -> None:
    (tmp_path / script.JSON_NAME).mkdir()  # the JSON cannot replace a folder of that name
    assert script.main(tiny(script, tmp_path, "--epochs", "2")) == 1
    error = capsys.readouterr().err
    assert error.strip().splitlines() == [
        f"error: could not write {tmp_path / script.JSON_NAME}: Is a directory"
    ], error
    assert not partial_files(tmp_path)
