"""How fast the hand-written LSTM trains, next to torch.nn.LSTM, on this machine.

    python benchmarks/bench_lstm.py [--quick] [--compile] [--json results.json]

Part 1 times one training step at each size (batch, seq_len, input_size, hidden_size): the
gradients are set to None, the model runs forward over a random sequence, and `output.sum()` is
backpropagated; with `--optimizer` an optimizer step follows. Every model holds the same weights,
all run in one process, interleaved: each repetition times every model once, in a rotating order,
so that a change in the machine's load falls on all of them. The table gives the median and its
ratio to torch.nn.LSTM. With `--compile`, torch.compile of the project's LSTM joins them, timed
after warm-up, and the seconds its first step took (the compilation) are given apart.

Part 2 measures the peak memory of one long sequence (20 000 steps) for nn.LSTM and every variant,
each in a fresh process: a forward without gradients and a training step. Part 3 times one epoch of
each experiment, `--cell custom` against `--cell torch`, through the scripts' own `parse_args` and
`train`. Part 4 times `python demo_script.py` end to end in a new process, imports included (its
default quick settings), the figure the README gives for the demo.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiment_utils import compile_model, describe_machine, markdown_table
from lstm_cell import BPTT_LARGEST_STATE, LSTM, VARIANTS

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED_SIZES = [(16, 20, 1, 20), (1, 40, 1, 50)]
LARGER_SIZE = (64, 100, 32, 256)
EXPERIMENTS = ("binary_counting", "sine_wave_prediction")
REFERENCE = "torch.nn.LSTM"
COMPILED = "torch.compile(LSTM standard)"


class TorchCellLoop(nn.Module):
    """A Python loop over torch.nn.LSTMCell: the usual way to write an LSTM one step at a time."""

    def __init__(self, lstm: nn.LSTM) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(lstm.input_size, lstm.hidden_size, dtype=lstm.weight_ih_l0.dtype)
        self.cell.load_state_dict({name[: -len("_l0")]: value for name, value in lstm.state_dict().items()})

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h = c = x.new_zeros(x.shape[1], self.cell.hidden_size)
        outputs = []
        for x_t in x:
            h, c = self.cell(x_t, (h, c))
            outputs.append(h)
        return torch.stack(outputs), (h, c)


def parse_size(text: str) -> tuple[int, int, int, int]:
    try:
        size = tuple(int(part) for part in text.split(","))
    except ValueError:
        size = ()
    if len(size) != 4 or min(size) <= 0:
        raise argparse.ArgumentTypeError(f"expected batch,seq_len,input_size,hidden_size, got {text!r}")
    return size


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=parse_size,
        nargs="+",
        default=[*PUBLISHED_SIZES, LARGER_SIZE],
        metavar="B,T,I,H",
        help="batch,seq_len,input_size,hidden_size (default: 16,20,1,20 1,40,1,50 64,100,32,256)",
    )
    parser.add_argument(
        "--repeats", type=int, default=15, help="timings of each model per size (default: 15)"
    )
    parser.add_argument(
        "--min-time",
        type=float,
        default=0.05,
        help="seconds each timing lasts at least; short steps are repeated within it (default: 0.05)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--optimizer",
        choices=("none", "sgd", "adam"),
        default="none",
        help="add this optimizer's step to the timed step (default: none)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time the project's LSTM compiled as the scripts compile it (compile_model)",
    )
    parser.add_argument(
        "--memory-size",
        type=parse_size,
        default=MEMORY_SIZE,
        metavar="B,T,I,H",
        help="the size whose peak memory is measured (default: 16,20000,1,64)",
    )
    parser.add_argument("--skip-memory", action="store_true", help="leave out the memory part")
    parser.add_argument("--epoch-repeats", type=int, default=3, help="epochs timed per experiment and cell")
    parser.add_argument("--skip-epochs", action="store_true", help="time training steps only")
    parser.add_argument(
        "--skip-demo", action="store_true", help="leave out the end-to-end time of `python demo_script.py`"
    )
    parser.add_argument("--quick", action="store_true", help="the published sizes, 5 repeats, 1 epoch each")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument(
        "--readme",
        type=Path,
        default=None,
        help="also write the page benchmarks/README.md is, from this run (every part, both published sizes)",
    )
    args = parser.parse_args(argv)
    if args.readme is not None:
        # The page names COMMAND and describes its run: every part, both published sizes, one thread,
        # no optimizer step, the default repeats.
        parts = ("skip_memory", "skip_epochs", "skip_demo", "quick")
        unlike = [f"--{name.replace('_', '-')}" for name in parts if getattr(args, name)]
        unlike += [f"no {size}" for size in PUBLISHED_SIZES if size not in args.sizes]
        unlike += (
            [] if args.threads == 1 else [f"--threads {args.threads}" if args.threads else "no --threads 1"]
        )
        unlike += [f"--optimizer {args.optimizer}"] if args.optimizer != "none" else []
        if unlike:
            parser.error(
                f"--readme writes the page of `{COMMAND}`: every part at both published sizes, --threads 1,"
                f" no optimizer; this run has {', '.join(unlike)}"
            )
    if args.quick:
        if args.sizes == [*PUBLISHED_SIZES, LARGER_SIZE]:
            args.sizes = list(PUBLISHED_SIZES)
        args.repeats = min(args.repeats, 5)
        args.min_time = min(args.min_time, 0.02)
        args.epoch_repeats = 1
    if args.repeats <= 0 or args.epoch_repeats <= 0 or args.min_time < 0:
        parser.error("--repeats and --epoch-repeats must be positive and --min-time not negative")
    return args


# ---------------------------------------------------------------------------------------------------
# Part 1: one training step.


def make_models(size: tuple[int, int, int, int], args: argparse.Namespace) -> dict[str, nn.Module]:
    """Every model of the comparison: each variant with backward="auto" (named with the path that takes
    at this size, `training_path(batch)`) and with "autograd", and PyTorch's two ways; the standard
    ones hold the same weights."""
    batch, _, input_size, hidden_size = size
    reference = nn.LSTM(input_size, hidden_size)
    models = {}
    for variant in VARIANTS:
        for backward in ("auto", "autograd"):
            lstm = LSTM.from_torch(reference) if variant == "standard" else LSTM(*size[2:], variant=variant)
            lstm.backward = backward
            models[model_name(variant, backward, lstm.training_path(batch))] = lstm
    models["loop over torch.nn.LSTMCell"] = TorchCellLoop(reference)
    models[REFERENCE] = reference
    if args.compile:
        try:
            models[COMPILED] = compile_model(LSTM.from_torch(reference))
        except RuntimeError as error:  # no torch.compile in this PyTorch
            print(f"Left out {COMPILED}: {error}", file=sys.stderr)
    return models


def model_name(variant: str, backward: str, path: str) -> str:
    return f"LSTM {variant}, " + ("autograd" if backward == "autograd" else f"auto ({path})")


def training_step(model: nn.Module, x: Tensor, optimizer_name: str) -> Callable[[], None]:
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = None
    if optimizer_name == "sgd":
        optimizer = torch.optim.SGD(parameters, lr=1e-3)
    elif optimizer_name == "adam":
        optimizer = torch.optim.Adam(parameters, lr=1e-3)

    def step() -> None:
        for parameter in parameters:
            parameter.grad = None
        output, _ = model(x)
        output.sum().backward()
        if optimizer is not None:
            optimizer.step()

    return step


def seconds_per_call(function: Callable[[], None], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls


def time_steps(size: tuple[int, int, int, int], args: argparse.Namespace) -> dict:
    batch, seq_len, input_size, _ = size
    torch.manual_seed(0)
    x = torch.randn(seq_len, batch, input_size)
    steps = {name: training_step(model, x, args.optimizer) for name, model in make_models(size, args).items()}

    first_step_seconds = {}
    for name, step in list(steps.items()):
        try:
            first_step_seconds[name] = seconds_per_call(step, 1)
        except Exception as error:  # only compiling can fail here, for want of a working compiler
            if name != COMPILED:
                raise
            print(f"Left out {COMPILED}: it does not compile here ({type(error).__name__}).", file=sys.stderr)
            del steps[name]
    calls = {}
    for name, step in steps.items():  # warm-up, and how many calls make one timing last min_time
        seconds = min(seconds_per_call(step, 1) for _ in range(3))
        calls[name] = max(1, round(args.min_time / max(seconds, 1e-9)))

    names = list(steps)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            samples[name].append(seconds_per_call(steps[name], calls[name]))

    reference = statistics.median(samples[REFERENCE])
    results = {}
    for name in names:
        median = statistics.median(samples[name])
        results[name] = {
            "median_ms": 1e3 * median,
            "ratio_to_torch": median / reference,
            "samples_ms": [1e3 * sample for sample in samples[name]],
            "steps_per_sample": calls[name],
        }
        if name == COMPILED:
            results[name]["compile_seconds"] = first_step_seconds[name]
    return {
        "batch": batch,
        "seq_len": seq_len,
        "input_size": input_size,
        "hidden_size": size[3],
        "models": results,
    }


def steps_table(size_results: list[dict]) -> str:
    rows = []
    for result in size_results:
        size = f"({result['batch']}, {result['seq_len']}, {result['input_size']}, {result['hidden_size']})"
        for name, timing in result["models"].items():
            note = (
                f"first step (compiling) {timing['compile_seconds']:.1f} s"
                if "compile_seconds" in timing
                else ""
            )
            rows.append((size, name, f"{timing['median_ms']:.3g}", f"{timing['ratio_to_torch']:.2f}×", note))
    return markdown_table(("(batch, seq, input, hidden)", "model", "ms per step", "vs nn.LSTM", ""), rows)


# ---------------------------------------------------------------------------------------------------
# Part 2: peak memory of one long sequence.

MEMORY_SIZE = (16, 20_000, 1, 64)  # (batch, seq_len, input_size, hidden_size)
MEMORY_MODES = ("no_grad", "training")


def measure_memory(args: argparse.Namespace) -> list[dict]:
    """Peak memory of each model over one long sequence, forward without gradients and a training step.

    Each measurement runs in a process of its own, so that memory one model freed cannot hide what the
    next one takes. Linux only (it reads the peak resident set size from /proc); elsewhere, none.
    """
    if not Path("/proc/self/clear_refs").exists():
        print("Left out the memory part: it reads /proc, which this system does not have.", file=sys.stderr)
        return []
    names = [REFERENCE, *(f"LSTM {variant}" for variant in VARIANTS)]
    spawn = multiprocessing.get_context("spawn")
    results = []
    with spawn.Pool(1, maxtasksperchild=1) as pool:  # a fresh process for every measurement
        for name in names:
            megabytes = {
                mode: pool.apply(peak_megabytes, (name, mode, args.memory_size, args.threads or 1))
                for mode in MEMORY_MODES
            }
            results.append({"model": name, **{f"{mode}_mib": value for mode, value in megabytes.items()}})
    for result in results:
        for mode in MEMORY_MODES:
            result[f"{mode}_ratio_to_torch"] = result[f"{mode}_mib"] / results[0][f"{mode}_mib"]
    return results


def peak_megabytes(name: str, mode: str, size: tuple[int, int, int, int], threads: int) -> float:
    """MiB by which the resident set grows at its peak while `name` runs `mode` over one sequence."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    batch, seq_len, input_size, hidden_size = size
    if name == REFERENCE:
        model = nn.LSTM(input_size, hidden_size)
    else:
        model = LSTM(input_size, hidden_size, variant=name.split()[1])
    x = torch.randn(seq_len, batch, input_size)

    def run(inputs: Tensor) -> None:
        with torch.set_grad_enabled(mode == "training"):
            output, _ = model(inputs)
            if mode == "training":
                output.sum().backward()

    run(x[:10])  # one-time costs (the check of the cell, lazy initialization) are not what is measured
    gc.collect()
    baseline = resident_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak so far (VmHWM) falls to the current size
    run(x)
    return (resident_kib("VmHWM") - baseline) / 1024


