"""The benchmark runs end to end and reports every model; it asserts nothing about timings."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from lstm_cell import VARIANTS

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_lstm.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("bench_lstm", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_benchmark_runs_and_writes_every_model(tmp_path):
    json_path = tmp_path / "bench.json"
    tiny = [
        "--sizes",
        "2,3,1,4",
        "--repeats",
        "1",
        "--min-time",
        "0",
        "--threads",
        "1",
        "--skip-epochs",
        "--skip-memory",
        "--skip-demo",
    ]
    command = [sys.executable, str(SCRIPT), "--quick", *tiny, "--json", str(json_path)]
    run = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr

    models = ["LSTM standard, auto (bptt)", "LSTM standard, autograd"]
    for variant in list(VARIANTS)[1:]:  # batch 2 × hidden 4: small enough for the hand-written backward
        models += [f"LSTM {variant}, auto (bptt, local derivatives by autograd)", f"LSTM {variant}, autograd"]
    models += ["loop over torch.nn.LSTMCell", "torch.nn.LSTM"]
    for name in models:
        assert f"| (2, 3, 1, 4) | {name} |" in run.stdout
    assert "logical cores, PyTorch" in run.stdout
    results = json.loads(json_path.read_text())
    (size,) = results["sizes"]
    assert (size["batch"], size["seq_len"], size["input_size"], size["hidden_size"]) == (2, 3, 1, 4)
    assert list(size["models"]) == models
    assert size["models"]["torch.nn.LSTM"]["ratio_to_torch"] == 1
    assert all(timing["median_ms"] > 0 for timing in size["models"].values())
    assert results["demo"] is None and results["memory"] == []


def test_peak_memory_is_measured_for_a_model_and_tabulated():
    benchmark = load_benchmark()
    size = (2, 3000, 1, 32)  # the output alone is 0.7 MiB
    megabytes = {
        mode: benchmark.peak_megabytes("LSTM standard", mode, size, 1) for mode in ("no_grad", "training")
    }
    assert 0 <= megabytes["no_grad"] < megabytes["training"]
    row = {"model": "LSTM standard", "no_grad_mib": 10.0, "training_mib": 30.0}
    row |= {"no_grad_ratio_to_torch": 1.25, "training_ratio_to_torch": 0.5}
    assert "| LSTM standard | 10 (1.25×) | 30 (0.50×) |" in benchmark.memory_table([row])


def test_epoch_timing_runs_each_script_with_both_cells_and_skips_a_missing_one(monkeypatch, capsys):
    benchmark = load_benchmark()
    calls = []

    def parse_args(argv):
        return argv

    def train(argv):
        calls.append(argv)

    monkeypatch.setitem(sys.modules, "binary_counting", SimpleNamespace(parse_args=parse_args, train=train))
    monkeypatch.setitem(sys.modules, "sine_wave_prediction", None)  # as if the file were not there

    results = benchmark.time_epochs(SimpleNamespace(epoch_repeats=2))

    assert [result["experiment"] for result in results] == ["binary_counting"]
    assert [argv[argv.index("--cell") + 1] for argv in calls] == ["custom", "torch", "torch", "custom"]
    assert all(argv[:3] == ["--epochs", "1", "--quiet"] for argv in calls)
    assert "Skipped the epoch of sine_wave_prediction" in capsys.readouterr().err


def test_demo_timing_runs_the_demo_as_a_newcomer_would(monkeypatch):
    benchmark = load_benchmark()
    calls = []
    monkeypatch.setattr(
        benchmark.subprocess, "run", lambda command, **options: calls.append((command, options))
    )
    result = benchmark.time_demo()
    ((command, options),) = calls
    assert command[0] == sys.executable and Path(command[1]).name == "demo_script.py"
    assert command[2:4] == ["--quiet", "--out-dir"] and len(command) == 5
    assert options["check"] and options["cwd"] == ROOT
    assert result["command"] == "python demo_script.py" and result["seconds"] >= 0


@pytest.mark.parametrize(
    "argv",
    [["--skip-demo"], ["--sizes", "16,20,1,20"], ["--quick"], ["--optimizer", "adam"], ["--threads", "2"]],
)
def test_readme_needs_every_part_at_both_published_sizes(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        load_benchmark().parse_args(["--readme", str(tmp_path / "README.md"), *argv])
    assert stop.value.code == 2 and "--readme writes the page of" in capsys.readouterr().err
    assert not (tmp_path / "README.md").exists()
