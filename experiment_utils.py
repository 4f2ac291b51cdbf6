"""What both experiments share: settings, seeding, the device, the model, safe writes and the report.

`binary_counting.py` and `sine_wave_prediction.py` each read top to bottom on their own; the pieces
here are the ones they would otherwise both have to write.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import importlib
import importlib.util
import json
import math
import os
import platform
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from tqdm.auto import tqdm

from lstm_cell import LSTM, VARIANTS, LSTMCell

DEVICES = ("auto", "cpu", "cuda", "mps")
CELLS = ("custom", "torch")
INTERRUPTED_EXIT_STATUS = 130  # what a shell reports for a program stopped by Ctrl-C (128 + SIGINT)
TERMINATED_EXIT_STATUS = 143  # what a shell reports for a program stopped by SIGTERM (128 + 15)
DIVERGED_EXIT_STATUS = 3  # the training loss stopped being a finite number
WRITE_FAILED_EXIT_STATUS = 1  # an output file could not be written
MAX_SEED = 2**32 - 1  # numpy's generator accepts seeds 0 … 2**32 - 1; torch and random accept more
# Settings that may differ when a run is resumed: where and how it runs, not what it trains (another
# --threads may round a sum differently in its last bit).
FREE_ON_RESUME = ("out_dir", "quiet", "no_figures", "threads", "resume")
NOT_SETTINGS = ("resume", "no_figures")  # how a run starts and what it draws, not what it computes


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


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number ≥ 0, got {text!r}")
    return value


def seed_value(text: str) -> int:
    """A --seed: a whole number that every generator of a run accepts (numpy's is the narrowest)."""
    return whole_number_in_range(0, MAX_SEED, text)


def thread_count(text: str) -> int:
    """A --threads: from 1 to this machine's logical cores; more would only wait on each other."""
    return whole_number_in_range(1, os.cpu_count() or 1, text, limit="this machine's logical cores")


def whole_number_in_range(minimum: int, maximum: int, text: str, *, limit: str = "") -> int:
    """int(text) when it lies in minimum … maximum; ArgumentTypeError naming the range (and `limit`)."""
    value = whole_number_at_least(minimum, text, f"a whole number from {minimum} to {maximum}")
    if value > maximum:
        because = f" ({limit})" if limit else ""
        raise argparse.ArgumentTypeError(
            f"expected a whole number from {minimum} to {maximum}{because}, got {value}"
        )
    return value


def available_device(text: str) -> torch.device:
    try:
        return resolve_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


@dataclass
class RunSettings:
    """The settings every script shares, the fields of each script's configuration (`Config`): which
    cell, where it trains and what it writes. The command-line options of `add_common_arguments` build
    them; in code, build the script's `Config` (`binary_counting.Config(epochs=6, seed=1)`).

    Raises ValueError, naming the setting, for a device this machine has not, and for a cell that
    cannot be built or trained with these settings (`cell_problem`): a variant other than standard
    with cell "torch", a forget bias the cell refuses, a cell whose trial training step raises.
    """

    seed: int = 0
    device: str | torch.device = "auto"
    cell: str = "custom"  # "custom": the hand-written LSTM; "torch": torch.nn.LSTM from the same weights
    compile: bool = False
    threads: int = 1
    quiet: bool = False
    no_figures: bool = False
    out_dir: Path = Path("runs")
    variant: str = "standard"  # a SPEC: a built-in name, path/to/file.py:ClassName or module:ClassName
    forget_bias: float | None = None
    resume: bool = False

    # Numbers that may be zero or of any sign; every other int or float setting must be positive.
    NON_NEGATIVE = ("seed", "recurrent_l1", "plot_epochs")
    ANY_SIGN = ("forget_bias",)

    def __post_init__(self) -> None:
        check_field_values(self)
        if self.seed > MAX_SEED:
            raise ValueError(f"seed: expected 0 … {MAX_SEED}, got {self.seed}")
        self.out_dir = Path(self.out_dir)
        self.device = resolve_device(self.device)  # "auto" becomes this machine's GPU or CPU
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        problem = cell_problem(self.variant, self.cell, self.forget_bias)
        if problem is not None:
            raise ValueError(problem)


def check_field_values(config: RunSettings) -> None:
    """TypeError for a setting of `config` that is not of its field's type (int, float, bool, or a
    list of ints; None where the type allows it), ValueError for a number out of range: below 0, or
    0 too unless its name is in NON_NEGATIVE, or not finite."""
    for setting in fields(config):
        kind, value = str(setting.type), getattr(config, setting.name)
        if value is None and "None" in kind:
            continue
        numbers = value if kind.startswith("list[int]") else [value]
        if kind.startswith("list[int]") and not isinstance(value, (list, tuple)):
            raise TypeError(f"{setting.name}: expected a list of whole numbers, got {value!r}")
        for number in numbers:
            if kind.startswith(("int", "list[int]")) and not is_whole(number):
                raise TypeError(f"{setting.name}: expected a whole number, got {number!r}")
            if kind.startswith("float") and not is_number(number):
                raise TypeError(f"{setting.name}: expected a number, got {number!r}")
            if kind.startswith("float"):
                setattr(config, setting.name, float(number))  # recorded as the command line records it
            if kind == "bool" and not isinstance(number, bool):
                raise TypeError(f"{setting.name}: expected True or False, got {number!r}")
            if kind.startswith(("int", "float", "list[int]")) and setting.name not in config.ANY_SIGN:
                low = 0 if setting.name in config.NON_NEGATIVE else None
                if not math.isfinite(number) or number < 0 or (low is None and number == 0):
                    what = "whole number" if kind.startswith(("int", "list[int]")) else "finite number"
                    expected = f"a {what} ≥ 0" if low == 0 else f"a positive {what}"
                    raise ValueError(f"{setting.name}: expected {expected}, got {number!r}")
            if setting.name in config.ANY_SIGN and not math.isfinite(number):
                raise ValueError(f"{setting.name}: expected a finite number, got {number!r}")
        if kind.startswith("list[int]"):
            setattr(config, setting.name, list(value))


def is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def configured(parser: argparse.ArgumentParser, config_class: type, args: argparse.Namespace):
    """The configuration `config_class(**vars(args))` of parsed options; a usage error (naming the
    resumed run with --resume) for settings it refuses."""
    try:
        return config_class(**vars(args))
    except ValueError as error:
        if getattr(args, "resume", False):
            parser.error(f"--resume: the run in {args.out_dir} cannot be resumed: {error}")
        parser.error(str(error))


def add_common_arguments(
    parser: argparse.ArgumentParser, *, default_out_dir: str = "runs", resumable: bool = True
) -> None:
    """--seed, --device, --cell, --compile, --threads, --quiet, --no-figures, --out-dir, --variant,
    --forget-bias (and --resume), the same everywhere.

    `resumable=False` leaves --resume out, for a script that runs several experiments in one go.
    """
    parser.add_argument(
        "--seed", type=seed_value, default=RunSettings.seed, help=f"random seed, 0 … {MAX_SEED} (default: 0)"
    )
    parser.add_argument(
        "--device",
        type=available_device,
        default=RunSettings.device,
        metavar="{" + ",".join(DEVICES) + "}",
        help="where to train; auto picks a GPU when there is one (default: auto)",
    )
    parser.add_argument(
        "--cell",
        choices=CELLS,
        default=RunSettings.cell,
        help="custom: the hand-written LSTM; torch: torch.nn.LSTM from the same initial weights",
    )
    parser.add_argument(
        "--compile", action="store_true", help="run the model through torch.compile (compile time reported)"
    )
    parser.add_argument(
        "--threads",
        type=thread_count,
        default=RunSettings.threads,
        help="CPU threads for torch, at most this machine's logical cores (default: 1; models this small"
        " gain nothing from more, and on a busy machine the threads of each small matmul wait on each other)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars and no per-epoch lines")
    parser.add_argument(
        "--no-figures",
        action="store_true",
        help="draw no figures; the JSON, the weights and the checkpoint are written as usual (for studies"
        " and tests, where drawing the figures after every epoch can take longer than the epoch)",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path(default_out_dir),
        help=f"where the figures, the JSON results, the weights and the checkpoint go (default:"
        f" {default_out_dir}/). Two runs may share a folder: each writes under its own temporary names,"
        " and whichever finishes last leaves its whole files.",
    )
    if parser.epilog is None:
        parser.epilog = (
            "exit status: 0 finished; 2 usage error (before anything is written);"
            f" {INTERRUPTED_EXIT_STATUS} Ctrl-C; {TERMINATED_EXIT_STATUS} SIGTERM (both keep the finished"
            f" epochs); {DIVERGED_EXIT_STATUS} the training loss diverged;"
            f" {WRITE_FAILED_EXIT_STATUS} an output file could not be written"
        )
    parser.add_argument(
        "--variant",
        type=variant_spec,
        default=RunSettings.variant,
        metavar="SPEC",
        help="the LSTM cell: standard (torch.nn.LSTM's), one of Greff et al.'s (2017) variants"
        f" ({', '.join(name for name in VARIANTS if name != 'standard')}), or a cell of your own, an"
        " lstm_cell.LSTMCell subclass named as path/to/file.py:ClassName or module:ClassName (a module"
        " importable from the working folder); check it first with check_cell.py (default: standard)",
    )
    parser.add_argument(
        "--forget-bias",
        type=finite_float,
        default=RunSettings.forget_bias,
        metavar="B",
        help="initial forget-gate bias of every cell (default: PyTorch's uniform initialization;"
        " Jozefowicz et al. 2015 recommend 1)",
    )
    if resumable:
        parser.add_argument(
            "--resume",
            action="store_true",
            help="continue the run in --out-dir from its last finished epoch, exactly as if it had never"
            " stopped. Its settings come from the run; an option given here that contradicts them is an"
            " error (--threads, --quiet and --no-figures may change).",
        )


def config_of(args: argparse.Namespace | RunSettings) -> dict:
    """The settings of a run (a script's Config, or parsed options) as plain JSON values (without
    NOT_SETTINGS: --resume is how a run started, --no-figures what it draws), the script's own
    settings first, and with a --variant, "cell_class": the class it loaded (`cell_class_name`)."""
    shared = [field.name for field in fields(RunSettings)]
    items = sorted(vars(args).items(), key=lambda item: item[0] in shared)  # stable: each part's order
    config = {
        key: value if value is None or isinstance(value, (bool, int, float, list)) else str(value)
        for key, value in items
        if key not in NOT_SETTINGS
    }
    if "variant" in config:
        cell_class = load_cell_class(config["variant"])
        config["cell_class"] = cell_class_name(cell_class)
        digest = cell_source(cell_class)
        if digest is not None:
            config["cell_source"] = digest
    return config


# ---------------------------------------------------------------------------------------------------
# --variant SPEC: a built-in cell, or an LSTMCell subclass of the user's own, in a file or a module.


def load_cell_class(spec: str) -> type[LSTMCell]:
    """The LSTMCell subclass that `spec` names: a key of lstm_cell.VARIANTS ("standard", "cifg", …),
    "path/to/file.py:ClassName" (a path relative to the working folder, or absolute), or
    "module:ClassName" (a module importable from the working folder; "ClassName" may be dotted).

    A file is imported once per process, under a module name of its own, so that every SPEC naming it
    gives the same class. Raises TypeError for a spec that is not a string, and ValueError, one line
    naming the spec and what was expected, for one that cannot be imported, names nothing, or names
    something that is not an LSTMCell subclass (an import's own error is quoted, its first line).
    """
    if not isinstance(spec, str):
        raise TypeError(f"a cell SPEC is a string, got {type(spec).__name__}")
    if spec in VARIANTS:
        return VARIANTS[spec]
    where, colon, name = spec.rpartition(":")
    if not colon and spec.endswith(".py"):
        raise ValueError(f"{spec!r} names a file but no class: give {spec}:ClassName")
    if not colon or not where or not name:
        raise ValueError(
            f"{spec!r} is neither a built-in cell ({', '.join(VARIANTS)}) nor path/to/file.py:ClassName"
            " or module:ClassName"
        )
    module = import_file(where) if where.endswith(".py") else import_module(where)
    found: object = module
    for part in name.split("."):
        try:
            found = getattr(found, part, None)
        except Exception as error:  # a module's own __getattr__ that raises
            raise ValueError(f"{spec!r}: looking up {name} in {where} raises {first_line(error)}") from None
        if found is None:
            raise ValueError(f"{spec!r}: {where} defines no {name}")
    if not (isinstance(found, type) and issubclass(found, LSTMCell)):
        kind = f"the class {found.__name__}" if isinstance(found, type) else f"of type {type(found).__name__}"
        raise ValueError(f"{spec!r}: {name} is {kind}, expected a subclass of lstm_cell.LSTMCell")
    return found


def import_file(where: str) -> object:
    """The module of the Python file `where`, imported the first time it is asked for."""
    try:
        path = Path(where).resolve()
        is_file = path.is_file()
    except OSError as error:  # a name too long for the file system, say
        raise ValueError(f"no file {where}: {error.strerror or error}") from None
    if path.is_dir():
        raise ValueError(f"{where} is a folder, not a Python file (looked for {path})")
    if not is_file:
        raise ValueError(f"no file {where} (looked for {path})")
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    module_name = f"cell_file_{digest}_{''.join(c if c.isalnum() else '_' for c in path.stem)}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module  # before running it, as import does (dataclasses look it up)
    try:
        loader_spec.loader.exec_module(module)
    except BaseException as error:  # SystemExit too: a file that exits is no cell, not a finished run
        del sys.modules[module_name]
        if isinstance(error, KeyboardInterrupt):
            raise
        raise ValueError(f"cannot import {where}: {first_line(error)}") from None
    return module


def import_module(name: str) -> object:
    """importlib.import_module(name), looked for in the working folder first."""
    folder = os.getcwd()
    sys.path.insert(0, folder)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is not None and (name == error.name or name.startswith(error.name + ".")):
            raise ValueError(f"no module {name} importable from {folder}") from None
        raise ValueError(f"cannot import {name}: {first_line(error)}") from None
    except (Exception, SystemExit) as error:
        raise ValueError(f"cannot import {name}: {first_line(error)}") from None
    finally:
        sys.path.remove(folder)


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def cell_class_name(cls: type[LSTMCell]) -> str:
    """Where a cell class comes from, for the record: "module.ClassName" for a class of an importable
    module (lstm_cell.LSTMCell), "/absolute/path/file.py:ClassName" for one loaded from a file."""
    module = sys.modules.get(cls.__module__)
    spec = getattr(module, "__spec__", None)
    if spec is not None and spec.name.startswith("cell_file_") and spec.origin:
        return f"{spec.origin}:{cls.__qualname__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def cell_source(cls: type[LSTMCell]) -> str | None:
    """The SHA-256 of the file that defines a cell of your own, which a run records as "cell_source"
    so that --resume and load_model refuse a cell edited since, or another file of the same name;
    None for the cells lstm_cell.py ships."""
    if cls.__module__ == LSTMCell.__module__:
        return None
    file = getattr(sys.modules.get(cls.__module__), "__file__", None)
    if file is None:
        return None
    return hashlib.sha256(Path(file).read_bytes()).hexdigest()


def variant_spec(text: str) -> str:
    """A --variant: a SPEC that `load_cell_class` loads (kept as given, which the run records)."""
    try:
        load_cell_class(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def check_cell_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A usage error for a --variant, --forget-bias and --cell that cannot go together (`cell_problem`)."""
    problem = cell_problem(args.variant, args.cell, args.forget_bias)
    if problem is not None:
        parser.error(problem)


def cell_problem(variant: str, cell: str, forget_bias: float | None) -> str | None:
    """Why the cell SPEC `variant` cannot train with `cell` and `forget_bias`, or None: a variant with
    cell "torch" (nn.LSTM is the standard cell), a SPEC that does not load, a forget bias the cell
    refuses, a cell class that cannot be built, or one whose trial training step raises."""
    try:
        cell_class = load_cell_class(variant)
    except ValueError as error:
        return f"--variant: {error}"
    if cell == "torch" and cell_class is not LSTMCell:
        return f"--cell torch is torch.nn.LSTM, the standard cell; --variant {variant} needs --cell custom"
    try:
        with torch.random.fork_rng(devices=[]):  # a trial cell, whose random weights leave no trace
            cell_class(1, 1, forget_bias=forget_bias)
    except ValueError as error:
        return f"--forget-bias with --variant {variant}: {error}"
    except (Exception, SystemExit) as error:  # a cell of the user's own that cannot be built
        return (
            f"--variant {variant}: {cell_class.__name__}(1, 1, forget_bias={forget_bias})"
            f" fails: {first_line(error)}"
        )
    try:
        trial_step(cell_class, forget_bias)
    except (Exception, SystemExit) as error:  # a cell whose forward or backward raises (or exits)
        return (
            f"--variant {variant}: a trial training step of {cell_class.__name__} (a layer of"
            f" input 1, hidden 2, 2 steps, batch 2, forward and backward) fails: {first_line(error)}"
        )
    return None


def trial_step(cell_class: type[LSTMCell], forget_bias: float | None) -> None:
    """One forward and backward of a tiny layer of `cell_class` on random values, which leave no trace:
    a cell that raises there would raise in the first epoch, after the run's files were begun."""
    with torch.random.fork_rng(devices=[]):
        layer = LSTM(1, 2, variant=cell_class, forget_bias=forget_bias)
        output, (_, c_n) = layer(torch.randn(2, 2, 1))
        (output.sum() + c_n.sum()).backward()


def check_out_dir(parser: argparse.ArgumentParser, out_dir: Path, option: str = "--out-dir") -> None:
    """A usage error unless `out_dir` is a folder, or can be created as one, that this process can write.

    Nothing is left behind: the check writes an unnamed temporary file into the nearest folder that
    exists (the folder itself, or the one `out_dir` would be created in) and lets it vanish. `option`
    is what the error names.
    """
    existing = Path(out_dir)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        if existing == Path(out_dir):
            parser.error(f"{option}: expected a folder, got the file {out_dir}")
        parser.error(f"{option}: cannot create {out_dir}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        what = "write into" if existing == Path(out_dir) else f"create {out_dir} in"
        parser.error(f"{option}: cannot {what} {existing}: {error.strerror or error}")


def explicit_options(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> set[str]:
    """The settings (argparse dest names) written on the command line `argv`, whatever their values."""
    not_given = object()
    shadow = copy.deepcopy(parser)
    for action in shadow._actions:  # argparse has no public way to tell a default from a given value
        action.default = not_given
    given = shadow.parse_args(argv)
    return {name for name, value in vars(given).items() if value is not not_given}


def apply_resume(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    args: argparse.Namespace,
    checkpoint_name: str,
    resume_keys: ResumeKeys,
) -> None:
    """For --resume: take the stored run's settings into `args`; a usage error where they cannot be.

    Errors (exit status 2): no checkpoint `checkpoint_name` in --out-dir, one that cannot be read or
    lacks what the script's `resume_keys` name, weights or an optimizer state that do not fit the
    stored settings, a run that diverged, or an option on the command line that contradicts the
    stored setting. All of it is checked here, before any training.
    """
    if not getattr(args, "resume", False):
        return
    path = Path(args.out_dir) / checkpoint_name
    if not path.is_file():
        parser.error(f"--resume: no run to resume in {args.out_dir} (expected {path})")
    try:
        checkpoint = load_checkpoint(path)
    except Exception as error:  # a checkpoint we did not write, or a damaged one: say so in one line
        parser.error(
            f"--resume: {path} is not a checkpoint these scripts can read ({type(error).__name__});"
            " start a new run without --resume"
        )
    problem = checkpoint_problem(checkpoint, resume_keys)
    if problem is not None:
        parser.error(f"--resume: {path} cannot be resumed: {problem}; start a new run without --resume")
    stored, history = checkpoint["config"], checkpoint["history"]
    problem = stored_cell_problem(stored)
    if problem is not None:
        parser.error(
            f"--resume: the run in {args.out_dir} cannot be resumed: {problem}; restore its cell, or start"
            " a new run without --resume"
        )
    problem = stored_settings_problem(parser, stored)
    if problem is not None:
        parser.error(f"--resume: {path} cannot be resumed: {problem}; start a new run without --resume")
    if history and not math.isfinite(history[-1]["train_loss"]):
        parser.error(
            f"--resume: the run in {args.out_dir} diverged at epoch {history[-1]['epoch']};"
            " start it again without --resume (with a lower --lr)"
        )
    given = explicit_options(parser, argv)
    current = config_of(args)
    # A setting the stored run lacks came later than the run, which trained with its default.
    had = {**config_of(argparse.Namespace(**{name: parser.get_default(name) for name in current})), **stored}
    contradictions = [
        f"--{name.replace('_', '-')} {current[name]} (the run has {had[name]})"
        for name in sorted(given & current.keys())
        if name not in FREE_ON_RESUME and current[name] != had[name]
    ]
    if contradictions:
        parser.error(
            f"--resume: contradicts the run in {args.out_dir}: {'; '.join(contradictions)}."
            " Leave these options out, or start a new run without --resume"
        )
    for name, value in stored.items():
        # Where to look and whether to print are this command's business, not the stored run's.
        if name in given or name in ("out_dir", "resume", "quiet") or not hasattr(args, name):
            continue
        if name == "device":
            try:
                value = resolve_device(value)
            except ValueError as error:
                parser.error(f"--resume: the run in {args.out_dir} trained on {value}: {error}")
        if name == "threads" and value > (os.cpu_count() or 1):
            continue  # a run moved to a smaller machine keeps the default
        setattr(args, name, value)
    problem = state_problem(checkpoint, args, resume_keys)
    if problem is not None:
        parser.error(f"--resume: {path} cannot be resumed: {problem}; start a new run without --resume")


def resume_differences(args: RunSettings, stored: dict) -> str:
    """The settings, other than FREE_ON_RESUME, in which `args` differs from a stored run's config
    ("lr 0.5 here, 0.001 there; …"), or ""; a setting one of them lacks is not compared."""
    current = config_of(args)
    return "; ".join(
        f"{name} {current[name]} here, {stored[name]} there"
        for name in current.keys() & stored.keys()
        if name not in FREE_ON_RESUME and current[name] != stored[name]
    )


def stored_cell_problem(stored: dict) -> str | None:
    """Whether the stored --variant SPEC no longer loads, or loads another class than the run trained
    (a relative path resumed from another folder, say); None when it loads the same class."""
    spec = stored.get("variant")
    if not isinstance(spec, str):
        return None  # stored_settings_problem names it
    try:
        loaded = cell_class_name(load_cell_class(spec))
    except ValueError as error:
        return f"its cell, --variant {spec}, no longer loads ({error})"
    trained = stored.get("cell_class", loaded)  # a run recorded before cell_class: its SPEC alone
    if loaded != trained:
        return f"--variant {spec} now loads {loaded}, where the run trained {trained}"
    if "cell_source" in stored and cell_source(load_cell_class(spec)) != stored["cell_source"]:
        return (
            f"the file that defines --variant {spec} is not the one the run trained (it was edited since,"
            " or another file of that name is found here: its SHA-256 differs from the run's cell_source)"
        )
    return None


def stored_settings_problem(parser: argparse.ArgumentParser, stored: dict) -> str | None:
    """What keeps the stored settings from being values this script's command line could give (a
    count that is a string, a negative rate, a choice it does not offer), or None."""
    shadow = copy.deepcopy(parser)

    def refuse(message: str):
        raise ValueError(message)

    shadow.error = refuse
    argv, checked = [], []
    for action in shadow._actions:
        name, value = action.dest, stored.get(action.dest)
        if not action.option_strings or name not in stored or name in ("out_dir", "resume", "quiet"):
            continue
        checked.append(name)
        if action.nargs == 0:  # a flag: true or false
            if not isinstance(value, bool):
                return f"its setting {name} is {value!r}, expected true or false"
            argv += action.option_strings[:1] if value else []
        elif value is not None:
            argv += [action.option_strings[0], *map(str, value if isinstance(value, list) else [value])]
    try:
        parsed = config_of(shadow.parse_args(argv))  # as the run recorded them
    except ValueError as error:
        return f"its settings are not this script's ({error})"
    wrong = [name for name in checked if name in parsed and parsed[name] != stored[name]]
    if wrong:
        return ", ".join(
            f"its setting {name} is {stored[name]!r}, not a value of its option" for name in wrong
        )
    return None


@dataclass(frozen=True)
class ResumeKeys:
    """What a script's checkpoint holds beyond `make_checkpoint`'s own keys: its `extra` values and the
    names of the generators `random_state` was given."""

    extras: tuple[str, ...]
    generators: tuple[str, ...]
    # The torch.optim class the script trains with, given only model.parameters() and lr.
    optimizer: str = "Adam"


# make_checkpoint's keys, each with the type it writes.
CHECKPOINT_TYPES = {"config": dict, "history": list, "model": dict, "optimizer": dict, "random": dict}


def checkpoint_problem(checkpoint: object, resume_keys: ResumeKeys) -> str | None:
    """What keeps `checkpoint` from being one that `make_checkpoint` wrote for this script, or None."""
    if not isinstance(checkpoint, dict):
        return f"expected a dict of the run's state, found a {type(checkpoint).__name__}"
    missing = [key for key in (*CHECKPOINT_TYPES, *resume_keys.extras) if key not in checkpoint]
    if missing:
        return f"it lacks {', '.join(missing)} (an older format, or not this script's)"
    for key, kind in CHECKPOINT_TYPES.items():
        if not isinstance(checkpoint[key], kind):
            return f"its {key} is a {type(checkpoint[key]).__name__}, expected a {kind.__name__}"
    for index, epoch in enumerate(checkpoint["history"]):
        if not (
            isinstance(epoch, dict) and epoch.get("epoch") == index and is_number(epoch.get("train_loss"))
        ):
            return f"its history's entry {index} is not epoch {index} with a train_loss"
    random_state = checkpoint["random"]
    missing = [key for key in ("python", "numpy", "torch", "generators") if key not in random_state]
    if not missing and isinstance(random_state["generators"], dict):
        missing = [
            f"the {name} generator"
            for name in resume_keys.generators
            if name not in random_state["generators"]
        ]
    if missing:
        return f"its random state lacks {', '.join(missing)}"
    if not all(isinstance(value, Tensor) for value in checkpoint["model"].values()):
        return "its model state holds something other than tensors"
    return None


def state_problem(checkpoint: dict, args: argparse.Namespace, resume_keys: ResumeKeys) -> str | None:
    """Whether the checkpoint's weights and optimizer state fit the model that `args` (with the stored
    settings taken in) builds; None when they do."""
    try:
        with torch.random.fork_rng(devices=[]):  # a trial model, whose random weights leave no trace
            model = model_of(vars(args), torch.device("cpu"))
    except (TypeError, ValueError, OverflowError, RuntimeError) as error:  # settings edited into nonsense
        return f"its settings build no model ({error})"
    expected = {name: tensor_kind(value) for name, value in model.state_dict().items()}
    found = {name: tensor_kind(value) for name, value in checkpoint["model"].items()}
    if found != expected:
        differing = sorted(
            name for name in expected.keys() | found.keys() if expected.get(name) != found.get(name)
        )
        name = differing[0]
        return (
            f"its weights do not fit the run's settings: {name} is {found.get(name, 'missing')} in the "
            f"checkpoint, {expected.get(name, 'not a parameter')} for its settings"
            + (f" (and {len(differing) - 1} more)" if len(differing) > 1 else "")
        )
    history = checkpoint["history"]
    if not 1 <= len(history) <= args.epochs:
        return f"it holds {len(history)} epoch(s), where a run of {args.epochs} writes 1 to {args.epochs}"
    return optimizer_problem(checkpoint["optimizer"], model, args.lr, resume_keys.optimizer)


def tensor_kind(value: Tensor) -> str:
    """Shape and dtype, what a loaded weight must share with the model's ("sparse", "meta": neither fits)."""
    if value.layout != torch.strided or value.is_meta:
        return f"a {value.layout} {'meta ' if value.is_meta else ''}tensor"
    return f"{list(value.shape)} {value.dtype}"


# The hyperparameters the scripts set or leave at their defaults: a saved optimizer must have the same.
HYPERPARAMETERS = ("lr", "betas", "eps", "weight_decay", "amsgrad", "momentum", "dampening", "nesterov")


def optimizer_problem(saved: dict, model: nn.Module, lr: float, optimizer: str) -> str | None:
    """Whether `saved` is the state of torch.optim.`optimizer`(model.parameters(), lr=lr); None if so."""
    parameters = list(model.parameters())
    fresh = getattr(torch.optim, optimizer)(parameters, lr=lr).state_dict()["param_groups"]
    groups, state = saved.get("param_groups"), saved.get("state")
    if not (isinstance(groups, list) and isinstance(state, dict) and len(groups) == len(fresh)):
        return f"its optimizer state is not that of one {optimizer} over the model's parameters"
    for group, wanted in zip(groups, fresh, strict=True):
        if not isinstance(group, dict) or group.get("params") != wanted["params"]:
            return f"its optimizer state does not list the model's {len(parameters)} parameters in order"
        differing = [
            key for key in HYPERPARAMETERS if key in wanted and group.get(key, "missing") != wanted[key]
        ]
        if differing:
            found = ", ".join(f"{key} {group.get(key, 'missing')}" for key in differing)
            return f"its optimizer has {found}, where the run's settings give {optimizer} with lr {lr}"
    for key, values in state.items():
        if not (isinstance(key, int) and 0 <= key < len(parameters) and isinstance(values, dict)):
            return f"its optimizer state has an entry {key!r}, which names none of the model's parameters"
        for name, value in values.items():
            like = parameters[key]
            if isinstance(value, Tensor) and value.dim() > 0 and tensor_kind(value) != tensor_kind(like):
                return (
                    f"its optimizer's {name} of parameter {key} is {tensor_kind(value)}, where the parameter"
                    f" is {tensor_kind(like)}"
                )
    return None


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finish_parsing(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    args: argparse.Namespace,
    checkpoint_name: str | None = None,
    resume_keys: ResumeKeys = ResumeKeys((), ()),
) -> argparse.Namespace:
    """The checks every script makes last: a cell that can be built, a usable --out-dir, then --resume's
    stored settings and checkpoint (which holds `resume_keys` too)."""
    check_cell_settings(parser, args)
    check_out_dir(parser, args.out_dir)
    if checkpoint_name is not None:
        apply_resume(parser, argv, args, checkpoint_name, resume_keys)
    return args


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


def random_state(device: torch.device, generators: dict[str, torch.Generator]) -> dict:
    """The state of every generator a run draws from: Python's, numpy's, torch's global ones (and the
    device's) and the run's own `generators` (data, shuffling), as values torch.load(weights_only=True)
    reads back."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()
    state = {
        "python": random.getstate(),
        "numpy": numpy_state,
        "torch": torch.get_rng_state(),
        "generators": {name: generator.get_state() for name, generator in generators.items()},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    if device.type == "mps":
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_random_state(state: dict, device: torch.device, generators: dict[str, torch.Generator]) -> None:
    """Put every generator back where `random_state` found it; KeyError for a generator it lacks."""
    random.setstate(state["python"])
    numpy_state = copy.deepcopy(state["numpy"])
    numpy_state["state"]["key"] = np.array(numpy_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    for name, generator in generators.items():
        generator.set_state(state["generators"][name])
    if device.type == "cuda":
        torch.cuda.set_rng_state_all(state["cuda"])
    if device.type == "mps":
        torch.mps.set_rng_state(state["mps"])


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
    """The CPU, its cores, the platform, and the PyTorch and Python versions: what a timing was measured
    on and what a result was computed with (another version may differ from it in the last bits)."""
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
        "platform": platform.platform(),
    }


# ---------------------------------------------------------------------------------------------------
# The model both experiments train: an LSTM and a linear head on its last hidden state (or cell state).

READOUTS = ("h", "c")  # what the head reads: the last layer's hidden state h, or its cell state c


class LastStepRegressor(nn.Module):
    """Reads a sequence (batch, seq_len, input_size) and predicts one number per sequence, the head on
    the last step of `states(x)`.

    `readout` "h" (the published model) reads the last layer's hidden state h = o ⊙ tanh(c), bounded
    by 1 in every unit; "c" reads its cell state c, which a counter can keep unbounded. c comes from
    `lstm.trace`, the layer's own loop recorded, so it needs the hand-written `LSTM`.
    """

    def __init__(self, lstm: nn.Module, readout: str = "h") -> None:
        super().__init__()
        self.lstm = lstm
        self.readout = readout
        self.head = nn.Linear(lstm.hidden_size, 1)

    def states(self, x: Tensor) -> Tensor:
        """(batch, seq_len, hidden_size): what the head reads after every step, h or c."""
        if self.readout == "c":
            return self.lstm.trace(x)[-1]["c"]
        return self.lstm(x)[0]

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.states(x)[:, -1]).squeeze(-1)


def recurrent_weights(lstm: nn.Module) -> list[Tensor]:
    """The matrices W_h* that feed h_{t-1} back into the gates: every cell's W_h<gate> of the
    hand-written LSTM, or torch.nn.LSTM's weight_hh_l<layer> (the same matrices, stacked)."""
    if isinstance(lstm, nn.LSTM):
        return [getattr(lstm, f"weight_hh_l{layer}") for layer in range(lstm.num_layers)]
    return [getattr(cell, f"W_h{gate}") for cell in lstm.cells for gate in cell.GATES]


def build_model(
    cell: str,
    hidden_size: int,
    device: torch.device,
    *,
    input_size: int = 1,
    variant: str | type[LSTMCell] = "standard",
    forget_bias: float | None = None,
    readout: str = "h",
) -> LastStepRegressor:
    """The model with the hand-written LSTM, or with torch.nn.LSTM holding the very same initial weights.

    `variant` is the cell: a SPEC (`load_cell_class`) or an LSTMCell subclass; `forget_bias` its
    initial forget-gate bias (None: PyTorch's initialization). Both choices of `cell` draw the same
    random numbers, so `--cell custom` and `--cell torch` with one seed start from one point and any
    difference between their runs comes from the LSTMs themselves. torch.nn.LSTM adds two biases per
    gate where ours has one; its second bias (zero after `to_torch`) is frozen, or the optimizer would
    move the gate's total bias twice as fast. `readout` is what the head reads (`LastStepRegressor`).
    Raises ValueError for an unknown cell, a SPEC that does not load, or an unknown readout, and for
    `cell="torch"` with a variant or a readout nn.LSTM cannot express (it returns no cell state but the
    last).
    """
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    if cell == "torch" and readout == "c":
        raise ValueError(
            "readout='c' reads the cell state after every step, which torch.nn.LSTM does not return;"
            " use cell='custom'"
        )
    cell_class = load_cell_class(variant) if isinstance(variant, str) else variant
    lstm = LSTM(input_size, hidden_size, batch_first=True, variant=cell_class, forget_bias=forget_bias)
    model = LastStepRegressor(lstm, readout)
    if cell == "torch":
        model.lstm = model.lstm.to_torch()
        for layer in range(model.lstm.num_layers):
            getattr(model.lstm, f"bias_hh_l{layer}").requires_grad_(False)
    return model.to(device)


def lstm_path(model: LastStepRegressor, batch_size: int, compiled: bool = False) -> str:
    """How the model's LSTM runs a training step of `batch_size` sequences: "torch.nn.LSTM" for --cell
    torch, else the hand-written layer's `training_path(batch_size)` (a value of `lstm_cell.PATHS`);
    under --compile the layer calls the cell itself and autograd differentiates the compiled graph, and
    with readout "c" autograd differentiates `trace`, the layer's loop that records c."""
    if isinstance(model.lstm, nn.LSTM):
        return "torch.nn.LSTM"
    if model.readout == "c":  # trace: the layer's plain loop, differentiated by autograd
        return "autograd"
    return "autograd (torch.compile)" if compiled else model.lstm.training_path(batch_size)


def trained_cell(model: LastStepRegressor, variant: str, batch_size: int, compiled: bool = False) -> str:
    """What trained, for figure titles and summaries: "the SPEC cell, trained by PATH" (`lstm_path`),
    or "torch.nn.LSTM (the standard cell)" for --cell torch."""
    path = lstm_path(model, batch_size, compiled)
    if path == "torch.nn.LSTM":
        return f"{path} (the standard cell)"
    return f"the {variant} cell, trained by {path}"


def model_of(config: dict | RunSettings, device: torch.device) -> LastStepRegressor:
    """The model a run's settings describe, with `build_model`: a script's Config, or the "config" of a
    run's JSON (where a setting the script has not, "readout" for the sine wave, takes its default)."""
    settings = config if isinstance(config, dict) else vars(config)
    return build_model(
        settings["cell"],
        settings["hidden_size"],
        device,
        variant=settings.get("variant", "standard"),
        forget_bias=settings.get("forget_bias"),
        readout=settings.get("readout", "h"),
    )


def load_model(
    path: str | Path, config: dict | RunSettings | None = None, device: str = "cpu"
) -> LastStepRegressor:
    """The model of a finished epoch, rebuilt from its weights file (e.g. figures/binary_counting.pt).

    The weights file holds the model's state_dict only; the settings that shape the model (`--cell`,
    `--hidden-size`, …) come from `config`, by default the "config" of the run's JSON beside it (the
    same name with .json). The model is rebuilt from it by `model_of`, as the script built it, so it
    is the very model the script trained, in eval mode on `device`; a cell of your own is loaded
    again from its --variant SPEC. Raises FileNotFoundError for a missing file, ValueError for a SPEC
    that no longer loads the class the run trained (`stored_cell_problem`), and RuntimeError when the
    weights do not fit the settings.
    """
    path = Path(path)
    if config is None:
        config = json.loads(path.with_suffix(".json").read_text())["config"]
    elif not isinstance(config, dict):
        config = config_of(config)  # a script's Config
    problem = stored_cell_problem(config)
    if problem is not None:
        raise ValueError(f"cannot rebuild the model of {path}: {problem}")
    with torch.random.fork_rng(devices=[]):  # the initial weights it draws are overwritten: leave no trace
        model = model_of(config, torch.device(device))
    model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    return model.eval()


# Inductor settings under which the compiled LSTM trains fastest on a 2-core CPU (measured with
# benchmarks/bench_lstm.py): a C++ wrapper launches the kernels instead of a Python one, and a matmul
# with one row (batch size 1) becomes a loop that Inductor fuses with the gates around it.
COMPILE_OPTIONS = {"cpp_wrapper": True, "post_grad_fusion_options": {"decompose_mm_pass": {}}}
# The C++ wrapper fails at run time on PyTorch 2.3.1 (a SystemError from its entry point) and works on
# 2.13.0; the versions between were not tried, so older ones compile without it (slower, as correct).
CPP_WRAPPER_SINCE = (2, 13)


def compile_model(model: nn.Module) -> nn.Module:
    """torch.compile(model) for fixed shapes; RuntimeError naming the reason where it cannot compile."""
    if not hasattr(torch, "compile"):
        raise RuntimeError(
            f"--compile needs torch.compile (PyTorch ≥ 2.0), this is PyTorch {torch.__version__}"
        )
    import torch._inductor.config as inductor_config

    options = {key: value for key, value in COMPILE_OPTIONS.items() if hasattr(inductor_config, key)}
    if torch.torch_version.TorchVersion(torch.__version__) < CPP_WRAPPER_SINCE:
        options.pop("cpp_wrapper", None)
    fusions = options.get("post_grad_fusion_options", {})
    if fusions and not set(fusions) <= known_post_grad_passes():
        del options["post_grad_fusion_options"]  # an older Inductor, which would fail on an unknown pass
    return torch.compile(model, dynamic=False, options=options)


def known_post_grad_passes() -> set[str]:
    """The post-grad passes this PyTorch's Inductor can be asked for by name (its registries)."""
    import torch._inductor.fx_passes.post_grad  # noqa: F401  (registers the passes)
    from torch._inductor.fx_passes import group_batch_fusion, split_cat

    return set(group_batch_fusion.POST_GRAD_FUSIONS) | set(getattr(split_cat, "POST_GRAD_PATTERNS", {}))


# ---------------------------------------------------------------------------------------------------
# Output: written beside the target under a name no other process uses, then renamed, so a reader
# never sees a half-written file and two runs writing into one folder never trip over each other.


FILE_CREATION_MASK = os.umask(0o022)  # reading the umask means setting it: put it straight back
os.umask(FILE_CREATION_MASK)


class OutputError(Exception):
    """An output file could not be written; the message names the file and the reason in one line."""


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(temporary_path)`, then rename the result to `path` in one step (os.replace).

    Whatever happens (a kill, an exception, a full disk), `path` holds either its old content or the
    whole new one. Raises OutputError for any OSError, with no chained traceback.
    """
    path = Path(path)
    partial = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
        os.close(descriptor)
        partial = Path(name)
        os.chmod(partial, 0o666 & ~FILE_CREATION_MASK)  # mkstemp makes it private; outputs are not
        write(partial)
        os.replace(partial, path)
        partial = None
    except OSError as error:
        raise OutputError(f"could not write {path}: {error.strerror or error}") from None
    finally:
        if partial is not None:
            with contextlib.suppress(OSError):  # the error that got us here is the one to report
                partial.unlink()


def finite_or_none(value: object) -> object:
    """`value` with every NaN or ±inf float inside it (dicts, lists, tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    return value


def save_json(data: dict, path: Path) -> None:
    """Strict JSON (non-finite numbers written as null, never NaN or Infinity), written atomically."""
    text = json.dumps(finite_or_none(data), indent=2, allow_nan=False) + "\n"
    write_atomically(path, lambda partial: partial.write_text(text))


def save_figure(figure: Figure, path: Path) -> None:
    path = Path(path)
    write_atomically(path, lambda partial: figure.savefig(partial, format=path.suffix.lstrip("."), dpi=110))


def save_torch(data: object, path: Path) -> None:
    """torch.save(data) atomically: a kill during the write leaves the previous file as it was."""
    write_atomically(path, lambda partial: torch.save(data, partial))


def make_checkpoint(
    args: argparse.Namespace,
    history: list[dict],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    random: dict,
    **extra: object,
) -> dict:
    """What --resume needs after a finished epoch: the settings, the epochs so far, the model's and the
    optimizer's state, every generator's state (`random_state`) and the script's own `extra` values."""
    return {
        "config": config_of(args),
        "history": list(history),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "random": random,
        **extra,
    }


def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by `save_torch`; only tensors and plain values are read (weights_only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


class TrainingRun:
    """The training loop both experiments share: its epochs, --resume, the progress bar, the commit of
    every finished epoch (history, checkpoint and files, with Ctrl-C and SIGTERM held), the time of the
    first step under --compile, and divergence. A script keeps its data, model, step and evaluation:

        run = TrainingRun(args, device, model, optimizer, generators, history, checkpoint_path)
        run.resume(restore)                # with args.resume: the run as its checkpoint left it
        for epoch in run.epochs():
            for batch in run.batches(loader, epoch):
                ...                        # one training step
            ...                            # evaluate
            run.commit(results, loss, write, line)

    `generators` are the run's own torch.Generators (data, shuffling), checkpointed with the global
    ones; `history` receives one dict per finished epoch, so a caller that is stopped keeps them.
    """

    def __init__(
        self,
        args: argparse.Namespace,
        device: torch.device,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        generators: dict[str, torch.Generator],
        history: list[dict],
        checkpoint_path: Path,
    ) -> None:
        self.args, self.device, self.model, self.optimizer = args, device, model, optimizer
        self.generators, self.history, self.checkpoint_path = generators, history, checkpoint_path
        self.compile_seconds: float | None = None  # the first training step under --compile, which compiles

    def resume(self, restore: Callable[[dict], None] | None = None) -> None:
        """With args.resume, load the checkpoint: the model, the optimizer, the history, then the
        script's own values (`restore(checkpoint)`), and every generator's state last, after anything
        that might draw a random number. Without args.resume, nothing."""
        if not self.args.resume:
            return
        if not self.checkpoint_path.is_file():
            raise ValueError(
                f"resume: no run to resume in {self.args.out_dir} (expected {self.checkpoint_path})"
            )
        checkpoint = load_checkpoint(self.checkpoint_path)
        differing = resume_differences(self.args, checkpoint["config"])
        if differing:  # a Config built in code; parse_args takes the stored settings in, or refuses
            raise ValueError(
                f"resume: the run in {self.args.out_dir} has other settings ({differing}); resume it with"
                " its own (parse_args(['--resume', '--out-dir', ...]) takes them in)"
            )
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.history[:] = checkpoint["history"]
        self.compile_seconds = checkpoint["compile_seconds"]
        if restore is not None:
            restore(checkpoint)
        set_random_state(checkpoint["random"], self.device, self.generators)

    def epochs(self) -> range:
        """The epochs still to train: all of them, or those after the checkpoint's with --resume."""
        return range(len(self.history) if self.args.resume else 0, self.args.epochs)

    def batches(self, loader: Iterable, epoch: int) -> Iterator:
        """The epoch's batches, in the model's training mode and behind a progress bar. Under --compile
        the first step's time, until the device has finished it, is kept in `compile_seconds`."""
        self.model.train()
        for batch in progress(loader, quiet=self.args.quiet, description=f"Epoch {epoch}/{self.args.epochs}"):
            start = time.perf_counter()
            yield batch  # the script's training step runs here
            if self.args.compile and self.compile_seconds is None:
                synchronize(self.device)
                self.compile_seconds = time.perf_counter() - start

    def commit(
        self, results: dict, loss: float, write: Callable[[dict], None], line: str, **extra: object
    ) -> None:
        """Append the finished epoch's `results` to the history and `write(checkpoint)` every file, as
        one step that Ctrl-C and SIGTERM wait for, so a stopped run never leaves files of different
        epochs side by side; `extra` goes into the checkpoint. Then print `line` unless quiet, and
        raise Diverged when `loss`, the epoch's training loss, is not a finite number."""
        with interrupts_held():
            self.history.append(results)
            state = random_state(self.device, self.generators)
            extra = {"compile_seconds": self.compile_seconds, **extra}
            write(make_checkpoint(self.args, self.history, self.model, self.optimizer, state, **extra))
        if not self.args.quiet:
            print(line, flush=True)
        check_finite(results["epoch"], loss, self.args.lr)


def synchronize(device: torch.device) -> None:
    """Wait until `device` has finished the work queued on it (a CPU does it as it goes)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) and SIGTERM while the block runs, and deliver them when it ends.

    The files of one epoch are written inside such a block, so a stopped run leaves them all from
    the same epoch. Outside the main thread signals cannot be caught, and the block holds nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {
        number: signal.signal(number, lambda number, _: received.append(number)) for number in signals
    }
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
        if received:
            signal.raise_signal(received[0])  # now handled as it would have been without the block


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program was, so that it stops exactly as Ctrl-C stops it."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises Terminated (a KeyboardInterrupt) instead of killing at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(number: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


class Diverged(Exception):
    """The training loss of an epoch is not a finite number; the message says which and what to try."""

    def __init__(self, epoch: int, loss: float, lr: float) -> None:
        super().__init__(
            f"Diverged: the training loss of epoch {epoch} is {loss}; stopped after it."
            f" Try a lower --lr than {lr:g}."
        )
        self.epoch, self.loss = epoch, loss


def check_finite(epoch: int, loss: float, lr: float) -> None:
    """Raise Diverged when `loss` (the epoch's mean training loss) is NaN or infinite."""
    if not math.isfinite(loss):
        raise Diverged(epoch, loss, lr)


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


def run_until_interrupted(
    train: Callable[[list], object],
    report: Callable[[list], str],
    unit: str = "epoch",
    stopped: Callable[[list], str] | None = None,
) -> int:
    """Run `train(history)` and turn every way it can stop into one line on stderr and an exit status,
    the same in every script of the project.

    `train` appends one item per finished `unit` (an epoch, a study's configuration, an experiment)
    to `history` and writes its files after each, so a stopped run keeps every finished one. Ctrl-C:
    status 130; SIGTERM: 143, each with the line `stopped(history)` (by default how many units
    finished) and then `report(history)` of what was kept; a diverged run: 3, after its report; a file
    that could not be written: 1. An empty report prints nothing.
    """
    history: list = []

    def print_report() -> None:
        text = report(history) if history or stopped is not None else ""
        if text:
            print(text)

    try:
        with sigterm_as_interrupt():
            train(history)
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, Terminated)
        name = "Terminated (SIGTERM)" if terminated else "Interrupted"
        line = f"stopped after {len(history)} finished {unit}(s)." if stopped is None else stopped(history)
        print(f"\n{name}: {line}", file=sys.stderr)
        print_report()
        return TERMINATED_EXIT_STATUS if terminated else INTERRUPTED_EXIT_STATUS
    except Diverged as diverged:
        print_report()
        print(diverged, file=sys.stderr)
        return DIVERGED_EXIT_STATUS
    except OutputError as error:
        print(f"error: {error}", file=sys.stderr)
        return WRITE_FAILED_EXIT_STATUS
    return 0
