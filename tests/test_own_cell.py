"""A cell of your own, from the command line to the variants study: --variant SPEC and check_cell.py.

The cell is the README's example ("Write your own cell"), written to a file as the README says.
"""

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import binary_counting
import check_cell
import compare_variants
import demo_script
import lstm_cell
import sine_wave_prediction
from experiment_utils import load_cell_class, load_model

ROOT = Path(__file__).resolve().parent.parent
SPEC = "my_cells.py:LayerNormLSTMCell"
BINARY_SETTINGS = ["--epochs", "1", "--train-samples", "64", "--valid-samples", "32"]  # a second a run
SINE_SETTINGS = ["--epochs", "1", "--batch-size", "64", "--window", "10"]
TINY_BINARY, TINY_SINE = [*BINARY_SETTINGS, "--quiet"], [*SINE_SETTINGS, "--quiet"]
# The same settings as configurations, for the demo and the variants study.
TINY_CONFIGS = {
    "binary_counting": {"epochs": 1, "train_samples": 64, "valid_samples": 32},
    "sine_wave": {"epochs": 1, "batch_size": 64, "window": 10},
}
WRONG_GRADIENT = """
import torch
from lstm_cell import LSTMCell


class WrongTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a):
        y = torch.tanh(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (1 - y)  # tanh' is 1 - y²


class WrongGradientCell(LSTMCell):
    def candidate(self, a):
        return WrongTanh.apply(a["g"])


class RaisingCell(LSTMCell):
    def candidate(self, a):
        raise RuntimeError("no candidate today")


class DropoutCell(LSTMCell):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.drop = torch.nn.Dropout(0.5)

    def candidate(self, a):
        return self.drop(torch.tanh(a["g"]))


class ExitingCell(LSTMCell):
    def candidate(self, a):
        raise SystemExit(0)  # not a silent exit 0 with nothing trained


class SmallOnlyCell(LSTMCell):
    def __init__(self, input_size, hidden_size, *args, **options):
        if hidden_size > 4:
            raise RuntimeError("only small cells today")
        super().__init__(input_size, hidden_size, *args, **options)


class OwnForwardCell(LSTMCell):
    def forward(self, x, state=None):
        return super().forward(x, state)


class HalvedForwardCell(LSTMCell):
    def forward(self, x, state=None):
        h, c = super().forward(x, state)
        return 0.5 * h, c


not_a_cell = 3
"""


