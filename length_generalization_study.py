"""Which changes make an LSTM trained on short sequences count long ones? Each configuration over seeds.

Every configuration is a command line of `binary_counting.py`, the one its entry records; this
script turns it into binary_counting's `Config` once, with its own `parse_args`, and trains that
configuration with each seed (in this process, with binary_counting's own `train`). It reads the
longest counted length (`binary_counting.longest_counted_length`: the largest L such that every
length 1 … L is counted right on ≥ 99 % of 500 fresh sequences) up to the target, 200 bits, and
up to the whole scan, 1 000 bits, the accuracy at every scanned length, and what the trained counter
does inside (`inside_counter`), and writes

    figures/length_generalization.json   {"configurations": [{"name", "command", "seeds", …}]}
    figures/length_generalization.png    accuracy against length, one line per configuration
    figures/length_generalization_best.pt (+ .json)   the best run's weights, for load_model

    python length_generalization_study.py               # the committed study (half an hour on one core)
    python length_generalization_study.py --quick       # tiny settings, seconds, under runs/
    python length_generalization_study.py --report-only # the figure redrawn from the JSON, no training

The files are written after every configuration. Ctrl-C or SIGTERM stops the study with one line
(status 130 or 143) and keeps every finished configuration; entries already in --out-dir stay until
a configuration of the same name replaces them, so `--only NAME …` finishes a stopped study.

Each entry's "command" with `--seed S` reproduces, on a CPU, the committed number for seed S. The
configurations, the literature behind them and the reading of the results are in the README
("Counting beyond the training length").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

import binary_counting
from experiment_utils import (
    OutputError,
    check_out_dir,
    describe_machine,
    interrupts_held,
    load_model,
    markdown_table,
    recurrent_weights,
    run_until_interrupted,
    save_figure,
    save_json,
    save_torch,
    seed_value,
)

JSON_NAME = "length_generalization.json"
FIGURE_NAME = "length_generalization.png"
BEST_NAME = "length_generalization_best"  # .pt: the best run's weights; .json: its config, for load_model
SEEDS = [0, 1, 2, 3, 4]
DESCRIPTION = (
    "binary_counting.py over seeds; longest_counted_length: the largest L ≤ target_length such that every"
    " length 1 … L is counted right (rounded prediction = count) on ≥ 99 % of 500 fresh sequences;"
    " longest_counted_length_full_scan: the same up to max_test_length, the number each command with"
    " --seed S prints for seed S; inside: length_generalization_study.inside_counter of each trained model."
)
MAX_TRAIN_LENGTH = 20
TARGET_LENGTH = 10 * MAX_TRAIN_LENGTH  # the study's target: a median longest counted length of 200
LONG_SCAN_LENGTH = 1000  # and how far the best configurations really go: the same rule, scanned further
SCAN = ["--max-test-length", str(LONG_SCAN_LENGTH)]

# (name, the options of binary_counting.py). The first block is the published model's training made
# to fit more lengths; the second changes the model itself: the head reads the cell state c (which
# can grow without bound, where h = o ⊙ tanh(c) cannot), a one-unit cell, a forget gate that cannot
# leak (nfg: f ≡ 1; or a forget bias of 20, σ(20) = 1 − 2e-9), and an L1 penalty that cuts the
# recurrent feedback W_h*. Shorter training than the published 20 epochs in the first block, and
# larger steps in the second (Adam lr 1e-2 on batches of 32), keep the study near half an hour on one core.
MIXED = ["--train-lengths", "1", str(MAX_TRAIN_LENGTH)]
EVERY_STEP = [*MIXED, "--target", "every-step"]
LEVERS = ["--epochs", "20", *EVERY_STEP, "--lr", "1e-2", "--batch-size", "32"]
READ_C = [*LEVERS, "--readout", "c"]
FIRST_BLOCK: list[tuple[str, list[str]]] = [
    ("published", []),
    ("mixed lengths", ["--epochs", "5", *MIXED]),
    ("mixed lengths, every-step target", ["--epochs", "5", *EVERY_STEP]),
    ("+ noaf (unbounded h)", ["--epochs", "5", *EVERY_STEP, "--variant", "noaf"]),
    ("+ noaf, forget bias 5", ["--epochs", "5", *EVERY_STEP, "--variant", "noaf", "--forget-bias", "5"]),
    (
        "+ noaf, hidden size 4, 10 epochs",
        ["--epochs", "10", *EVERY_STEP, "--variant", "noaf", "--hidden-size", "4"],
    ),
]
CONFIGURATIONS: list[tuple[str, list[str]]] = [
    *FIRST_BLOCK,
    ("every-step, lr 1e-2, batch 32, 20 epochs", LEVERS),
    ("+ readout c", READ_C),
    ("+ readout c, nfg", [*READ_C, "--variant", "nfg"]),
    ("+ readout c, forget bias 20", [*READ_C, "--forget-bias", "20"]),
    ("+ readout c, nfg, recurrent L1 1e-3", [*READ_C, "--variant", "nfg", "--recurrent-l1", "1e-3"]),
    ("+ readout c, hidden size 1", [*READ_C, "--hidden-size", "1"]),
    ("+ readout c, hidden size 1, forget bias 20", [*READ_C, "--hidden-size", "1", "--forget-bias", "20"]),
    ("+ readout c, hidden size 1, nfg", [*READ_C, "--hidden-size", "1", "--variant", "nfg"]),
]
# Each configuration keeps its own cell and size, so that the quick study runs what the study runs.
QUICK = ["--epochs", "1", "--train-samples", "64", "--valid-samples", "20"]
QUICK_SCAN = ["--max-test-length", "12"]
QUICK_TARGET_LENGTH = 6
QUICK_OUT_DIR = Path("runs/length_generalization_quick")


@dataclass
class Config:
    """The study's settings; the defaults are the committed study's (every configuration, seeds 0–4,
    into figures/). `out_dir` and `runs_dir` None: figures/ and runs/length_generalization/, or
    under QUICK_OUT_DIR with `quick`, so that a trial never overwrites the committed study."""

    out_dir: Path | None = None
    runs_dir: Path | None = None
    seeds: list[int] = field(default_factory=lambda: list(SEEDS))
    only: list[str] | None = None  # configuration names; None: all of them
    quick: bool = False
    report_only: bool = False

    def __post_init__(self) -> None:
        if self.out_dir is None:
            self.out_dir = QUICK_OUT_DIR if self.quick else Path("figures")
        if self.runs_dir is None:
            self.runs_dir = QUICK_OUT_DIR / "runs" if self.quick else Path("runs/length_generalization")
        self.out_dir, self.runs_dir = Path(self.out_dir), Path(self.runs_dir)


def parse_args(argv: list[str] | None = None) -> Config:
    """The study's settings from a command line; bad values exit with status 2 before any training."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="where the JSON and figures go (default: figures, the committed study; with --quick,"
        f" {QUICK_OUT_DIR}, so that a trial never overwrites it)",
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=None,
        help="where each run writes its own files (default: runs/length_generalization, ignored by git;"
        f" with --quick, {QUICK_OUT_DIR / 'runs'})",
    )
    parser.add_argument(
        "--seeds", type=seed_value, nargs="+", default=SEEDS, metavar="S", help="(default: 0 1 2 3 4)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="run only these configurations (by name; default: all); the others keep their entries"
        " in the JSON already in --out-dir",
    )
    parser.add_argument(
        "--quick", action="store_true", help="every configuration on tiny settings, for tests (seconds)"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: redraw the figure from the study's JSON in --out-dir and print its table"
        " (after a change to how they are drawn)",
    )
    args = Config(**vars(parser.parse_args(argv)))
    # Before any training: a folder that cannot be written would lose every finished run, and a JSON
    # there that is not a study cannot keep its entries.
    check_out_dir(parser, args.out_dir)
    check_out_dir(parser, args.runs_dir, "--runs-dir")
    problem = study_problem(args.out_dir / JSON_NAME)
    if problem is not None:
        parser.error(
            f"--out-dir: {args.out_dir / JSON_NAME} {problem}; move it away or choose another --out-dir"
        )
    names = [name for name, _ in CONFIGURATIONS]
    unknown = sorted(set(args.only or ()) - set(names))
    if unknown:
        parser.error(f"--only: no configuration named {', '.join(map(repr, unknown))}; choose from {names}")
    if args.report_only and not (args.out_dir / JSON_NAME).is_file():
        parser.error(
            f"--report-only: no study to report in {args.out_dir} (expected {args.out_dir / JSON_NAME})"
        )
    if args.report_only and args.only:
        parser.error("--report-only trains nothing; leave out --only")
    return args


