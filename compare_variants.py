"""A small "LSTM: A Search Space Odyssey": every LSTM variant, several seeds, both tasks, statistics.

Greff et al. ("LSTM: A Search Space Odyssey", IEEE TNNLS 28(10), 2017) trained eight LSTM variants
thousands of times on speech, handwriting and music. They found that coupling the input and forget
gates (CIFG) or removing the peepholes costs nothing, while removing the forget gate (NFG) or the
output activation (NOAF) hurts significantly. This script asks the same of our two small tasks: it
trains every variant in `lstm_cell.VARIANTS`, plus the standard cell with `--forget-bias 1`, with
several seeds on binary counting and on the sine wave at their published settings. Every run is a
configuration of its script (its `Config`) trained by the script's own `train`, so what is compared
is exactly what the scripts train.

    python compare_variants.py                      # the full study, 5 seeds, outputs in runs/variants/
    python compare_variants.py --out-dir figures    # the same, regenerating the committed results
    python compare_variants.py --quick              # fewer epochs, data and seeds: under 3 minutes
    python compare_variants.py --help

For each variant and metric it reports mean ± standard deviation and median over the seeds, and
Welch's t-test against the standard cell (Welch, Biometrika 34, 1947; the test Greff et al. used),
taken from scipy.stats. --out-dir receives variants.json (every run, the summary, the seeds, the
study's wall time) and variants.png (one panel per metric, one dot per seed); the table is printed.
`reading` turns the JSON into the README's and the notebook's account of which findings hold.

The runs go side by side, one process per core, each with --threads 1. Every finished run is written
into variants.json at once (atomically), so Ctrl-C or SIGTERM keeps every finished run and running
the same command again continues where it stopped.

Importable: `main(argv)` runs a study; `summarize`, `welch_test`, `summary_table` and `reading` work on
its JSON.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import math
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import textwrap
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from scipy import stats
from tqdm.auto import tqdm

import binary_counting
import sine_wave_prediction
from experiment_utils import (
    INTERRUPTED_EXIT_STATUS,
    MAX_SEED,
    TERMINATED_EXIT_STATUS,
    WRITE_FAILED_EXIT_STATUS,
    Diverged,
    cell_source,
    check_out_dir,
    describe_machine,
    explicit_options,
    load_cell_class,
    markdown_table,
    positive_int,
    run_until_interrupted,
    save_figure,
    save_json,
    thread_count,
    variant_spec,
)
from lstm_cell import VARIANTS

JSON_NAME = "variants.json"
FIGURE_NAME = "variants.png"
DEFAULT_OUT_DIR = "runs/variants"  # outside the tracked files: a trial run changes nothing in git
BASELINE = "standard"  # every variant is tested against this one
FEW_SEEDS = 5  # with fewer seeds per variant a t-test can only detect very large differences
SIGNIFICANCE = 0.05  # the level at which the figure stars a variant

# What is compared: name → (--variant, --forget-bias). The standard cell is Greff et al.'s NP (no
# peepholes); "peephole" is their vanilla LSTM (V). "standard-fb1" starts every forget gate open
# (Jozefowicz et al., ICML 2015).
CONDITIONS: dict[str, tuple[str, float | None]] = {name: (name, None) for name in VARIANTS}
CONDITIONS["standard-fb1"] = ("standard", 1.0)

TASKS = {"binary_counting": binary_counting, "sine_wave": sine_wave_prediction}
# Settings every run of the study takes, whatever the task: one thread per process (the processes
# share the cores), no progress bars, no figures (nobody looks at the figures of a study's 90 runs,
# and drawing them after every epoch took about a quarter of a binary-counting run), and the CPU
# (models this small gain nothing from a GPU).
COMMON_SETTINGS = {"threads": 1, "quiet": True, "no_figures": True, "device": "cpu"}
TASK_SETTINGS: dict[str, dict] = {"binary_counting": {}, "sine_wave": {}}  # each script's Config defaults
# --quick: a trial that finishes in under 3 minutes on 2 cores. It learns little (binary counting
# needs ~1 500 Adam steps to leave its first plateau), but every run, file and statistic is made.
QUICK_SETTINGS = {
    "binary_counting": {"epochs": 2, "train_samples": 2000, "valid_samples": 200},
    "sine_wave": {"epochs": 2, "batch_size": 8, "lr": 0.08},
}
QUICK_SEEDS = 2
DEFAULT_SEEDS = 5


@dataclass(frozen=True)
class Metric:
    """One number measured per run: its key in a run's "metrics", the task and how to show it."""

    key: str
    task: str
    label: str  # the figure's panel title and the table's column
    percent: bool = False  # a fraction shown as a percentage
    log_scale: bool = False
    tested: bool = True  # a significance test against the baseline is reported in the table