def readme_cell() -> str:
    """The README's example cell: the first python block of its "Write your own cell" section."""
    section = (ROOT / "README.md").read_text().split("## Write your own cell", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


pytestmark = pytest.mark.usefixtures("restore_threads")  # tests/conftest.py


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A working folder holding my_cells.py (the README's) and odd_cells.py."""
    (tmp_path / "my_cells.py").write_text(readme_cell())
    (tmp_path / "odd_cells.py").write_text(WRONG_GRADIENT)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_cell_trains_resumes_and_loads_again_in_a_fresh_process(folder, capsys):
    assert binary_counting.main([*TINY_BINARY, "--variant", SPEC, "--out-dir", "run"]) == 0
    assert f"LSTM: the {SPEC} cell, trained by autograd" in capsys.readouterr().out
    results = json.loads((folder / "run" / binary_counting.JSON_NAME).read_text())
    config = results["config"]
    assert config["variant"] == SPEC and results["lstm_path"] == "autograd"
    assert config["cell_class"] == f"{folder / 'my_cells.py'}:LayerNormLSTMCell"
    assert binary_counting.main(["--resume", "--out-dir", "run", "--quiet"]) == 0
    assert json.loads((folder / "run" / binary_counting.JSON_NAME).read_text())["epochs"] == results["epochs"]

    x = torch.rand(3, 20, 1).round()
    model = load_model(folder / "run" / binary_counting.WEIGHTS_NAME)
    assert type(model.lstm.cells[0]) is load_cell_class(SPEC)
    with torch.no_grad():
        expected = model(x).tolist()
    fresh = (
        f"import sys, torch; sys.path.insert(0, {str(ROOT)!r}); from experiment_utils import load_model;"
        f"model = load_model('run/{binary_counting.WEIGHTS_NAME}');"
        " print(type(model.lstm.cells[0]).__name__);"
        f"torch.save(model(torch.tensor({x.tolist()})).detach(), 'fresh.pt')"
    )
    done = subprocess.run([sys.executable, "-c", fresh], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "LayerNormLSTMCell"
    assert torch.load(folder / "fresh.pt").tolist() == pytest.approx(expected, abs=1e-6)

    (folder / "my_cells.py").unlink()  # the stored SPEC no longer loads: a usage error, nothing trained
    with pytest.raises(SystemExit) as stop:
        binary_counting.main(["--resume", "--out-dir", "run", "--quiet"])
    assert stop.value.code == 2
    assert "no longer loads" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no longer loads"):
        load_model(folder / "run" / binary_counting.WEIGHTS_NAME)


def test_readme_cell_trains_on_the_sine_wave_and_in_the_demo(folder, monkeypatch, capsys):
    assert (
        sine_wave_prediction.main([*TINY_SINE, "--variant", SPEC, "--out-dir", "sine", "--plot-epochs", "0"])
        == 0
    )
    results = json.loads((folder / "sine" / "sine_wave.json").read_text())
    assert results["config"]["variant"] == SPEC and results["lstm_path"] == "autograd"
    assert sine_wave_prediction.main(["--resume", "--out-dir", "sine", "--quiet"]) == 0

    monkeypatch.setattr(demo_script, "QUICK_BINARY_COUNTING", TINY_CONFIGS["binary_counting"])
    monkeypatch.setattr(demo_script, "QUICK_SINE_WAVE", TINY_CONFIGS["sine_wave"])
    capsys.readouterr()
    assert demo_script.main(["--quiet", "--no-figures", "--variant", SPEC, "--out-dir", "demo"]) == 0
    assert capsys.readouterr().out.count(f"LSTM: the {SPEC} cell, trained by autograd") == 2


def test_figure_titles_name_the_cell_and_its_path(folder):
    args = binary_counting.parse_args([*TINY_BINARY, "--variant", SPEC, "--out-dir", "run"])
    result = binary_counting.train(args)
    title = binary_counting.plot_results(args, result)._suptitle.get_text()
    assert f"the {SPEC} cell, trained by autograd" in title
    sine = sine_wave_prediction.parse_args([*TINY_SINE, "--variant", "cifg", "--out-dir", "sine"])
    forecasted = sine_wave_prediction.train(sine)
    figure = sine_wave_prediction.loss_figure(forecasted.history, "the cifg cell, trained by autograd")
    assert "cifg" in figure.axes[0].get_title()
    torch_title = binary_counting.plot_results(
        *(lambda a: (a, binary_counting.train(a)))(
            binary_counting.parse_args([*TINY_BINARY, "--cell", "torch"])
        )
    )._suptitle.get_text()
    assert "torch.nn.LSTM (the standard cell)" in torch_title


def test_readme_cell_goes_into_the_variants_study_and_its_report(folder, monkeypatch, capsys):
    monkeypatch.setattr(compare_variants, "QUICK_SETTINGS", TINY_CONFIGS)
    argv = ["--quick", "--seeds", "1", "--variants", SPEC, "--workers", "2", "--quiet", "--out-dir", "study"]
    assert compare_variants.main(argv) == 0
    study = json.loads((folder / "study" / compare_variants.JSON_NAME).read_text())
    assert list(study["config"]["variants"]) == ["standard", SPEC] and not study["missing"]
    assert {run["lstm_path"] for run in study["runs"] if run["condition"] == SPEC} == {"autograd"}
    table = capsys.readouterr().out
    assert f"| {SPEC} | 1 / 1 | autograd |" in table
    # The report reads the study's own settings; an option that contradicts them is a usage error.
    assert compare_variants.main(["--report-only", "--out-dir", "study"]) == 0
    assert f"| {SPEC} | 1 / 1 | autograd |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        compare_variants.main(["--report-only", "--out-dir", "study", "--seeds", "3"])
    assert stop.value.code == 2 and "--seeds 1 there, 3 here" in capsys.readouterr().err
    # The study records its cell's file: continuing it with an edited cell is refused, not mixed.
    with (folder / "my_cells.py").open("a") as cell_file:
        cell_file.write("# edited\n")
    with pytest.raises(SystemExit) as stop:
        compare_variants.main(argv)
    assert stop.value.code == 2 and "holds a study with other settings" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nosuch.py:Cell", "no file nosuch.py"),
        ("nosuch_module:Cell", "no module nosuch_module"),
        ("my_cells.py:Missing", "defines no Missing"),
        ("odd_cells.py:not_a_cell", "expected a subclass of lstm_cell.LSTMCell"),
        ("odd_cells.py:WrongTanh", "the class WrongTanh, expected a subclass"),
        ("my_cells.py", "names a file but no class"),
        ("gru", "neither a built-in cell"),
    ],
)
def test_a_bad_spec_is_a_usage_error_before_anything_is_written(folder, capsys, spec, message):
    (folder / "broken.py").write_text("import no_such_dependency\n")
    for main, argv in (
        (binary_counting.main, ["--variant", spec]),
        (sine_wave_prediction.main, ["--variant", spec]),
        (demo_script.main, ["--variant", spec]),
        (compare_variants.main, ["--variants", spec]),
        (check_cell.main, [spec]),
    ):
        with pytest.raises(SystemExit) as stop:
            main([*argv, "--out-dir", "out"] if main is not check_cell.main else argv)
        assert stop.value.code == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert message in error, (main, error)
    assert sorted(path.name for path in folder.iterdir()) == ["broken.py", "my_cells.py", "odd_cells.py"]


@pytest.mark.parametrize(
    ("source", "quoted"),
    [
        ("import no_such_dependency\n", "ModuleNotFoundError: No module named 'no_such_dependency'"),
        ("raise SystemExit(0)\n", "SystemExit"),  # not a silent exit 0 with nothing trained
    ],
)
@pytest.mark.parametrize("spec", ["broken.py:Cell", "broken:Cell"])
def test_a_file_that_fails_to_import_is_a_usage_error_quoting_its_error(folder, capsys, source, quoted, spec):
    (folder / "broken.py").write_text(source)
    with pytest.raises(SystemExit) as stop:
        binary_counting.main(["--variant", spec, "--out-dir", "out"])
    assert stop.value.code == 2
    assert f"cannot import {spec.split(':')[0]}: {quoted}" in capsys.readouterr().err
    assert not (folder / "out").exists()


def test_check_cell_passes_the_readme_cell_and_fails_a_wrong_gradient(folder, capsys):
    assert check_cell.main([SPEC, "--repeats", "2"]) == 0
    report = capsys.readouterr().out
    assert "ok  gradcheck holds" in report and "ok  the layer equals stepping" in report
    assert (
        "trace records i, f, g, o, c, h" in report
        and "training path at binary counting's size: autograd" in report
    )
    assert "the standard cell's" in report and report.rstrip().endswith("Every check holds.")

    assert check_cell.main(["odd_cells.py:WrongGradientCell", "--repeats", "2"]) == 1
    report = capsys.readouterr().out
    failed = re.search(
        r"FAIL  gradcheck fails; furthest off, along a random direction of (\S+): .*off by (\S+)\)", report
    )
    assert failed is not None and failed.group(1).split(".")[-1] in ("W_ig", "W_hg", "b_g")
    assert float(failed.group(2)) > 1e-3 and "1 check(s) failed." in report
    assert "ok  the layer equals stepping" in report  # stepping runs the same wrong Function


def test_a_cell_that_raises_in_training_is_a_usage_error_quoting_it(folder, capsys):
    spec = "odd_cells.py:RaisingCell"
    for main, option in (
        (binary_counting.main, "--variant"),
        (sine_wave_prediction.main, "--variant"),
        (demo_script.main, "--variant"),
        (compare_variants.main, "--variants"),  # before any worker starts
    ):
        with pytest.raises(SystemExit) as stop:
            main([option, spec, "--out-dir", "out"])
        assert stop.value.code == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert "a trial training step of RaisingCell" in error, (main, error)
        assert error.endswith("fails: RuntimeError: no candidate today"), (main, error)
    assert not (folder / "out").exists()
    assert check_cell.main(["odd_cells.py:RaisingCell", "--repeats", "2"]) == 1  # check_cell's finding
    out = capsys.readouterr().out
    assert "FAIL  cannot build and run a layer of it: RuntimeError: no candidate today" in out


def test_a_cell_edited_or_broken_since_its_run_is_refused_on_resume_and_load(folder, capsys):
    assert binary_counting.main([*TINY_BINARY, "--variant", SPEC, "--out-dir", "run"]) == 0
    stored = json.loads((folder / "run" / binary_counting.JSON_NAME).read_text())["config"]
    assert stored["cell_source"] == hashlib.sha256((folder / "my_cells.py").read_bytes()).hexdigest()
    source = (folder / "my_cells.py").read_text()
    (folder / "my_cells.py").write_text(source + "# an edit, however small\n")
    with pytest.raises(SystemExit) as stop:
        binary_counting.main(["--resume", "--out-dir", "run", "--quiet"])
    assert stop.value.code == 2 and "SHA-256 differs from the run's cell_source" in capsys.readouterr().err
    with pytest.raises(ValueError, match="SHA-256 differs"):
        load_model(folder / "run" / binary_counting.WEIGHTS_NAME)


def test_a_resumed_cell_that_now_raises_is_a_usage_error(folder, capsys):
    (folder / "changing.py").write_text(
        "from lstm_cell import LSTMCell\n\n\nclass Cell(LSTMCell):\n    pass\n"
    )
    assert binary_counting.main([*TINY_BINARY, "--variant", "changing:Cell", "--out-dir", "run"]) == 0
    (folder / "changing.py").write_text(
        "from lstm_cell import LSTMCell\n\n\nclass Cell(LSTMCell):\n"
        "    def candidate(self, a):\n        raise RuntimeError('broken since')\n"
    )
    for module in [name for name in sys.modules if name == "changing"]:
        del sys.modules[module]  # a fresh process would import the file as it is now
    with pytest.raises(SystemExit) as stop:
        binary_counting.main(["--resume", "--out-dir", "run", "--quiet"])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert "--resume: the run in run cannot be resumed" in error or "SHA-256 differs" in error


def test_a_cell_that_exits_or_fails_at_the_published_sizes_is_reported(folder, capsys):
    with pytest.raises(SystemExit) as stop:
        binary_counting.main(["--variant", "odd_cells.py:ExitingCell", "--out-dir", "out"])
    assert stop.value.code == 2 and "fails: SystemExit" in capsys.readouterr().err
    assert check_cell.main(["odd_cells.py:ExitingCell", "--repeats", "1"]) == 1
    assert "FAIL  cannot build and run a layer of it: SystemExit" in capsys.readouterr().out
    assert check_cell.main(["odd_cells.py:SmallOnlyCell", "--repeats", "1"]) == 1
    report = capsys.readouterr().out
    assert "ok  gradcheck holds" in report  # hidden size 4
    assert "FAIL  training paths: the cell raised RuntimeError: only small cells today" in report
    assert not (folder / "out").exists()


def test_readout_c_with_a_cell_whose_forward_changes_its_step_is_a_usage_error(folder, capsys):
    with pytest.raises(SystemExit) as stop:
        binary_counting.main(
            ["--readout", "c", "--variant", "odd_cells.py:HalvedForwardCell", "--out-dir", "out"]
        )
    assert stop.value.code == 2
    assert "--readout c reads the cell state through LSTM.trace" in capsys.readouterr().err
    assert not (folder / "out").exists()
    # A forward of its own that returns what its step returned is traced as it runs.
    config = binary_counting.Config(readout="c", variant="odd_cells.py:OwnForwardCell")
    assert binary_counting.settings_problem(config) is None


def test_check_cell_says_a_dropout_cell_is_random_in_training(folder, capsys):
    assert check_cell.main(["odd_cells.py:DropoutCell", "--repeats", "2"]) == 0
    report = capsys.readouterr().out
    assert "info  random in training mode: two random seeds' outputs differ by up to" in report
    assert check_cell.main([SPEC, "--repeats", "2"]) == 0
    assert "info  deterministic in training mode" in capsys.readouterr().out


def test_check_cell_names_the_shipped_paths(monkeypatch):
    lines = check_cell.training_paths(load_cell_class("standard"))
    assert lines[0].startswith("training path at binary counting's size: bptt (lstm_cell.LSTMCell as shipped")
    lines = check_cell.training_paths(load_cell_class("cifg"))
    assert all("bptt, local derivatives by autograd (a variant as shipped" in line for line in lines)
    # Binary counting's state is batch 16 × hidden 20 = 320: below the threshold, by hand; above, autograd.
    monkeypatch.setitem(lstm_cell.BPTT_LARGEST_STATE, "bptt, local derivatives by autograd", 319)
    lines = check_cell.training_paths(load_cell_class("cifg"))
    assert "autograd (as shipped, but a state of batch × hidden above 319" in lines[0]
    assert "bptt, local derivatives by autograd (a variant as shipped" in lines[1]
