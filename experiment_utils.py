"""What both experiments share: settings, seeding, the device, the model, safe writes and the report.

`binary_counting.py` and `sine_wave_prediction.py` each read top to bottom on their own; the pieces
here are the ones they would otherwise both have to write.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from tqdm.auto import tqdm

from lstm_cell import LSTM

DEVICES = ("auto", "cpu", "cuda", "mps")
CELLS = ("custom", "torch")
INTERRUPTED_EXIT_STATUS = 130  # what a shell reports for a program stopped by Ctrl-C


# ---------------------------------------------------------------------------------------------------
# Command-line settings. Each check runs while arguments are parsed, so a bad value is a usage error
# (exit status 2) before anything is trained or written.


def positive_int(text: str) -> int:
    return whole_number_at_least(1, text, "a positive whole number")


def non_negative_int(text: str) -> int:
    return whole_number_at_least(0, text, "a whole number ≥ 0")


def whole_number_at_least(minimum: int, text: str, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def available_device(text: str) -> torch.device:
    try:
        return resolve_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_common_arguments(parser: argparse.ArgumentParser, *, default_out_dir: str = "figures") -> None:
    """--seed, --device, --cell, --compile, --threads, --quiet and --out-dir, the same in every script."""
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--device",
        type=available_device,
        default="auto",
        metavar="{" + ",".join(DEVICES) + "}",
        help="where to train; auto picks a GPU when there is one (default: auto)",
    )
    parser.add_argument(
        "--cell",
        choices=CELLS,
        default="custom",
        help="custom: the hand-written LSTM; torch: torch.nn.LSTM from the same initial weights",
    )
    parser.add_argument(
        "--compile", action="store_true", help="run the model through torch.compile (compile time reported)"
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="CPU threads for torch (default: 1; models this small gain nothing from more, and on a"
        " busy machine the threads of each small matmul wait on each other)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars and no per-epoch lines")
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path(default_out_dir),
        help=f"where the figures and the JSON results go (default: {default_out_dir}/)",
    )


def config_of(args: argparse.Namespace) -> dict:
    """The settings of a run as plain JSON values."""
    return {
        key: value if isinstance(value, (bool, int, float, list)) else str(value)
        for key, value in vars(args).items()
    }


# ---------------------------------------------------------------------------------------------------
# Reproducibility and the device.


def start_run(args: argparse.Namespace) -> torch.device:
    """Seed every generator, set the CPU threads, and return the device the run trains on."""
    seed_everything(args.seed)
    torch.set_num_threads(args.threads)
    return resolve_device(args.device)


def seed_everything(seed: int) -> None:
    """Seed every random number generator a run draws from, so the same seed gives the same run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch.device for a name in DEVICES; ValueError for a device this machine does not have."""
    name = str(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if name not in available:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {name!r}")
    if not available[name]:
        raise ValueError(f"device {name!r} was asked for, but this machine has none")
    return torch.device(name)


def describe_machine() -> dict:
    """The CPU, its cores, and the PyTorch and Python versions: what a timing was measured on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        model_names = [
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")
        ]
        if model_names:
            cpu = model_names[0].split(":", 1)[1].strip()
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


# ---------------------------------------------------------------------------------------------------
# The model both experiments train: an LSTM and a linear head on its last hidden state.


class LastStepRegressor(nn.Module):
    """Reads a sequence (batch, seq_len, input_size) and predicts one number per sequence."""

    def __init__(self, lstm: nn.Module) -> None:
        super().__init__()
        self.lstm = lstm
        self.head = nn.Linear(lstm.hidden_size, 1)

    def forward(self, x: Tensor) -> Tensor:
        output, _ = self.lstm(x)
        return self.head(output[:, -1]).squeeze(-1)


def build_model(
    cell: str, hidden_size: int, device: torch.device, *, input_size: int = 1
) -> LastStepRegressor:
    """The model with the hand-written LSTM, or with torch.nn.LSTM holding the very same initial weights.

    Both choices draw the same random numbers, so `--cell custom` and `--cell torch` with one seed
    start from one point and any difference between their runs comes from the LSTMs themselves.
    torch.nn.LSTM adds two biases per gate where ours has one; its second bias (zero after
    `to_torch`) is frozen, or the optimizer would move the gate's total bias twice as fast.
    """
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
    model = LastStepRegressor(LSTM(input_size, hidden_size, batch_first=True))
    if cell == "torch":
        model.lstm = model.lstm.to_torch()
        for layer in range(model.lstm.num_layers):
            getattr(model.lstm, f"bias_hh_l{layer}").requires_grad_(False)
    return model.to(device)


# Inductor settings under which the compiled LSTM trains fastest on a 2-core CPU (measured with
# benchmarks/bench_lstm.py): a C++ wrapper launches the kernels instead of a Python one, and a matmul
# with one row (batch size 1) becomes a loop that Inductor fuses with the gates around it.
COMPILE_OPTIONS = {"cpp_wrapper": True, "post_grad_fusion_options": {"decompose_mm_pass": {}}}


def compile_model(model: nn.Module) -> nn.Module:
    """torch.compile(model) for fixed shapes; RuntimeError naming the reason where it cannot compile."""
    if not hasattr(torch, "compile"):
        raise RuntimeError(
            f"--compile needs torch.compile (PyTorch ≥ 2.0), this is PyTorch {torch.__version__}"
        )
    import torch._inductor.config as inductor_config

    options = {key: value for key, value in COMPILE_OPTIONS.items() if hasattr(inductor_config, key)}
    return torch.compile(model, dynamic=False, options=options)


# ---------------------------------------------------------------------------------------------------
# Output: written beside the target, then renamed, so a reader never sees a half-written file.


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def save_json(data: dict, path: Path) -> None:
    write_atomically(path, lambda partial: partial.write_text(json.dumps(data, indent=2) + "\n"))


def save_figure(figure: Figure, path: Path) -> None:
    path = Path(path)
    write_atomically(path, lambda partial: figure.savefig(partial, format=path.suffix.lstrip("."), dpi=110))


# ---------------------------------------------------------------------------------------------------
# Progress and the report.


def progress(iterable: Iterable, *, quiet: bool, description: str, total: int | None = None) -> Iterable:
    """A progress bar on a terminal; nothing when quiet or when the output goes to a file or pipe."""
    hidden = quiet or not sys.stderr.isatty()
    return tqdm(iterable, desc=description, total=total, leave=False, disable=hidden, unit="batch")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def run_until_interrupted(train: Callable[[list[dict]], object], report: Callable[[list[dict]], str]) -> int:
    """Run `train(history)`; on Ctrl-C stop with one line, the report of the finished epochs, status 130.

    `train` appends one dict per finished epoch to `history` and writes its files after each, so an
    interrupted run keeps every finished epoch.
    """
    history: list[dict] = []
    try:
        train(history)
    except KeyboardInterrupt:
        print(f"\nInterrupted: stopped after {len(history)} finished epoch(s).", file=sys.stderr)
        if history:
            print(report(history))
        return INTERRUPTED_EXIT_STATUS
    return 0