METRICS = (
    Metric("counting_valid_accuracy", "binary_counting", "counting: final valid accuracy", percent=True),
    Metric("counting_valid_loss", "binary_counting", "counting: final valid loss (MSE)", log_scale=True),
    Metric("counting_epoch_99", "binary_counting", "counting: first epoch with valid accuracy ≥ 99 %"),
    Metric("counting_accuracy_40", "binary_counting", "counting: accuracy at 40 bits", percent=True),
    Metric("sine_final_mse", "sine_wave", "sine: final held-out forecast MSE", log_scale=True),
    Metric("sine_best_mse", "sine_wave", "sine: best held-out forecast MSE", log_scale=True),
    Metric("sine_unseen_mse", "sine_wave", "sine: unseen signals, mean forecast MSE", log_scale=True),
    Metric("counting_seconds_per_epoch", "binary_counting", "counting: seconds per epoch", tested=False),
    Metric("sine_seconds_per_epoch", "sine_wave", "sine: seconds per epoch", tested=False),
)
PARAMETERS = {"binary_counting": "counting_parameters", "sine_wave": "sine_parameters"}


# ---------------------------------------------------------------------------------------------------
# Settings


@dataclass
class Config:
    """The study's settings; the defaults are the committed study's: every condition, 5 seeds, the
    scripts' published settings. `seeds` None: DEFAULT_SEEDS, or QUICK_SEEDS with `quick`."""

    seeds: int | None = None
    variants: list[str] = field(default_factory=lambda: list(CONDITIONS))
    quick: bool = False
    workers: int = os.cpu_count() or 1
    out_dir: Path = Path(DEFAULT_OUT_DIR)
    quiet: bool = False
    report_only: bool = False

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if self.seeds is None:
            self.seeds = QUICK_SEEDS if self.quick else DEFAULT_SEEDS
        for name in ("seeds", "workers"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ValueError(f"{name}: expected a positive whole number, got {value!r}")
        if BASELINE not in self.variants:  # every variant is tested against it
            self.variants = [BASELINE, *self.variants]


def parse_args(argv: Sequence[str] | None = None) -> Config:
    """The study's settings from a command line; bad values, and an --out-dir holding another study,
    exit with status 2."""
    parser = argparse.ArgumentParser(
        description="Train every LSTM variant with several seeds on both tasks and compare them.",
        epilog="exit status: 0 finished; 2 usage error (before anything is written);"
        f" {INTERRUPTED_EXIT_STATUS} Ctrl-C; {TERMINATED_EXIT_STATUS} SIGTERM (both keep every finished run:"
        " run the same command"
        f" again to continue); {WRITE_FAILED_EXIT_STATUS} an output file could not be written",
    )
    parser.add_argument(
        "--seeds",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"seeds per variant and task, 0 … N-1 (default: {DEFAULT_SEEDS}; {QUICK_SEEDS} with --quick)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        type=condition_name,
        default=list(CONDITIONS),
        metavar="NAME",
        help=f"the variants to train, {BASELINE} always among them: built-in names (default: all:"
        f" {' '.join(CONDITIONS)}) or cells of your own, each a --variant SPEC of the scripts"
        " (path/to/file.py:ClassName or module:ClassName)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer epochs, data and seeds: under 3 minutes on 2 cores"
    )
    parser.add_argument(
        "--workers",
        type=thread_count,
        default=os.cpu_count() or 1,
        help="runs trained side by side, one process each, at most this machine's logical cores"
        " (default: all of them; 1 trains one run after another in this process)",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path(DEFAULT_OUT_DIR),
        help=f"where {JSON_NAME} and {FIGURE_NAME} go; a folder holding an unfinished study with the same"
        f" settings is continued (default: {DEFAULT_OUT_DIR}/)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no line per finished run")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help=f"train nothing: redraw the summary, {FIGURE_NAME} and the table from the study in --out-dir",
    )
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = QUICK_SEEDS if args.quick else DEFAULT_SEEDS
    if args.seeds - 1 > MAX_SEED:
        parser.error(f"--seeds: at most {MAX_SEED + 1}, got {args.seeds}")
    given = set(args.variants) | {BASELINE}
    own = [name for name in dict.fromkeys(args.variants) if name not in CONDITIONS]
    args.variants = [name for name in CONDITIONS if name in given] + own
    check_out_dir(parser, args.out_dir)
    previous = load_study(parser, args.out_dir)
    if args.report_only:
        return Config(**vars(settings_of_study(parser, argv, args, previous)))
    for task in TASKS:  # the scripts' own checks, before anything is trained
        for condition in args.variants:
            try:
                run_config(args, task, 0, condition, Path(tempfile.gettempdir()))
            except ValueError as error:
                parser.error(str(error))
    if previous is not None and previous["config"] != study_config(args):
        parser.error(
            f"--out-dir {args.out_dir} holds a study with other settings"
            f" ({describe_difference(previous, args)}); give the same options to continue it,"
            " or another --out-dir"
        )
    return Config(**vars(args))


def condition_name(text: str) -> str:
    """A --variants entry: a name of CONDITIONS, or a --variant SPEC of the scripts that loads."""
    return text if text in CONDITIONS else variant_spec(text)


def condition_settings(condition: str) -> tuple[str, float | None]:
    """(--variant, --forget-bias) of a condition: CONDITIONS' for a built-in name, (SPEC, None) for a
    cell of your own."""
    return CONDITIONS.get(condition, (condition, None))