def resident_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def memory_table(memory_results: list[dict]) -> str:
    rows = [
        (
            result["model"],
            *(
                f"{result[f'{mode}_mib']:.0f} ({result[f'{mode}_ratio_to_torch']:.2f}×)"
                for mode in MEMORY_MODES
            ),
        )
        for result in memory_results
    ]
    return markdown_table(
        ("model", "forward, no_grad: MiB (vs nn.LSTM)", "training step: MiB (vs nn.LSTM)"), rows
    )


# ---------------------------------------------------------------------------------------------------
# Part 3: one epoch of each experiment.


def time_epochs(args: argparse.Namespace) -> list[dict]:
    results = []
    for experiment in EXPERIMENTS:
        try:
            script = importlib.import_module(experiment)
        except ModuleNotFoundError as error:
            if error.name != experiment:
                raise
            print(f"Skipped the epoch of {experiment}: {experiment}.py is not there.", file=sys.stderr)
            continue
        seconds = {"custom": [], "torch": []}
        with tempfile.TemporaryDirectory() as out_dir:
            for repeat in range(args.epoch_repeats):
                for cell in ("custom", "torch") if repeat % 2 == 0 else ("torch", "custom"):
                    settings = script.parse_args(
                        ["--epochs", "1", "--quiet", "--out-dir", out_dir, "--cell", cell]
                    )
                    start = time.perf_counter()
                    script.train(settings)
                    seconds[cell].append(time.perf_counter() - start)
        custom, reference = (statistics.median(seconds[cell]) for cell in ("custom", "torch"))
        results.append(
            {
                "experiment": experiment,
                "custom_seconds": custom,
                "torch_seconds": reference,
                "ratio_to_torch": custom / reference,
                "samples_seconds": seconds,
            }
        )
    return results