def configurations(quick: bool = False) -> list[tuple[str, list[str]]]:
    """(name, options of binary_counting.py) for every configuration: the study's, or tiny ones."""
    if not quick:
        return [(name, [*options, *SCAN]) for name, options in CONFIGURATIONS]
    # The quick options come last, so they override the study's --epochs.
    return [(name, [*options, *QUICK, *QUICK_SCAN]) for name, options in CONFIGURATIONS]


def command_of(options: list[str]) -> str:
    return shlex.join(["python", "binary_counting.py", *options])


def run_configuration(
    name: str, options: list[str], seeds: list[int], runs_dir: Path, target_length: int = TARGET_LENGTH
) -> dict:
    """Train `options` with every seed; the JSON entry of the configuration.

    Each run scans to its --max-test-length (LONG_SCAN_LENGTH); the study's measure is the longest
    counted length up to `target_length`, the same rule on the first lengths of that scan, so it is
    min(the run's longest counted length, target_length)."""
    entry = {
        "name": name,
        "command": command_of(options),
        "max_train_length": None,
        "max_test_length": None,  # how far each run scanned
        "target_length": target_length,
        "seeds": list(seeds),
        "longest_counted_length": [],  # up to target_length
        "longest_counted_length_full_scan": [],  # up to max_test_length: the run's own number
        "accuracy_at_max_test_length": [],
        "accuracy_by_length": [],  # one list per seed; entry n − 1 is the accuracy on n-bit sequences
        "inside": [],  # one dict per seed: `inside_counter` of the trained model
        "final_valid_loss": [],
        "seconds": [],
        "run_dirs": [],
    }
    for seed in seeds:
        out_dir = runs_dir / slug(name) / f"seed{seed}"
        args = dataclasses.replace(
            binary_counting.parse_args(options), seed=seed, out_dir=out_dir, quiet=True, no_figures=True
        )
        start = time.perf_counter()
        result = binary_counting.train(args)
        seconds = time.perf_counter() - start
        entry["max_train_length"] = args.seq_len
        entry["max_test_length"] = args.max_test_length
        entry["longest_counted_length"].append(min(result.longest_counted_length, target_length))
        entry["longest_counted_length_full_scan"].append(result.longest_counted_length)
        entry["accuracy_at_max_test_length"].append(result.accuracy_by_length[-1])
        entry["accuracy_by_length"].append(result.accuracy_by_length)
        entry["inside"].append(inside_counter(result.model, args.max_test_length, args.seq_len))
        entry["final_valid_loss"].append(result.history[-1]["valid_loss"])
        entry["seconds"].append(seconds)
        entry["run_dirs"].append(str(out_dir))
        print(
            f"{name}, seed {seed}: longest counted length {entry['longest_counted_length'][-1]}"
            f" (to {target_length}), {result.longest_counted_length} (to {args.max_test_length})",
            flush=True,
        )
    entry["machine"] = describe_machine()  # what the numbers were computed with, as the runs set it up
    return entry