def settings_of_study(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, args: argparse.Namespace, study: dict | None
) -> argparse.Namespace:
    """--report-only: the settings of the study in --out-dir (its seeds, variants and --quick), which
    trains nothing; a usage error where there is no study, or where an option given contradicts it."""
    if study is None:
        parser.error(f"--report-only: no study in {args.out_dir} (expected {Path(args.out_dir) / JSON_NAME})")
    try:
        config = study["config"]
        stored = {"quick": config["quick"], "seeds": len(config["seeds"])}
        stored["variants"] = list(config["variants"])
    except (KeyError, TypeError) as error:
        parser.error(f"--report-only: {Path(args.out_dir) / JSON_NAME} names no settings ({error!r})")
    given = explicit_options(parser, argv) & stored.keys()
    differing = [name for name in sorted(given) if getattr(args, name) != stored[name]]
    if differing:
        parser.error(
            f"--report-only reports the study in {args.out_dir} as it was run ("
            + "; ".join(f"--{name} {stored[name]} there, {getattr(args, name)} here" for name in differing)
            + f"); leave out {', '.join(f'--{name}' for name in differing)}"
        )
    for name, value in stored.items():
        setattr(args, name, value)
    return args


def task_settings(quick: bool, task: str) -> dict:
    """The settings of every run of `task` in the study: the published ones, or --quick's."""
    return COMMON_SETTINGS | TASK_SETTINGS[task] | (QUICK_SETTINGS[task] if quick else {})


def as_argv(settings: dict) -> list[str]:
    """The command-line options of the task script that give `settings` (the study records them)."""
    argv = []
    for name, value in settings.items():
        option = "--" + name.replace("_", "-")
        argv += [option] if value is True else [option, str(value)]
    return argv


def run_config(args: argparse.Namespace, task: str, seed: int, condition: str, out_dir: Path):
    """The configuration (the task script's `Config`) of one run: the task's settings, the seed, the
    condition's cell and a scratch folder. Raises ValueError for a cell that cannot train."""
    variant, forget_bias = condition_settings(condition)
    settings = task_settings(args.quick, task)
    return TASKS[task].Config(
        **settings, seed=seed, variant=variant, forget_bias=forget_bias, out_dir=out_dir
    )


def condition_record(condition: str) -> dict:
    """What a condition trains: its --variant and --forget-bias, and for a cell of your own the SHA-256
    of its file (`cell_source`), so that a study continued with an edited cell, or another file of
    the same name, is refused rather than mixed."""
    variant, forget_bias = condition_settings(condition)
    record = {"variant": variant, "forget_bias": forget_bias}
    digest = cell_source(load_cell_class(variant))
    return record if digest is None else record | {"cell_source": digest}


def study_config(args: argparse.Namespace) -> dict:
    """What makes two studies the same study (where and how fast they run does not)."""
    return {
        "quick": args.quick,
        "variants": {name: condition_record(name) for name in args.variants},
        "seeds": list(range(args.seeds)),
        "argv": {task: as_argv(task_settings(args.quick, task)) for task in TASKS},
    }


def describe_difference(previous: dict, args: argparse.Namespace) -> str:
    current = study_config(args)
    return ", ".join(
        f"{key}: {previous['config'].get(key)} there, {value} here"
        for key, value in current.items()
        if previous["config"].get(key) != value
    )


def load_study(parser: argparse.ArgumentParser, out_dir: Path) -> dict | None:
    """The study in `out_dir`/variants.json, or None where there is none; a usage error if unreadable."""
    path = Path(out_dir) / JSON_NAME
    if not path.exists():
        return None
    try:
        study = json.loads(path.read_text())
        if not isinstance(study["config"], dict) or not isinstance(study["runs"], list):
            raise TypeError("config or runs")
    except (OSError, ValueError, KeyError, TypeError) as error:
        parser.error(
            f"--out-dir: {path} is not a study this script can continue ({error}); use another --out-dir"
        )
    return study


# ---------------------------------------------------------------------------------------------------
# One run


def run_id(task: str, condition: str, seed: int) -> str:
    return f"{task}/{condition}/seed {seed}"