def epochs_table(epoch_results: list[dict]) -> str:
    rows = [
        (
            f"`{result['experiment']}.py --epochs 1`",
            f"{result['custom_seconds']:.2f}",
            f"{result['torch_seconds']:.2f}",
            f"{result['ratio_to_torch']:.2f}×",
        )
        for result in epoch_results
    ]
    return markdown_table(("one epoch of", "--cell custom (s)", "--cell torch (s)", "ratio"), rows)


# ---------------------------------------------------------------------------------------------------
# Part 4: the demo, end to end, as a newcomer runs it.


def time_demo() -> dict:
    """`python demo_script.py` end to end, as a newcomer runs it: a new process, imports included."""
    with tempfile.TemporaryDirectory() as out_dir:
        command = [sys.executable, str(ROOT / "demo_script.py"), "--quiet", "--out-dir", out_dir]
        start = time.perf_counter()
        subprocess.run(command, check=True, cwd=ROOT, capture_output=True)
        return {"command": "python demo_script.py", "seconds": time.perf_counter() - start}


# ---------------------------------------------------------------------------------------------------
# The machine, and the whole run.


def load_average() -> float | None:
    """The 1-minute load average: how busy the machine was with other work, where the OS tells."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def machine_line(info: dict) -> str:
    threads = f"{info['torch_threads']} thread{'s' if info['torch_threads'] != 1 else ''}"
    line = f"{info['cpu']}, {info['logical_cores']} logical cores, PyTorch {info['torch']} with {threads}"
    if info["load_average_at_start"] is not None:
        line += (
            f"; load average {info['load_average_at_start']:.1f} at the start, "
            f"{info['load_average_at_end']:.1f} at the end"
        )
    return line + "."


@contextlib.contextmanager
def fresh_compile_cache() -> Iterator[None]:
    """An empty Inductor cache, so that a compile time is that of a first run and not of a cache hit."""
    previous = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        try:
            yield
        finally:
            if previous is None:
                del os.environ["TORCHINDUCTOR_CACHE_DIR"]
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous


# ---------------------------------------------------------------------------------------------------
# benchmarks/README.md, written from a run's JSON (`--readme`; a test checks the committed page).

# What the project sets itself (see the page): ratios to nn.LSTM at the published sizes and in memory, and
# at LARGER_SIZE the default path's to the same cell's backward="autograd".
BOUNDS = {"standard": 3.0, "variant": 6.0, "memory": 1.5, "default vs autograd": 1.1}
COMMAND = (
    "python benchmarks/bench_lstm.py --threads 1 --json benchmarks/results.json --readme benchmarks/README.md"
)


def published_ratios(run: dict) -> dict[str, list[float]]:
    """At each published size: the standard cell's ratio to nn.LSTM in its default path (hand-derived
    BPTT), and the slowest variant's in its default path."""
    sizes = {
        (size["batch"], size["seq_len"], size["input_size"], size["hidden_size"]): size
        for size in run["sizes"]
    }
    ratios: dict[str, list[float]] = {"standard": [], "variant": []}
    for size in PUBLISHED_SIZES:
        defaults = {
            name: timing["ratio_to_torch"]
            for name, timing in sizes[size]["models"].items()
            if ", auto (" in name
        }
        ratios["standard"].append(defaults[model_name("standard", "auto", "bptt")])
        ratios["variant"].append(max(ratio for name, ratio in defaults.items() if "standard" not in name))
    return ratios