INSIDE_SEQUENCES = 10  # random sequences that inside_counter averages over (generator seed 0)
SATURATED = 0.99  # |tanh(c)| at least this: the unit's h no longer changes with its count


def largest_recurrent_weight(lstm: torch.nn.Module) -> float:
    """max |W_h*| over every gate's recurrent matrix (`recurrent_weights`)."""
    return max(matrix.abs().max().item() for matrix in recurrent_weights(lstm))


@torch.no_grad()
def inside_counter(model: torch.nn.Module, length: int, train_length: int) -> dict[str, float]:
    """What the trained counter does inside, on INSIDE_SEQUENCES random sequences of `length` bits.

    The steps are read in two windows of w = min(train_length, length // 2) steps: the first w (the
    lengths training showed) and the last w. Keys:
    count_per_one_first / _last, count_per_zero_first / _last: the mean change of the predicted count
    at a step that reads a 1 (a 0), in each window (an exact counter: 1 and 0);
    saturated_units_first / _last: the share of units (over sequences) whose |tanh(c)| ≥ SATURATED
    at the window's last step, where h = o ⊙ tanh(c) carries no more of the count back into the gates;
    forget_gate_min: the smallest f of any unit at any step; largest_recurrent_weight: max |W_h*|;
    error_at_end: the mean absolute error of the prediction after the last bit.
    """
    model.eval()
    window = max(1, min(train_length, length // 2))
    bits = torch.randint(0, 2, (INSIDE_SEQUENCES, length, 1), generator=torch.Generator().manual_seed(0))
    bits = bits.float()
    states = model.lstm.trace(bits)[-1]
    predictions = binary_counting.running_predictions(model, bits)
    before = model.head.bias.expand(INSIDE_SEQUENCES, 1)  # the prediction from the zero state
    change = torch.diff(predictions, dim=1, prepend=before)
    read = bits.squeeze(-1)
    first, last = slice(0, window), slice(length - window, length)

    def mean_change(steps: slice, bit: float) -> float:
        chosen = read[:, steps] == bit
        return change[:, steps][chosen].mean().item() if chosen.any() else float("nan")

    def saturated(step: int) -> float:
        return (states["c"][:, step].tanh().abs() >= SATURATED).float().mean().item()

    return {
        "count_per_one_first": mean_change(first, 1.0),
        "count_per_one_last": mean_change(last, 1.0),
        "count_per_zero_first": mean_change(first, 0.0),
        "count_per_zero_last": mean_change(last, 0.0),
        "saturated_units_first": saturated(window - 1),
        "saturated_units_last": saturated(length - 1),
        "forget_gate_min": states["f"].min().item(),
        "largest_recurrent_weight": largest_recurrent_weight(model.lstm),
        "error_at_end": (predictions[:, -1] - read.sum(dim=1)).abs().mean().item(),
    }


def slug(name: str) -> str:
    return "".join(character if character.isalnum() else "_" for character in name).strip("_")


def best_run(study: dict) -> tuple[dict, int]:
    """(configuration, index of its seed): the best seed of the configuration with the highest median
    longest counted length up to the target, then up to the whole scan (ties: the earlier
    configuration, the earlier seed)."""

    def rank(entry: dict) -> tuple[float, float]:
        return tuple(statistics.median(entry[key]) for key in RANKED_BY)

    best = max(study["configurations"], key=rank)
    seeds = list(zip(*(best[key] for key in RANKED_BY), strict=True))
    return best, seeds.index(max(seeds))


RANKED_BY = ("longest_counted_length", "longest_counted_length_full_scan")


def save_best(study: dict, out_dir: Path) -> None:
    """Copy the best run's weights to out_dir/BEST_NAME.pt with the JSON that load_model reads beside it."""
    configuration, index = best_run(study)
    run_dir = Path(configuration["run_dirs"][index])
    run = run_in(run_dir)
    # The folder must still hold that very run: a later, interrupted run of the same seed may have
    # replaced it, and a fresh clone has none (runs/ is not committed).
    if run is None or run.get("accuracy_by_length") != configuration["accuracy_by_length"][index]:
        if kept_best_is(configuration, index, out_dir):
            return  # the copy already in out_dir is that run's
        raise OutputError(
            f"the best run, {configuration['name']!r} with seed {configuration['seeds'][index]}, is no longer"
            f" in {run_dir} nor in {out_dir}; run it again with --only {shlex.quote(configuration['name'])}"
        )
    config = run["config"]
    model = load_model(run_dir / binary_counting.WEIGHTS_NAME, config)
    save_torch(model.state_dict(), out_dir / f"{BEST_NAME}.pt")
    save_json(
        {
            "name": configuration["name"],
            "command": configuration["command"],
            "seed": configuration["seeds"][index],
            "longest_counted_length": configuration["longest_counted_length"][index],
            "longest_counted_length_full_scan": configuration["longest_counted_length_full_scan"][index],
            "config": config,
            "machine": run["machine"],
        },
        out_dir / f"{BEST_NAME}.json",
    )


def run_in(run_dir: Path) -> dict | None:
    """The JSON binary_counting.py wrote into run_dir, or None where there is none to read."""
    try:
        return json.loads((run_dir / binary_counting.JSON_NAME).read_text())
    except (OSError, ValueError):
        return None


def kept_best_is(configuration: dict, index: int, out_dir: Path) -> bool:
    """Whether out_dir already holds the best weights of that configuration's seed `index`."""
    path = out_dir / f"{BEST_NAME}.json"
    if not (path.is_file() and (out_dir / f"{BEST_NAME}.pt").is_file()):
        return False
    best = json.loads(path.read_text())
    names = (configuration["name"], configuration["seeds"][index])
    return isinstance(best, dict) and (best.get("name"), best.get("seed")) == names


def summary_table(study: dict) -> str:
    """The README table: per configuration, the median and the range of the longest counted length up
    to the target and up to the whole scan, and the median accuracy at the scan's longest length."""
    entries = study["configurations"]
    target, scan = entries[0]["target_length"], entries[0]["max_test_length"]
    header = (
        "Configuration",
        "Command",
        "Seeds",
        f"Longest counted length (to {target}): median",
        "range",
        f"to {scan}: median",
        "range",
        f"Accuracy at {scan} bits: median",
    )
    rows = []
    for entry in entries:
        options = entry["command"].removeprefix("python binary_counting.py").strip() or "(defaults)"
        within, full = entry["longest_counted_length"], entry["longest_counted_length_full_scan"]
        accuracy = statistics.median(entry["accuracy_at_max_test_length"])
        rows.append(
            (
                entry["name"],
                f"`{options}`",
                len(within),
                f"{statistics.median(within):g}",
                f"{min(within)}–{max(within)}",
                f"{statistics.median(full):g}",
                f"{min(full)}–{max(full)}",
                f"{100 * accuracy:.1f} %",
            )
        )
    return markdown_table(header, rows)


LONG = f"{LONG_SCAN_LENGTH:,}".replace(",", " ")
INSIDE_ROWS = (  # (key of inside_counter, how the table names it, its format)
    ("count_per_one_first", f"a 1 adds to the prediction, first {MAX_TRAIN_LENGTH} steps", "{:.4f}"),
    ("count_per_one_last", f"a 1 adds, last {MAX_TRAIN_LENGTH} of {LONG} steps", "{:.4f}"),
    ("count_per_zero_first", f"a 0 adds, first {MAX_TRAIN_LENGTH} steps", "{:.4f}"),
    ("count_per_zero_last", f"a 0 adds, last {MAX_TRAIN_LENGTH} of {LONG} steps", "{:.4f}"),
    (
        "saturated_units_first",
        f"units with abs(tanh c) ≥ {SATURATED} after {MAX_TRAIN_LENGTH} bits",
        "{:.0%}",
    ),
    ("saturated_units_last", f"the same after {LONG} bits", "{:.0%}"),
    ("forget_gate_min", f"smallest f at any step of {LONG}", "{:.4f}"),
    ("largest_recurrent_weight", "largest abs(W_h*)", "{:.2f}"),
    ("error_at_end", f"mean abs(error) after {LONG} bits", "{:.2f}"),
)


# The configurations whose insides the README and the notebook compare (`inside_table`).
INSIDE_COMPARED = [
    "+ readout c, hidden size 1",
    "+ readout c, hidden size 1, forget bias 20",
    "+ readout c, hidden size 1, nfg",
    "+ readout c, nfg",
    "+ readout c, nfg, recurrent L1 1e-3",
]


@torch.no_grad()
def one_unit_reading(model: torch.nn.Module, length: int = LONG_SCAN_LENGTH) -> dict[str, float]:
    """How a one-unit counter counts, from `LSTM.trace` on one random sequence of `length` bits
    (generator seed 0): the smallest f; i ⊙ g at a 1 (mean and standard deviation) and at a 0 (mean);
    the head's weight and what a 1 adds to the prediction through it (weight × mean i ⊙ g); the error
    after the last bit; the first step from which |tanh(c)| ≥ SATURATED stays; h after a 1 and after a 0
    (means over the steps after MAX_TRAIN_LENGTH) and their largest deviation from those means; the
    largest |W_h*|. ValueError unless the model's LSTM has one layer of one unit."""
    if len(model.lstm.cells) != 1 or model.lstm.hidden_size != 1:
        raise ValueError(f"expected a one-layer LSTM of one unit, got {model.lstm}")
    bits = torch.randint(0, 2, (1, length, 1), generator=torch.Generator().manual_seed(0)).float()
    steps = {key: value[0, :, 0] for key, value in model.lstm.trace(bits)[0].items()}
    error = binary_counting.running_predictions(model, bits)[0] - bits[0, :, 0].cumsum(0)
    one = bits[0, :, 0] == 1
    written = steps["i"] * steps["g"]
    unsaturated = (steps["c"].tanh().abs() < SATURATED).nonzero()
    later = slice(MAX_TRAIN_LENGTH, length)
    h_after = {bit: steps["h"][later][one[later] == bit] for bit in (True, False)}
    weight = model.head.weight.item()
    return {
        "forget_gate_min": steps["f"].min().item(),
        "write_per_one": written[one].mean().item(),
        "write_per_one_spread": written[one].std().item(),
        "write_per_zero": written[~one].mean().item(),
        "head_weight": weight,
        "count_per_one": weight * written[one].mean().item(),
        "error_at_end": error[-1].abs().item(),
        "saturated_from_step": int(unsaturated[-1]) + 2 if len(unsaturated) else 1,
        "h_after_one": h_after[True].mean().item(),
        "h_after_zero": h_after[False].mean().item(),
        "h_spread": max((h - h.mean()).abs().max().item() for h in h_after.values()),
        "largest_recurrent_weight": largest_recurrent_weight(model.lstm),
    }


def inside_table(study: dict, names: list[str]) -> str:
    """What the counters of the configurations `names` do inside (`inside_counter`), the median over
    each configuration's seeds: one row per quantity, one column per configuration."""
    entries = {entry["name"]: entry for entry in study["configurations"]}
    header = ("median over the seeds", *(f"{name}" for name in names))
    rows = [
        (label, *(shown(form, median_inside(entries[name], key)) for name in names))
        for key, label, form in INSIDE_ROWS
    ]
    return markdown_table(header, rows)


def shown(form: str, value: float) -> str:
    text = form.format(value)
    return text.removeprefix("-") if float(text.rstrip("%")) == 0 else text  # never "-0.0000"


def inside_medians(entry: dict) -> dict[str, float]:
    """Every quantity of `inside_counter`, the median over the configuration's seeds."""
    return {key: median_inside(entry, key) for key in entry["inside"][0]}


def median_inside(entry: dict, key: str) -> float:
    """The median over the configuration's seeds of one quantity of `inside_counter`."""
    return statistics.median(inside[key] for inside in entry["inside"])


BLOCK_TITLES = (
    "Training changed, the model as published (Adam lr 1e-3, batch 16)",
    "Larger steps, then the model changed (Adam lr 1e-2, batch 32, 20 epochs)",
)


def plot_study(study: dict) -> Figure:
    """Accuracy against sequence length (log scale), one line (the median over seeds) per configuration,
    the band between the worst and the best seed shaded; the first block above the second."""
    entries = study["configurations"]
    first = {name for name, _ in FIRST_BLOCK}
    blocks = [[e for e in entries if e["name"] in first], [e for e in entries if e["name"] not in first]]
    titles = [title for title, block in zip(BLOCK_TITLES, blocks, strict=True) if block]
    blocks = [block for block in blocks if block]
    figure = Figure(figsize=(10, 4.6 * len(blocks) + 0.6), layout="constrained")  # a notebook column
    all_axes = figure.subplots(len(blocks), 1, sharex=True, squeeze=False)[:, 0]
    longest_train = max(entry["max_train_length"] for entry in entries)
    target = entries[0]["target_length"]
    for axes, block, title in zip(all_axes, blocks, titles, strict=False):
        axes.axvspan(0.8, longest_train + 0.5, color="0.93", label=f"training lengths (≤ {longest_train})")
        axes.axvline(target, color="0.5", ls=":", lw=1.5, label=f"the target: {target}")
        for index, entry in enumerate(block):
            accuracy = 100 * np.array(entry["accuracy_by_length"])
            lengths = np.arange(1, accuracy.shape[1] + 1)
            median = statistics.median(entry["longest_counted_length_full_scan"])
            # Lines that hold to the end lie on top of each other at 100 %: a style each tells them apart.
            (line,) = axes.plot(
                lengths,
                np.median(accuracy, axis=0),
                lw=2.5 - 0.4 * (index % 4),
                ls=("-", "--", "-.", ":")[index % 4],
                zorder=3,
                label=f"{entry['name']} (median L = {median:g})",
            )
            axes.fill_between(
                lengths, accuracy.min(axis=0), accuracy.max(axis=0), color=line.get_color(), alpha=0.08, lw=0
            )
        axes.axhline(100 * binary_counting.COUNTED_SHARE, color="k", ls="--", lw=0.8, label="99 %: counted")
        axes.set(
            xscale="log",
            ylabel="share of sequences counted right (%)",
            title=title,
            ylim=(-2, 102),
            xlim=(0.8, accuracy.shape[1] * 1.05),
        )
        axes.grid(alpha=0.3)
        axes.legend(loc="lower left", fontsize=8)
    all_axes[-1].set_xlabel("sequence length n (bits, log scale)")
    figure.suptitle(
        "Counting beyond the training length\n(line: median over seeds; band: worst to best seed;"
        " L: longest counted length)"
    )
    return figure


def main(argv: list[str] | None = None) -> int:
    """Run the study; the exit status of `run_until_interrupted` (Ctrl-C 130, SIGTERM 143, each keeping
    every finished configuration in --out-dir)."""
    args = parse_args(argv)
    if args.report_only:
        study = json.loads((args.out_dir / JSON_NAME).read_text())

        def redraw(_: list[dict]) -> None:
            save_figure(plot_study(study), args.out_dir / FIGURE_NAME)
            print(summary_table(study))
            print(f"\nWrote {args.out_dir / FIGURE_NAME}")

        # Ctrl-C and a figure that cannot be written end in one line, as in a study that trains.
        return run_until_interrupted(redraw, lambda _: "", unit="figure")
    # Entries already in --out-dir stay until a configuration of the same name replaces them: what
    # --only leaves alone, and what a stopped study has not reached yet.
    kept = {}
    if (args.out_dir / JSON_NAME).is_file():
        previous = json.loads((args.out_dir / JSON_NAME).read_text())["configurations"]
        kept = {entry["name"]: entry for entry in previous}
    chosen = [
        (name, options)
        for name, options in configurations(args.quick)
        if args.only is None or name in args.only
    ]

    def run(finished: list[dict]) -> None:
        for name, options in chosen:
            target = QUICK_TARGET_LENGTH if args.quick else TARGET_LENGTH
            finished.append(run_configuration(name, options, args.seeds, args.runs_dir, target))
            # After every configuration, so that a stopped study keeps what finished.
            write_study(study_of(finished, kept, args.quick), args.out_dir)
        print(summary_table(study_of(finished, kept, args.quick)))
        print(
            f"\nWrote {args.out_dir / JSON_NAME}, {args.out_dir / FIGURE_NAME}, {args.out_dir / BEST_NAME}.pt"
        )

    def report(finished: list[dict]) -> str:
        done = {entry["name"] for entry in finished}
        rest = [name for name, _ in chosen if name not in done]
        return (
            f"Kept in {args.out_dir}: {len(finished)} finished configuration(s); to finish, run again"
            f" with --only {shlex.join(rest)}"
        )

    return run_until_interrupted(run, report, unit="configuration")


# What every configuration's entry holds (run_configuration writes them).
ENTRY_KEYS = (
    "name",
    "command",
    "seeds",
    "max_train_length",
    "target_length",
    "max_test_length",
    "longest_counted_length",
    "longest_counted_length_full_scan",
    "accuracy_at_max_test_length",
    "accuracy_by_length",
    "inside",
    "run_dirs",
)


def study_problem(path: Path) -> str | None:
    """Why the file at `path` is not a study this script wrote, or None (also when there is none)."""
    if not path.exists():
        return None
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        return f"cannot be read as JSON ({type(error).__name__})"
    entries = results.get("configurations") if isinstance(results, dict) else None
    if not isinstance(entries, list):
        return "is not a study (no list of configurations)"
    if not entries:
        return "is not a study (its list of configurations is empty)"
    for entry in entries:
        if not (isinstance(entry, dict) and all(key in entry for key in ENTRY_KEYS)):
            return f"holds an entry that is not a configuration's ({', '.join(ENTRY_KEYS)})"
        problem = entry_problem(entry)
        if problem is not None:
            return f"holds an entry, {entry.get('name')!r}, whose {problem}"
    return None


PER_SEED = ("longest_counted_length", "longest_counted_length_full_scan", "accuracy_at_max_test_length")
PER_SEED += ("accuracy_by_length", "inside", "run_dirs")


def entry_problem(entry: dict) -> str | None:
    """What in a configuration's entry is not of the kind run_configuration writes, or None."""
    for key in ("max_train_length", "target_length", "max_test_length"):
        if not (isinstance(entry[key], int) and entry[key] > 0):
            return f"{key} is {entry[key]!r}, not a positive whole number"
    seeds = entry["seeds"]
    if not (isinstance(seeds, list) and seeds):
        return "seeds are not a non-empty list"
    for key in PER_SEED:
        if not (isinstance(entry[key], list) and len(entry[key]) == len(seeds)):
            return f"{key} is not a list of one value per seed"
    if not all(
        isinstance(a, list) and len(a) == entry["max_test_length"] for a in entry["accuracy_by_length"]
    ):
        return "accuracy_by_length does not hold max_test_length accuracies per seed"
    return None


def study_of(finished: list[dict], kept: dict[str, dict], quick: bool) -> dict:
    """The study's JSON: every configuration in its order, run now (`finished`) or kept from before."""
    entries = {entry["name"]: entry for entry in finished}
    return {
        "description": DESCRIPTION,
        "configurations": [
            entries.get(name, kept.get(name))
            for name, _ in configurations(quick)
            if name in entries or name in kept
        ],
    }


def write_study(study: dict, out_dir: Path) -> None:
    """The best run's weights, the figure and the JSON last, each atomically and all with Ctrl-C and
    SIGTERM held, so that a stopped study leaves the three files of one set of configurations."""
    with interrupts_held():
        save_best(study, out_dir)  # first: where the best run is gone, nothing is rewritten
        save_figure(plot_study(study), out_dir / FIGURE_NAME)
        save_json(study, out_dir / JSON_NAME)


if __name__ == "__main__":
    sys.exit(main())