def train_run(task: str, condition: str, seed: int, config) -> dict:
    """Train one run, the task script's `Config` `config`, with the script's own train; return its record.

    The record: "task", "condition", "variant", "forget_bias", "seed", "lstm_path", "epochs" (finished),
    "diverged" (the epoch whose training loss was not finite, or None), "seconds" (wall time) and
    "metrics" (METRICS of the task and the parameter count; None where a diverged run has no value).
    The script's own files go to config.out_dir, a scratch folder. Raises OutputError when a file
    cannot be written.
    """
    script, args = TASKS[task], config
    start = time.perf_counter()
    history: list[dict] = []
    result, diverged = None, None
    try:
        result = script.train(args, history)
    except Diverged as error:
        diverged = error.epoch
    variant, forget_bias = condition_settings(condition)
    record = {"task": task, "condition": condition, "variant": variant, "forget_bias": forget_bias}
    record |= {"seed": seed, "lstm_path": None, "epochs": len(history), "diverged": diverged}
    record["seconds"] = time.perf_counter() - start
    metrics = {PARAMETERS[task]: None}
    if result is not None:
        record["lstm_path"] = result.model.lstm.training_path(args.batch_size)
        parameters = sum(p.numel() for p in result.model.parameters() if p.requires_grad)
        metrics[PARAMETERS[task]] = parameters
    seconds = [epoch["seconds"] for epoch in history]
    if task == "binary_counting":
        first_99 = [epoch["epoch"] for epoch in history if epoch["valid_accuracy"] >= 0.99]
        metrics |= {
            "counting_valid_accuracy": history[-1]["valid_accuracy"] if result else None,
            "counting_valid_loss": history[-1]["valid_loss"] if result else None,
            "counting_epoch_99": first_99[0] if first_99 else None,
            "counting_accuracy_40": result.length_generalization["40"]["accuracy"]
            if result and "40" in result.length_generalization
            else None,
            "counting_seconds_per_epoch": float(np.mean(seconds)) if seconds else None,
        }
    else:
        test_losses = [epoch["test_loss"] for epoch in history]
        metrics |= {
            "sine_final_mse": test_losses[-1] if result else None,
            "sine_best_mse": float(np.nanmin(test_losses)) if result else None,
            "sine_unseen_mse": float(np.mean(list(result.generalization.values()))) if result else None,
            "sine_seconds_per_epoch": float(np.mean(seconds)) if seconds else None,
        }
        record["unseen_mse_by_signal"] = result.generalization if result else None
    if task == "binary_counting" and result is not None:
        record["accuracy_by_length"] = {
            length: scores["accuracy"] for length, scores in result.length_generalization.items()
        }
    record["metrics"] = metrics
    record["history"] = history
    return record


def ignore_interrupts() -> None:
    """A worker's initializer: Ctrl-C reaches every process of the terminal, but only the main process
    acts on it (it stops the workers)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ---------------------------------------------------------------------------------------------------
# Statistics


def welch_test(values: Sequence[float], baseline: Sequence[float]) -> tuple[float | None, float | None]:
    """(t, two-sided p) of Welch's unequal-variances t-test of `values` against `baseline`.

    scipy.stats.ttest_ind(equal_var=False) (Welch, Biometrika 34, 1947). None for both where a group
    has fewer than two values or the test is undefined (both groups without any variance).
    """
    if len(values) < 2 or len(baseline) < 2:
        return None, None
    with warnings.catch_warnings():  # identical values: scipy warns and returns NaN, reported as None
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(values, baseline, equal_var=False)
    t, p = float(result.statistic), float(result.pvalue)
    return (t, p) if math.isfinite(t) and math.isfinite(p) else (None, None)


def summarize(values: Sequence[float | None], baseline: Sequence[float | None] | None) -> dict:
    """Mean, standard deviation (n - 1), median and Welch's test against `baseline` (None: no test).

    None values (a run that never reached a threshold or diverged) are left out and counted as
    "missing". Returns {"n", "missing", "mean", "sd", "median", "t", "p"}, None where undefined.
    """
    present = [value for value in values if value is not None]
    summary = {"n": len(present), "missing": len(values) - len(present)}
    summary["mean"] = float(np.mean(present)) if present else None
    summary["sd"] = float(np.std(present, ddof=1)) if len(present) > 1 else None
    summary["median"] = float(np.median(present)) if present else None
    reference = [value for value in baseline or [] if value is not None]
    summary["t"], summary["p"] = welch_test(present, reference) if baseline is not None else (None, None)
    return summary


def study_summary(runs: list[dict], conditions: Sequence[str]) -> dict:
    """{condition: {metric: summarize(...)}} over `runs`, every metric tested against BASELINE."""

    def values(condition: str, key: str) -> list:
        return [
            run["metrics"][key] for run in runs if run["condition"] == condition and key in run["metrics"]
        ]

    keys = [metric.key for metric in METRICS] + list(PARAMETERS.values())
    return {
        condition: {
            key: summarize(values(condition, key), None if condition == BASELINE else values(BASELINE, key))
            for key in keys
        }
        for condition in conditions
    }


def few_seeds_note(seeds: int, planned: int | None = None) -> str | None:
    """The note on too few seeds: `seeds` is the fewest finished of any variant and task, `planned`
    (None: as many) how many the study asked for."""
    if seeds >= FEW_SEEDS:
        return None
    if planned is not None and seeds < planned:
        return (
            f"Unfinished: as few as {seeds} of the {planned} planned seed(s) of a variant and task have"
            " finished (run the same command again to continue); until then Welch's t-test can detect"
            " only very large differences, if any."
        )
    return (
        f"Only {seeds} seed(s) per variant: Welch's t-test can then detect only very large differences"
        f" (or none, with one seed); read p-values as weak evidence. {FEW_SEEDS} or more are advised."
    )


# ---------------------------------------------------------------------------------------------------
# The table and the figure


def format_value(metric: Metric, value: float) -> str:
    if metric.percent:
        return f"{100 * value:.2f}%"
    if metric.log_scale:
        return f"{value:.2g}"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def format_cell(metric: Metric, summary: dict, condition: str) -> str:
    """ "mean ± sd (p …)": p from Welch's test against the baseline; the runs that never counted."""
    if summary["n"] == 0:
        return "–"
    cell = format_value(metric, summary["mean"])
    if summary["sd"] is not None:
        cell += " ± " + format_value(metric, summary["sd"])
    if metric.tested and condition != BASELINE:
        cell += " (p –)" if summary["p"] is None else f" (p {summary['p']:.2g})"
    if summary["missing"]:
        never = "never" if metric.key == "counting_epoch_99" else "none"
        cell += f"; {never} in {summary['missing']}"
    return cell