def largest_memory_ratio(run: dict) -> float:
    return max(max(result[f"{mode}_ratio_to_torch"] for mode in MEMORY_MODES) for result in run["memory"])


def large_size_ratios(run: dict) -> dict[str, float]:
    """At LARGER_SIZE, when the run has it: each variant's default path's time over its autograd's."""
    sizes = [
        size
        for size in run["sizes"]
        if (size["batch"], size["seq_len"], size["input_size"], size["hidden_size"]) == LARGER_SIZE
    ]
    if not sizes:
        return {}
    models = sizes[0]["models"]
    default = {
        name.split(",")[0][len("LSTM ") :]: timing for name, timing in models.items() if ", auto (" in name
    }
    return {
        variant: timing["median_ms"] / models[model_name(variant, "autograd", "")]["median_ms"]
        for variant, timing in default.items()
    }


def readme_text(run: dict) -> str:
    """benchmarks/README.md for the run `run` (the JSON `--json` writes): its tables and what they show."""
    ratios = published_ratios(run)
    memory = largest_memory_ratio(run)
    large = large_size_ratios(run)
    batch, seq_len, _, hidden_size = run["memory_size"]
    missed = [
        what
        for what, values, bound in (
            ("the standard cell's", ratios["standard"], BOUNDS["standard"]),
            ("the slowest variant's", ratios["variant"], BOUNDS["variant"]),
        )
        if max(values) > bound
    ] + (["memory's"] if memory > BOUNDS["memory"] else [])
    missed += ["the large size's"] if large and max(large.values()) > BOUNDS["default vs autograd"] else []
    verdict = "All hold in this run." if not missed else f"Not met in this run: {', '.join(missed)} bound."
    large_text = (
        f" At {LARGER_SIZE}, every variant's default path within {BOUNDS['default vs autograd']:g}× of the"
        f' time of its `backward="autograd"`: measured {min(large.values()):.2f}× to'
        f" {max(large.values()):.2f}×."
        if large
        else ""
    )

    def pair(values: list[float], form: str = "{:.2f}×") -> str:
        return f"{form.format(values[0])} and {form.format(values[1])}"

    bullets = [
        "**The bounds the project sets itself**: at the two published sizes, (16, 20, 1, 20) and (1, 40, 1,"
        f" 50), the standard cell's training step within {BOUNDS['standard']:g}× of `torch.nn.LSTM`, every"
        f" variant within {BOUNDS['variant']:g}×, and memory within {BOUNDS['memory']:g}×. Measured here: the"
        f" standard cell at {pair(ratios['standard'])}; the slowest variant at {pair(ratios['variant'])};"
        f" memory at most {memory:.2f}× of nn.LSTM's.{large_text} {verdict}",
        "**Which path `auto` takes.** Every path runs the cell's own code forward: `autograd` calls the"
        " cell at every step (its `forward`: a matmul pair per gate) and differentiates every call it made;"
        " the hand-written BPTT of `lstm_bptt` runs the shipped cell's step on pre-activations from stacked"
        " matrices and makes 3 small calls a step backward, so it wins where calls cost more than their"
        " arithmetic: for the textbook cell (whose derivatives are written out) up to a state of batch ×"
        f" hidden = {BPTT_LARGEST_STATE['bptt']}, for a shipped variant (whose step autograd differentiates"
        " again, for all steps at once) only up to"
        f" {BPTT_LARGEST_STATE['bptt, local derivatives by autograd']}, as at batch 1. Beyond,"
        " `lstm_cell.BPTT_LARGEST_STATE`, `auto` trains by autograd, as it does every cell of your own.",
        "**Why the small sizes cost more.** `torch.nn.LSTM` runs each step inside C++; ours makes about ten"
        " small PyTorch calls a step forward (the cell's step: its matmul and its gates), and at these"
        " sizes each call costs more than its arithmetic. At (64, 100, 32, 256) the arithmetic dominates.",
        "**Memory.** A shipped cell's forward without gradients keeps nothing for a backward: the input"
        " projections are computed 256 steps at a time. A training step keeps, per step, the"
        " pre-activations of the gates, c and h (by hand), or what autograd saves of each call.",
        "**Compiled.** `--compile` in either script runs the model through `torch.compile` (the layer then"
        " calls the cell and autograd differentiates the traced graph); `bench_lstm.py --compile` times it."
        " This run leaves it out: compiling takes tens of seconds per size.",
        "**Threads.** Both scripts default to `--threads 1`: models this small gain nothing from more"
        " threads, and on a busy 2-core machine the threads of each small matmul wait on each other.",
    ]
    sections = [
        f"# Speed and memory: `{COMMAND}`",
        "The benchmark times one training step (forward, and backward of `output.sum()`) of each model:"
        ' every cell of `lstm_cell.VARIANTS` with `backward="auto"` (named with the path it takes at that'
        " size: `bptt`, the hand-written backward pass of `lstm_bptt.py` with the textbook derivatives;"
        " `bptt, local derivatives by autograd`, the same loop with the derivatives of the variant's own"
        ' step; or `autograd`) and with `backward="autograd"`, a Python loop over `torch.nn.LSTMCell`,'
        " and `torch.nn.LSTM`."
        " All run in the same process, interleaved. The table gives the median and the ratio to"
        f" `torch.nn.LSTM`. Then it measures the peak memory of one sequence of {seq_len:,} steps (batch"
        f" {batch}, hidden {hidden_size}), each model in a fresh process, times one epoch of each"
        " experiment with either cell (the scripts' whole `train`: the epoch's training steps, its"
        " evaluation and its figure), and `python demo_script.py` end to end as a newcomer runs it."
        " [`results.json`](results.json) holds the run below; a test checks that this page is the one"
        " `--readme` writes from it.",
        f"Measured on: {machine_line(run['machine'])}",
        steps_table(run["sizes"]),
        memory_table(run["memory"]),
        epochs_table(run["epochs"]),
        f"`{run['demo']['command']}` took {run['demo']['seconds']:.0f} s.",
        "**What these numbers show:**",
        "\n".join(f"- {bullet}" for bullet in bullets),
    ]
    return "\n\n".join(sections) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    step = "forward + backward of output.sum()"
    step += f", then one {args.optimizer} step" if args.optimizer != "none" else ", no optimizer step"
    results = {
        "machine": {**describe_machine(), "load_average_at_start": load_average()},
        "settings": {key: str(value) for key, value in vars(args).items()},
    }
    results["step"] = step
    with fresh_compile_cache():
        results["sizes"] = [time_steps(size, args) for size in args.sizes]
    results["memory"] = [] if args.skip_memory else measure_memory(args)
    results["memory_size"] = list(args.memory_size)
    results["epochs"] = [] if args.skip_epochs else time_epochs(args)
    results["demo"] = None if args.skip_demo else time_demo()
    results["machine"]["load_average_at_end"] = load_average()

    print(machine_line(results["machine"]))
    print(f"\nOne training step ({step}), median of {args.repeats} timings:\n")
    print(steps_table(results["sizes"]))
    if results["memory"]:
        batch, seq_len, _, hidden_size = args.memory_size
        print(f"\nPeak memory over one sequence of {seq_len} steps (batch {batch}, hidden {hidden_size}):\n")
        print(memory_table(results["memory"]))
    if results["epochs"]:
        print(f"\nOne epoch of each experiment (`--epochs 1`), median of {args.epoch_repeats}:\n")
        print(epochs_table(results["epochs"]))
    if results["demo"]:
        print(f"\n`{results['demo']['command']}` took {results['demo']['seconds']:.0f} s.")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.readme is not None:
        args.readme.parent.mkdir(parents=True, exist_ok=True)
        args.readme.write_text(readme_text(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