def summary_table(study: dict) -> str:
    """The study as a markdown table: one row per variant, the variant's name (or SPEC) first, then
    the seeds finished and the training path per task; each metric as mean ± sd over the seeds with
    Welch's p against the standard cell; last the parameter counts."""
    header = ["Variant", "seeds (counting / sine)", "training path (counting / sine)"]
    header += [metric.label for metric in METRICS] + ["parameters (counting / sine)"]
    rows = []
    for condition, by_metric in study["summary"].items():
        seeds = [by_metric[key]["n"] + by_metric[key]["missing"] for key in PARAMETERS.values()]
        cells = [" / ".join(map(str, seeds)), training_paths(study, condition)]
        cells += [format_cell(metric, by_metric[metric.key], condition) for metric in METRICS]
        counts = [by_metric[key]["median"] for key in PARAMETERS.values()]
        cells.append(" / ".join("–" if count is None else f"{count:.0f}" for count in counts))
        rows.append([condition, *cells])
    return markdown_table(header, rows)


def training_paths(study: dict, condition: str) -> str:
    """How the condition's runs trained (their "lstm_path"), per task; once where both tasks agree."""
    runs = [run for run in study["runs"] if run["condition"] == condition and run.get("lstm_path")]
    paths = [", ".join(sorted({run["lstm_path"] for run in runs if run["task"] == task})) for task in TASKS]
    paths = [path or "–" for path in paths]
    return paths[0] if len(set(paths)) == 1 else " / ".join(paths)


def minor_tick_label(axes, value: float, position: int) -> str:
    """A log axis's minor tick labelled only when the axis spans less than a decade."""
    low, high = axes.get_ylim()
    return f"{value:.3g}" if high < 10 * low else ""


def plot_study(study: dict) -> Figure:
    """One panel per metric: every seed a dot, the variants side by side, each variant's median a
    black bar and the standard cell's median a dashed line; * marks p < SIGNIFICANCE against it."""
    conditions = list(study["summary"])
    columns = 3
    rows = math.ceil(len(METRICS) / columns)
    figure = Figure(figsize=(10, 3.3 * rows + 0.8), layout="constrained")
    axes_grid = figure.subplots(rows, columns, squeeze=False)
    for metric, axes in zip(METRICS, axes_grid.flat, strict=False):
        scale = 100 if metric.percent else 1
        for position, condition in enumerate(conditions):
            runs = [
                run for run in study["runs"] if run["condition"] == condition and metric.key in run["metrics"]
            ]
            values = [run["metrics"][metric.key] for run in runs]
            offsets = np.linspace(-0.25, 0.25, len(values)) if len(values) > 1 else [0.0] * len(values)
            present = [
                (position + offset, value * scale)
                for offset, value in zip(offsets, values, strict=True)
                if value is not None
            ]
            if present:
                axes.plot(*zip(*present, strict=True), "o", color="C0", ms=4, alpha=0.8)
            missing = [
                position + offset for offset, value in zip(offsets, values, strict=True) if value is None
            ]
            if missing:
                # A run without a value (never reached 99 %, or diverged) sits on the top edge.
                axes.plot(
                    missing,
                    [1.0] * len(missing),
                    "x",
                    color="C3",
                    ms=6,
                    clip_on=False,
                    transform=axes.get_xaxis_transform(),
                )
            summary = study["summary"][condition][metric.key]
            if summary["median"] is not None:
                axes.hlines(summary["median"] * scale, position - 0.35, position + 0.35, color="k", lw=2)
            if metric.tested and summary["p"] is not None and summary["p"] < SIGNIFICANCE:
                axes.text(
                    position,
                    0.02,
                    "*",
                    transform=axes.get_xaxis_transform(),
                    ha="center",
                    fontsize=14,
                    color="C3",
                )
        reference = study["summary"][BASELINE][metric.key]["median"]
        if reference is not None:
            axes.axhline(reference * scale, color="0.4", ls="--", lw=1, zorder=0)
        axes.set_title(textwrap.fill(metric.label + (" (%)" if metric.percent else ""), 36), fontsize=10)
        axes.set_xticks(range(len(conditions)), conditions, rotation=60, ha="right", fontsize=10)
        axes.tick_params(axis="y", labelsize=10)
        if metric.log_scale:
            axes.set_yscale("log")
            # Plain numbers (0.002, 0.5) where matplotlib would write 2×10⁻³, on the minor ticks too
            # when the data span less than a decade and have no major tick to read.
            axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))
            axes.yaxis.set_minor_formatter(FuncFormatter(partial(minor_tick_label, axes)))
        axes.set_xlim(-0.6, len(conditions) - 0.4)
        axes.grid(axis="y", alpha=0.3)
    for axes in list(axes_grid.flat)[len(METRICS) :]:
        axes.set_visible(False)
    fewest, most = seeds_finished(study)
    seeds = f"{most}" if fewest == most else f"{fewest}–{most}"
    figure.suptitle(
        f"LSTM variants, {seeds} seed(s) each: a dot per run, a black bar per variant's median, the dashed"
        f" line {BASELINE}'s median;\n* Welch's p < {SIGNIFICANCE} against {BASELINE}; × no value"
        " (never reached 99 %, or diverged), drawn on the top edge",
        fontsize=10,
    )
    return figure


# ---------------------------------------------------------------------------------------------------
# The study


def plan(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """Every (task, condition, seed), one seed of every variant and task before the next seed, so that
    a study stopped early has compared every variant (with fewer seeds). Within a seed the slowest
    runs go first, so that the cores stay busy: binary counting before the sine wave, the variants
    that autograd differentiates before the standard cell's hand-derived backward pass."""
    order = sorted(args.variants, key=lambda name: condition_settings(name)[0] == "standard")
    return [(task, condition, seed) for seed in range(args.seeds) for task in TASKS for condition in order]


def new_study(args: argparse.Namespace) -> dict:
    return {
        "config": study_config(args),
        "seeds": list(range(args.seeds)),
        "runs": [],
        "missing": [],
        "complete": False,
        "summary": {},
        "note": None,
        "seconds": 0.0,
        "sessions": [],
        "machine": describe_machine() | {"torch_threads": 1},
    }


def record_session(study: dict, session: dict, started: float) -> None:
    """Update the study's wall time, and all that `refresh` derives from its runs; the caller writes it."""
    session["seconds"] = time.perf_counter() - started
    session["load_average_end"] = list(os.getloadavg())
    study["seconds"] = sum(s["seconds"] for s in study["sessions"])
    refresh(study)


def refresh(study: dict) -> None:
    """Derive from the study's runs its "missing" runs, "complete", "summary" and the few-seeds "note"."""
    done = {run_id(run["task"], run["condition"], run["seed"]) for run in study["runs"]}
    study["missing"] = [name for name in study["planned"] if name not in done]
    study["complete"] = not study["missing"]
    study["summary"] = study_summary(study["runs"], list(study["config"]["variants"]))
    study["note"] = few_seeds_note(seeds_finished(study)[0], len(study["config"]["seeds"]))


# ---------------------------------------------------------------------------------------------------
# The reading: which of Greff et al.'s findings hold, generated from the study (README and notebook)

# The final numbers Greff et al.'s findings are read on, every one lower-is-better: the counting loss and
# the forecast errors on the held-out points and on the signals never trained on.
FINAL_METRICS = {
    "counting_valid_loss": "the counting loss",
    "sine_final_mse": "the held-out forecast",
    "sine_best_mse": "the best held-out forecast",
    "sine_unseen_mse": "the unseen signals",
}


def reading(study: dict) -> str:
    """The study's duration and what it shows, as markdown, every number and verdict drawn from `study`.

    Greff et al. (IEEE TNNLS 2017) found that coupling the input and forget gates (CIFG) or removing the
    peepholes costs nothing, and that removing the forget gate (NFG) or the output activation (NOAF)
    hurts. Here a variant "costs" where one of FINAL_METRICS is significantly worse than `standard`'s
    (Welch, p < SIGNIFICANCE), and "hurts" is the same; a significantly better number is named too.
    """
    summary = study["summary"]
    names = list(summary)
    fewest, most = seeds_finished(study)

    def mean(variant: str, key: str) -> float:
        return summary[variant][key]["mean"]

    def significant(variant: str, key: str) -> bool:
        p = summary[variant][key]["p"]
        return p is not None and p < SIGNIFICANCE

    def differs(variant: str, key: str, sign: int) -> bool:
        return significant(variant, key) and sign * (mean(variant, key) - mean(BASELINE, key)) > 0

    def listed(variants: list[str], none: str = "no variant") -> str:
        return ", ".join(f"`{variant}`" for variant in variants) or none

    def worse(variant: str) -> list[str]:
        return [name for key, name in FINAL_METRICS.items() if differs(variant, key, +1)]

    def effect(variant: str) -> str:
        """`variant`: where it is significantly worse and better than the standard cell, or not trained."""
        if variant not in summary:
            return f"`{variant}` was not trained"
        better = [name for key, name in FINAL_METRICS.items() if differs(variant, key, -1)]
        parts = [f"worse on {' and '.join(worse(variant))}" if worse(variant) else "worse on nothing"]
        parts += [f"better on {' and '.join(better)}"] if better else []
        return f"`{variant}`: {', '.join(parts)}"

    def verdict(variants: tuple[str, str], holds_for) -> str:
        if any(v not in summary for v in variants):
            return "not tested (a variant is missing)"
        holding = [v for v in variants if holds_for(v)]
        if len(holding) == len(variants):
            return "holds"
        return f"holds for `{holding[0]}` only" if holding else "does not hold here"

    tested = {metric.key for metric in METRICS if metric.tested}
    tests = sum(summary[v][key]["p"] is not None for v in names for key in tested)
    counted = (
        "reaches"
        if all(mean(v, "counting_valid_accuracy") == 1.0 for v in names)
        else "does not always reach"
    )
    loss_differs = [v for v in names if significant(v, "counting_valid_loss")]
    faster = [v for v in names if differs(v, "counting_epoch_99", -1)]
    slower = [v for v in names if differs(v, "counting_epoch_99", +1)]
    best_mean_40 = max(mean(v, "counting_accuracy_40") for v in names)
    at_40 = [
        run["metrics"]["counting_accuracy_40"] for run in study["runs"] if run["task"] == "binary_counting"
    ]
    best_run_40 = max((value for value in at_40 if value is not None), default=0.0)
    beyond = "no variant counts" if best_run_40 < 0.5 else "some run counts"
    sine_better = [v for v in names if differs(v, "sine_final_mse", -1)]
    sine_worse = [v for v in names if differs(v, "sine_final_mse", +1)]
    unseen_worst = max(names, key=lambda v: mean(v, "sine_unseen_mse"))
    held_out_best = min(names, key=lambda v: mean(v, "sine_final_mse"))
    memorized = (
        f" `{held_out_best}` fits the held-out sine best and carries over worst to the signals it never"
        " trained on: a closer fit of the one trained trajectory, not a better forecaster."
        if held_out_best == unseen_worst
        else ""
    )

    sessions = len(study["sessions"])
    loads = [session["load_average_start"][0] for session in study["sessions"]]
    load = f"{loads[0]:.1f}" if sessions == 1 else f"{min(loads):.1f} to {max(loads):.1f}"
    cores = study["machine"]["logical_cores"]
    unfinished = (
        f" It is not finished: {len(study['missing'])} of its {len(study['planned'])} runs are missing (the"
        ' JSON lists them under "missing"); the same command continues it.'
        if study["missing"]
        else ""
    )
    workers = study["sessions"][0]["workers"]
    duration = (
        f"The study took {study['seconds'] / 60:.0f} minutes of wall time on {cores} cores, in"
        f" {'one session' if sessions == 1 else f'{sessions} sessions'} with {workers}"
        f" runs side by side (1-minute load average {load} when {'it' if sessions == 1 else 'a session'}"
        f" started, where {cores} means every core busy).{unfinished}"
    )
    seeds = str(fewest) if fewest == most else f"{fewest}–{most}"
    verdicts = [
        f"**Binary counting**: every variant {counted} 100 % validation accuracy with every seed; the final"
        f" validation loss differs significantly from `{BASELINE}`'s for {listed(loss_differs)}. Passing 99 %"
        f" is significantly faster for {listed(faster)} and slower for {listed(slower)}. On 40-bit"
        f" sequences the best mean accuracy is {best_mean_40:.1%} and the best run's {best_run_40:.1%}:"
        f" {beyond} sequences twice the training length.",
        f"**CIFG and no peepholes cost nothing**: {verdict(('cifg', 'peephole'), lambda v: not worse(v))}"
        f" ({effect('cifg')}; {effect('peephole')}).",
        "**Removing the forget gate or the output activation hurts**:"
        f" {verdict(('nfg', 'noaf'), lambda v: bool(worse(v)))} ({effect('nfg')}; {effect('noaf')}). On the"
        f" held-out sine, {listed(sine_better)} reach a significantly lower MSE than `{BASELINE}` and"
        f" {listed(sine_worse, 'none')} a higher one; on the unseen signals the worst is `{unseen_worst}`"
        f" (mean MSE {mean(unseen_worst, 'sine_unseen_mse'):.2g}, `{BASELINE}`"
        f" {mean(BASELINE, 'sine_unseen_mse'):.2g}).{memorized}",
    ]
    return "\n\n".join(
        [
            duration,
            f"**What holds, what does not.** Read with care: {seeds} seed(s) per variant and {tests} tests in"
            f' the table, so at p < {SIGNIFICANCE} about {tests * SIGNIFICANCE:.0f} "significant" differences'
            ' are expected by chance alone. "Worse" and "better" below: significantly, on a final number:'
            " the counting loss, or the forecast error on the held-out points (last or best epoch) or on the"
            " unseen signals.",
            "\n".join(f"- {verdict}" for verdict in verdicts),
            "**Why these tasks may disagree with Greff et al.** Both tasks are tiny: a variant that learns to"
            " count learns it fully, so little is left to compare. Their sequences are 20 and 40 steps long,"
            " with little to forget; counting is a running sum, which is what a cell without a forget gate"
            " computes (`c' = c + i ⊙ g`). Every variant trains at the published settings, chosen for the"
            " standard cell, where Greff et al. searched each variant's hyperparameters; and a few seeds"
            " against their thousands of runs leave Welch's test blind to all but large differences.",
        ]
    )


def seeds_finished(study: dict) -> tuple[int, int]:
    """The fewest and the most finished seeds of any variant on any task."""
    counts = [
        sum(run["task"] == task and run["condition"] == condition for run in study["runs"])
        for task in TASKS
        for condition in study["config"]["variants"]
    ]
    return min(counts), max(counts)


def run_jobs(
    jobs: list[tuple[str, str, int, object]], workers: int, finished: Callable[[dict], None]
) -> None:
    """Train every job, `workers` at a time in their own processes (spawned, so nothing of this
    process's state is inherited), and hand each record to `finished` as it ends.

    With workers == 1 the jobs run here, one after another. On any exception (Ctrl-C and SIGTERM
    included) the workers are stopped at once and the exception propagates; finished records have
    been handed over already.
    """
    if workers == 1:
        for job in jobs:
            finished(train_run(*job))
        return
    context = multiprocessing.get_context("spawn")
    executor = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=ignore_interrupts
    )
    try:
        futures = [executor.submit(train_run, *job) for job in jobs]
        for future in concurrent.futures.as_completed(futures):
            finished(future.result())
    except BaseException:
        # The pool has no public way to stop a running task: end its processes (a run killed midway
        # is simply run again next time), then let the pool notice and cancel the rest.
        for process in list(getattr(executor, "_processes", {}).values()):
            process.terminate()
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    executor.shutdown(wait=True)


def run_study(args: argparse.Namespace) -> dict:
    """Run every planned run not yet in --out-dir's study, writing the study after each one.

    Returns the study (as written to variants.json). Raises KeyboardInterrupt (Terminated for
    SIGTERM) after writing what has finished, and OutputError when a file cannot be written.
    """
    out_dir = Path(args.out_dir)
    study = load_study(argparse.ArgumentParser(), out_dir) or new_study(args)
    planned = plan(args)
    study["planned"] = [run_id(*job) for job in planned]
    done = {run_id(run["task"], run["condition"], run["seed"]) for run in study["runs"]}
    session = {
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "workers": args.workers,
        "runs_at_start": len(done),
        "load_average_start": list(os.getloadavg()),
    }
    study["sessions"].append(session)
    started = time.perf_counter()
    bar = tqdm(total=len(planned), initial=len(done), desc="runs", unit="run", disable=args.quiet or None)
    scratch = Path(tempfile.mkdtemp(prefix="compare_variants-"))

    def finished(record: dict) -> None:
        study["runs"].append(record)
        record_session(study, session, started)
        save_json(study, out_dir / JSON_NAME)
        bar.update()
        if not args.quiet:
            metrics = ", ".join(
                f"{key} {value:.3g}" for key, value in record["metrics"].items() if isinstance(value, float)
            )
            bar.write(
                f"{run_id(record['task'], record['condition'], record['seed'])}: {record['seconds']:.0f} s;"
                f" {metrics}"
            )

    # Run folders named by position, not by the condition: a SPEC is a path, which may hold "/" or "..".
    jobs = [
        (task, condition, seed, run_config(args, task, seed, condition, scratch / f"run{number}"))
        for number, (task, condition, seed) in enumerate(planned)
        if run_id(task, condition, seed) not in done
    ]
    try:
        record_session(study, session, started)
        save_json(study, out_dir / JSON_NAME)
        run_jobs(jobs, args.workers, finished)
    finally:
        bar.close()
        shutil.rmtree(scratch, ignore_errors=True)
        record_session(study, session, started)
        session["interrupted"] = not study["complete"]
        save_json(study, out_dir / JSON_NAME)
        if study["runs"]:
            save_figure(plot_study(study), out_dir / FIGURE_NAME)
    return study


def report(study: dict) -> str:
    lines = [summary_table(study)]
    if study.get("note"):
        lines.append(f"\nNote: {study['note']}")
    if study["missing"]:
        lines.append(f"\n{len(study['missing'])} run(s) not finished yet: {', '.join(study['missing'])}")
    lines.append(
        f"\nStudy wall time: {study['seconds'] / 60:.1f} min over {len(study['sessions'])} session(s)."
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    if args.report_only:

        def redraw(_: list) -> None:
            study = load_study(argparse.ArgumentParser(), out_dir)
            refresh(study)
            save_json(study, out_dir / JSON_NAME)
            if study["runs"]:
                save_figure(plot_study(study), out_dir / FIGURE_NAME)
            print(report(study))

        return run_until_interrupted(redraw, lambda _: "", unit="report")

    def run(_: list) -> None:
        study = run_study(args)
        print(report(study))
        print(f"\nWrote {out_dir / JSON_NAME} and {out_dir / FIGURE_NAME}")

    def kept() -> dict:
        path = out_dir / JSON_NAME
        return json.loads(path.read_text()) if path.is_file() else {"runs": [], "planned": []}

    def stopped(_: list) -> str:
        study = kept()
        return (
            f"{len(study['runs'])} of {len(study['planned'])} runs finished and kept in"
            f" {out_dir / JSON_NAME}; run the same command again to continue."
        )

    def kept_report(_: list) -> str:
        study = kept()  # read once: the study as the stop left it
        return report(study) if study["runs"] else ""

    return run_until_interrupted(run, kept_report, unit="run", stopped=stopped)


if __name__ == "__main__":
    sys.exit(main())
