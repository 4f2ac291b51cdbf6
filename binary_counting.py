"""Binary counting: an LSTM reads a sequence of random bits and predicts how many of them are ones.

A running sum is enough to solve it: a cell state that adds one for every 1 it reads. The model is
the project's hand-written LSTM with a linear head on its last hidden state (with `--readout c`, on
its cell state), trained as a regression with the mean squared error (with `--recurrent-l1 λ`, plus
λ · Σ|W_h*|); a prediction counts as correct when it rounds to the true count. After training,
sequences of other lengths ask whether the model learned such a sum or something that only works at
the training length (`length_generalization_study.py` asks it over many configurations).

    python binary_counting.py                      # the published settings, outputs in runs/binary_counting/
    python binary_counting.py --out-dir figures    # the same, regenerating the committed results
    python binary_counting.py --resume             # continue the run in runs/binary_counting/
    python binary_counting.py --cell torch         # the same run with torch.nn.LSTM from the same weights
    python binary_counting.py --help

After every epoch --out-dir holds train_binary.png, binary_counting.json, the weights
binary_counting.pt (rebuild the model with `experiment_utils.load_model`) and the checkpoint
binary_counting.checkpoint.pt that --resume continues from.

Importable: `train(Config())` runs the experiment (or `Config(epochs=5, seed=1)`, any settings) and
returns a `BinaryCountingResult`.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from experiment_utils import (
    READOUTS,
    ResumeKeys,
    RunSettings,
    TrainingRun,
    add_common_arguments,
    compile_model,
    config_of,
    configured,
    describe_machine,
    explicit_options,
    finish_parsing,
    first_line,
    load_cell_class,
    lstm_path,
    markdown_table,
    model_of,
    non_negative_float,
    positive_float,
    positive_int,
    recurrent_weights,
    run_until_interrupted,
    save_figure,
    save_json,
    save_torch,
    start_run,
    trained_cell,
)
from lstm_cell import LSTM

FIGURE_NAME = "train_binary.png"
JSON_NAME = "binary_counting.json"
WEIGHTS_NAME = "binary_counting.pt"  # the model's state_dict after the last finished epoch
CHECKPOINT_NAME = "binary_counting.checkpoint.pt"  # everything --resume needs
DEFAULT_OUT_DIR = "runs/binary_counting"  # outside the tracked files: a trial run changes nothing in git
RESUME_KEYS = ResumeKeys(
    extras=("compile_seconds",), generators=("data", "shuffle"), optimizer="Adam"
)  # what its checkpoint holds besides make_checkpoint's own
EVALUATION_BATCH_SIZE = 1000  # no gradients are kept while evaluating, so large batches cost little
TARGETS = ("final", "every-step")
SCAN_SAMPLES = 500  # fresh sequences per length in the longest-counted-length scan
COUNTED_SHARE = 0.99  # a length is counted when at least this share of its sequences is counted right

# ---------------------------------------------------------------------------------------------------
# Settings


@dataclass
class Config(RunSettings):
    """The settings of a run; the defaults are the published ones (the original README: 20 epochs of
    10 000 sequences of 20 bits, 1 000 to validate, batch 16, hidden size 20, Adam at lr 1e-3).

    `train_lengths` (MIN, MAX) trains on mixed lengths and replaces `seq_len`, which becomes MAX.
    Raises ValueError for settings that cannot go together (`settings_problem`, and RunSettings').
    """

    seq_len: int = 20
    train_samples: int = 10000
    valid_samples: int = 1000  # also the size of each length-generalization set
    hidden_size: int = 20
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    lengths: list[int] = field(default_factory=lambda: [10, 20, 40])  # tested after training
    train_lengths: list[int] | None = None
    target: str = "final"
    max_test_length: int | None = None
    readout: str = "h"
    recurrent_l1: float = 0.0
    out_dir: Path = Path(DEFAULT_OUT_DIR)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.lengths = sorted(set(self.lengths))
        if self.train_lengths is not None:
            shortest, longest = self.train_lengths
            if shortest > longest:
                raise ValueError(f"--train-lengths: expected MIN ≤ MAX, got {shortest} {longest}")
            if self.seq_len not in (longest, Config.seq_len):
                raise ValueError("--train-lengths MIN MAX replaces --seq-len (which becomes MAX); give one")
            self.train_lengths, self.seq_len = [shortest, longest], longest
        problem = settings_problem(self)
        if problem is not None:
            raise ValueError(problem)


def parse_args(argv: list[str] | None = None) -> Config:
    """The configuration of a command line; the defaults are Config's, the published ones. Bad values
    exit with status 2."""
    defaults = Config()
    parser = argparse.ArgumentParser(
        description="Train an LSTM to count the ones in a sequence of random bits.",
    )
    default = " (default: %(default)s)"
    parser.add_argument(
        "--seq-len", type=positive_int, default=defaults.seq_len, help="bits per sequence" + default
    )
    parser.add_argument(
        "--train-samples",
        type=positive_int,
        default=defaults.train_samples,
        help="training sequences" + default,
    )
    parser.add_argument(
        "--valid-samples",
        type=positive_int,
        default=defaults.valid_samples,
        help="validation sequences, a separate draw; also the size of each length-generalization set"
        + default,
    )
    parser.add_argument(
        "--hidden-size", type=positive_int, default=defaults.hidden_size, help="LSTM hidden units" + default
    )
    parser.add_argument(
        "--epochs", type=positive_int, default=defaults.epochs, help="passes over the data" + default
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=defaults.batch_size,
        help="sequences per Adam step" + default,
    )
    parser.add_argument("--lr", type=positive_float, default=defaults.lr, help="Adam learning rate" + default)
    parser.add_argument(
        "--lengths",
        type=positive_int,
        nargs="+",
        default=defaults.lengths,
        metavar="LENGTH",
        help="sequence lengths tested after training: does counting generalize? (default: 10 20 40)",
    )
    parser.add_argument(
        "--train-lengths",
        type=positive_int,
        nargs=2,
        default=defaults.train_lengths,
        metavar=("MIN", "MAX"),
        help="train (and validate) on mixed lengths: each sequence's length drawn uniformly from MIN … MAX;"
        " replaces --seq-len, which becomes MAX (default: every sequence --seq-len bits)",
    )
    parser.add_argument(
        "--target",
        choices=TARGETS,
        default=defaults.target,
        help="final: the count after the last bit, as published; every-step: the running count after"
        " every bit, the loss averaged over all steps (default: final)",
    )
    parser.add_argument(
        "--max-test-length",
        type=positive_int,
        default=defaults.max_test_length,
        metavar="L",
        help="after training, measure the longest counted length: scan n = 1 … L on"
        f" {SCAN_SAMPLES} fresh sequences each (e.g. 10× the longest training length;"
        " default: not measured)",
    )
    parser.add_argument(
        "--readout",
        choices=READOUTS,
        default=defaults.readout,
        help="what the linear head reads, at the last step (--target final) or every step (every-step):"
        " h, the last layer's hidden state, as published; or c, its cell state, which is not bounded"
        " by 1 as h = o ⊙ tanh(c) is (needs --cell custom, without --compile; default: h)",
    )
    parser.add_argument(
        "--recurrent-l1",
        type=penalty_weight,
        default=defaults.recurrent_l1,
        metavar="λ",
        help="add λ · Σ|W_h*|, an L1 penalty on the recurrent weights (every gate's W_h), to the training"
        f" loss, 0 ≤ λ ≤ {MAX_RECURRENT_L1:.2g}; the MSE and the penalty are reported apart"
        " (default: 0, none)",
    )
    add_common_arguments(parser, default_out_dir=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    args.lengths = sorted(set(args.lengths))
    if args.train_lengths is not None:
        if "seq_len" in explicit_options(parser, argv):  # MIN ≤ MAX and the rest: Config's checks
            parser.error("--train-lengths MIN MAX replaces --seq-len (which becomes MAX); give one of them")
        args.seq_len = args.train_lengths[1]  # as Config sets it, before --resume compares the settings
    args = finish_parsing(parser, argv, args, CHECKPOINT_NAME, RESUME_KEYS)
    # After --resume has taken in the stored settings, so that an edited checkpoint is refused too.
    return configured(parser, Config, args)


def settings_problem(config: Config) -> str | None:
    """Why the settings cannot go together, or None."""
    if config.compile and (config.train_lengths is not None or config.target != "final"):
        return (
            "--compile compiles the model's read-out after the last step only; leave it out with"
            " --train-lengths or --target every-step"
        )
    if config.readout == "c" and config.cell == "torch":
        return (
            "--readout c reads the cell state after every step, and torch.nn.LSTM (--cell torch) returns"
            " the last one only; use --cell custom"
        )
    if config.readout == "c" and config.compile:
        return (
            "--readout c reads the cell state through LSTM.trace, which the layer cannot record under"
            " torch.compile; leave out --compile"
        )
    if config.readout == "c":
        try:
            with torch.random.fork_rng(devices=[]):  # a trial layer, whose random weights leave no trace
                LSTM(1, 1, variant=load_cell_class(config.variant)).trace(torch.zeros(1, 1, 1))
        except Exception as error:  # a cell with its own forward or a hook: trace cannot read its c
            return f"--readout c reads the cell state through LSTM.trace: {first_line(error)}"
    return None


# Adam divides by the root of its running mean of squared gradients: for the penalty's gradient
# λ · sign(W_h*) that square must stay finite in float32, or those weights silently stop moving.
MAX_RECURRENT_L1 = 1e18


def penalty_weight(text: str) -> float:
    value = non_negative_float(text) + 0.0  # + 0.0: -0 is 0
    if value > MAX_RECURRENT_L1:
        raise argparse.ArgumentTypeError(
            f"expected at most {MAX_RECURRENT_L1:.0e} (Adam squares the penalty's gradient λ·sign(W_h*),"
            f" which float32 cannot hold beyond about 1.8e19), got {text!r}"
        )
    return value


# ---------------------------------------------------------------------------------------------------
# Data


def make_dataset(num_samples: int, seq_len: int, generator: torch.Generator) -> TensorDataset:
    """x: (num_samples, seq_len, 1) bits, 0 or 1 with equal chance; y: (num_samples,) the number of ones."""
    bits = torch.randint(0, 2, (num_samples, seq_len, 1), generator=generator).float()
    counts = bits.sum(dim=(1, 2))
    return TensorDataset(bits, counts)


def make_mixed_dataset(
    num_samples: int, shortest: int, longest: int, generator: torch.Generator
) -> TensorDataset:
    """Sequences of mixed lengths, padded with zeros to `longest`: x (num_samples, longest, 1), y
    (num_samples,) the number of ones, lengths (num_samples,) each drawn uniformly from shortest … longest.

    Padding goes *after* each sequence's end. An LSTM runs forward in time, so what it computes up
    to a sequence's last bit does not depend on the padding behind it: reading the prediction at
    step length − 1 (`final_predictions`) and leaving the padded steps out of an every-step loss
    (`step_mask`) train on exactly the unpadded sequences, with no masking inside the recurrence.
    We chose this over bucketing batches by length because every batch then mixes all lengths, so
    no Adam step sees only one length; the price is the padded steps' compute, about half the
    work for lengths 1 … 20. ValueError unless 1 ≤ shortest ≤ longest.
    """
    if not 1 <= shortest <= longest:
        raise ValueError(f"lengths must satisfy 1 ≤ shortest ≤ longest, got {shortest} and {longest}")
    lengths = torch.randint(shortest, longest + 1, (num_samples,), generator=generator)
    bits = torch.randint(0, 2, (num_samples, longest, 1), generator=generator).float()
    bits *= step_mask(lengths, longest).unsqueeze(-1)
    return TensorDataset(bits, bits.sum(dim=(1, 2)), lengths)


def step_mask(lengths: Tensor | None, seq_len: int) -> Tensor:
    """(batch, seq_len) floats, 1 at the steps within each sequence's length and 0 at the padding
    behind it; (1, seq_len) ones when `lengths` is None (every sequence is seq_len long)."""
    if lengths is None:
        return torch.ones(1, seq_len)
    return (torch.arange(seq_len, device=lengths.device) < lengths.unsqueeze(-1)).float()


def make_datasets(
    seed: int,
    seq_len: int,
    train_samples: int,
    valid_samples: int,
    train_lengths: list[int] | None = None,
) -> tuple[TensorDataset, TensorDataset, torch.Generator]:
    """The training and validation sets of a run with `seed`, and the generator they were drawn from;
    its next draws are the run's length-generalization sets. With `train_lengths` (MIN, MAX) both
    sets have mixed lengths (`make_mixed_dataset`), else every sequence is `seq_len` bits."""
    generator = torch.Generator().manual_seed(seed)
    if train_lengths is None:
        train_dataset = make_dataset(train_samples, seq_len, generator)
        valid_dataset = make_dataset(valid_samples, seq_len, generator)
    else:
        train_dataset = make_mixed_dataset(train_samples, *train_lengths, generator)
        valid_dataset = make_mixed_dataset(valid_samples, *train_lengths, generator)
    return train_dataset, valid_dataset, generator


# ---------------------------------------------------------------------------------------------------
# Evaluation


def final_predictions(model: nn.Module, x: Tensor, lengths: Tensor | None = None) -> Tensor:
    """(batch,) the predicted count after each sequence's last bit: `model(x)`, or with `lengths`
    (batch,) the model's head on its readout (h or c) at step length − 1 of each padded sequence x
    (batch, seq_len, 1)."""
    if lengths is None:
        return model(x)
    states = model.states(x)
    last = states[torch.arange(len(x), device=x.device), lengths.to(x.device) - 1]
    return model.head(last).squeeze(-1)


def running_predictions(model: nn.Module, x: Tensor) -> Tensor:
    """(batch, seq_len): the model's head on its readout (h or c) after every bit of x (batch, seq_len,
    1), its prediction of the running count. Column n − 1 is what the model predicts for the first n
    bits alone: an LSTM runs forward in time, so the later bits cannot change it."""
    return model.head(model.states(x)).squeeze(-1)


def batch_loss(
    model: nn.Module, x: Tensor, counts: Tensor, lengths: Tensor | None, target: str
) -> tuple[Tensor, Tensor]:
    """(MSE loss, accuracy) of one batch under `target`, the loss differentiable.

    "final": the prediction after each sequence's last bit against its count `counts` (batch,).
    "every-step": the prediction after every bit against the running count, the squared errors
    averaged over all steps within the sequences' lengths (the padding is left out), and accuracy
    the share of those steps whose rounded prediction is the running count. The every-step target
    supervises the count at every length up to the longest, which Suzgun et al. (2019) and Weiss et
    al. (2018) use to train and probe counters. ValueError for another target.
    """
    if target == "final":
        prediction = final_predictions(model, x, lengths)
        loss = nn.functional.mse_loss(prediction, counts)
        return loss, (prediction.detach().round() == counts).float().mean()
    if target != "every-step":
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    predictions = running_predictions(model, x)
    running_counts = x.squeeze(-1).cumsum(dim=1)
    mask = step_mask(lengths, x.shape[1]).to(x.device).expand_as(predictions)
    steps = mask.sum()
    loss = ((predictions - running_counts) ** 2 * mask).sum() / steps
    correct = (predictions.detach().round() == running_counts).float() * mask
    return loss, correct.sum() / steps


@torch.no_grad()
def evaluate_target(
    model: nn.Module, dataset: TensorDataset, target: str, batch_size: int = EVALUATION_BATCH_SIZE
) -> tuple[float, float]:
    """(MSE loss, accuracy) of `model` on `dataset` under `target` (see `batch_loss`), every sequence
    weighted by its number of scored steps."""
    device = next(model.parameters()).device
    model.eval()
    total_loss = total_correct = total_steps = 0.0
    for batch in zip(*(tensor.split(batch_size) for tensor in dataset.tensors), strict=True):
        x, counts = batch[0].to(device), batch[1].to(device)
        lengths = batch[2].to(device) if len(batch) > 2 else None
        loss, accuracy = batch_loss(model, x, counts, lengths, target)
        steps = len(x) if target == "final" else step_mask(lengths, x.shape[1]).expand(len(x), -1).sum()
        total_loss += loss.item() * float(steps)
        total_correct += accuracy.item() * float(steps)
        total_steps += float(steps)
    return total_loss / total_steps, total_correct / total_steps


@torch.no_grad()
def predict(model: nn.Module, dataset: TensorDataset, batch_size: int) -> Tensor:
    """The model's predicted count for every sequence of `dataset`, in order, as a CPU tensor
    (after each sequence's own last bit when the dataset holds lengths, as a mixed one does)."""
    device = next(model.parameters()).device
    model.eval()
    inputs = dataset.tensors[0]
    if len(dataset.tensors) < 3:
        return torch.cat([model(batch.to(device)).cpu() for batch in inputs.split(batch_size)])
    lengths = dataset.tensors[2]
    return torch.cat(
        [
            final_predictions(model, x.to(device), n.to(device)).cpu()
            for x, n in zip(inputs.split(batch_size), lengths.split(batch_size), strict=True)
        ]
    )


def score(predictions: Tensor, counts: Tensor) -> tuple[float, float]:
    """(MSE loss, accuracy): accuracy is the fraction of predictions that round to the true count."""
    loss = nn.MSELoss()(predictions, counts).item()
    accuracy = (predictions.round() == counts).float().mean().item()
    return loss, accuracy


def evaluate(model: nn.Module, dataset: TensorDataset, batch_size: int) -> tuple[float, float]:
    """(MSE loss, accuracy fraction) of `model` on `dataset`."""
    return score(predict(model, dataset, batch_size), dataset.tensors[1])


def length_generalization(
    model: nn.Module,
    lengths: list[int],
    num_samples: int,
    generator: torch.Generator,
    *,
    batch_size: int = EVALUATION_BATCH_SIZE,
) -> dict[str, dict]:
    """{"<length>": {"accuracy", "loss", "mean_prediction_by_count"}} on fresh sequences of each length.

    mean_prediction_by_count maps each true count that occurs ("0", "1", …) to the mean prediction
    for it, which shows *how* the model errs where it does, not only how often.
    """
    results = {}
    for length in lengths:
        dataset = make_dataset(num_samples, length, generator)
        predictions, counts = predict(model, dataset, batch_size), dataset.tensors[1]
        loss, accuracy = score(predictions, counts)
        mean_prediction_by_count = {
            str(int(count)): predictions[counts == count].mean().item() for count in counts.unique()
        }
        results[str(length)] = {
            "accuracy": accuracy,
            "loss": loss,
            "mean_prediction_by_count": mean_prediction_by_count,
        }
    return results


@torch.no_grad()
def counting_accuracy_by_length(
    model: nn.Module,
    max_length: int,
    generator: torch.Generator,
    *,
    num_samples: int = SCAN_SAMPLES,
    batch_size: int = EVALUATION_BATCH_SIZE,
) -> Tensor:
    """(max_length,) float64: entry n − 1 is the share of `num_samples` fresh random sequences of n bits whose
    rounded predicted count is the true count, for n = 1 … max_length.

    One forward pass does the whole scan: the sequences of length n are the n-bit prefixes of
    `num_samples` random sequences of max_length bits, each uniformly random on {0, 1}^n, and the
    model's prediction for a prefix is its head at step n − 1 (`running_predictions`; the LSTM
    runs forward in time, so the bits after step n cannot change it). The lengths share their
    sequences, which correlates neighbouring accuracies but biases none. The cost is one forward
    pass over (num_samples, max_length) bits without gradients: well under a second on a CPU for
    500 × 200 bits at hidden size 20. ValueError for max_length or num_samples < 1.
    """
    if max_length < 1 or num_samples < 1:
        raise ValueError(f"max_length and num_samples must be ≥ 1, got {max_length} and {num_samples}")
    device = next(model.parameters()).device
    model.eval()
    bits = torch.randint(0, 2, (num_samples, max_length, 1), generator=generator).float()
    correct = torch.zeros(max_length, dtype=torch.float64)  # k / num_samples exactly, as the JSON shows it
    for batch in bits.split(batch_size):
        predictions = running_predictions(model, batch.to(device)).cpu()
        correct += (predictions.round() == batch.squeeze(-1).cumsum(dim=1)).sum(dim=0)
    return correct / num_samples


def longest_counted_length(accuracy_by_length: Tensor | list[float], share: float = COUNTED_SHARE) -> int:
    """The largest L such that every length n = 1 … L has accuracy ≥ `share` (entry n − 1 of
    `accuracy_by_length`, as `counting_accuracy_by_length` returns): 0 when length 1 already fails,
    the scan's limit when no length fails. This is the issue's measure, in the spirit of the
    generalization tests of Weiss et al. (2018) and Suzgun et al. (2019): a counter must hold at every
    length up to L, not on average."""
    accuracy = torch.as_tensor(accuracy_by_length, dtype=torch.float64)
    # 495 of 500 right is 0.99 exactly in float64 arithmetic on counts, but 0.99 in float32 is not; a
    # tolerance far below 1 / num_samples keeps the comparison exact for any scan.
    failed = (accuracy < share - 1e-9).nonzero()
    return int(failed[0]) if len(failed) else len(accuracy)


# ---------------------------------------------------------------------------------------------------
# Training


@dataclass
class BinaryCountingResult:
    """What a run produces; the files in --out-dir are drawn from it after every epoch."""

    model: nn.Module
    history: list[dict]
    valid_dataset: TensorDataset
    predictions_before: Tensor
    predictions_after: Tensor
    length_generalization: dict[str, dict] = field(default_factory=dict)
    compile_seconds: float | None = None  # the first training step under --compile, which compiles
    # With --max-test-length: entry n − 1 is the accuracy on n-bit sequences; see longest_counted_length.
    accuracy_by_length: list[float] = field(default_factory=list)
    longest_counted_length: int | None = None


def train(config: Config, history: list[dict] | None = None) -> BinaryCountingResult:
    """Train with the settings `config`; append one dict per finished epoch to `history`.

    The output files are rewritten after every epoch, so an interrupted run keeps what it finished;
    with `config.resume` the run continues from its checkpoint in config.out_dir, and every epoch after
    it equals that of the run never interrupted. Raises Diverged after an epoch whose training loss
    is not finite, and OutputError when a file cannot be written.
    """
    history = [] if history is None else history
    device = start_run(config)

    # Data and shuffling draw from their own generators, the weights from the global one: the same
    # seed gives the same data and batches with either --cell.
    train_dataset, valid_dataset, data_generator = make_datasets(
        config.seed, config.seq_len, config.train_samples, config.valid_samples, config.train_lengths
    )
    shuffle_generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(
        train_dataset, batch_size=config.batch_size, shuffle=True, generator=shuffle_generator
    )

    model = model_of(config, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    predictions_before = predict(model, valid_dataset, EVALUATION_BATCH_SIZE)
    result = BinaryCountingResult(model, history, valid_dataset, predictions_before, predictions_before)
    # Only training steps run compiled; evaluation uses the same parameters uncompiled, so that
    # other batch sizes and sequence lengths cause no recompilation.
    train_model = compile_model(model) if config.compile else model
    generators = {"data": data_generator, "shuffle": shuffle_generator}
    run = TrainingRun(
        config, device, model, optimizer, generators, history, Path(config.out_dir) / CHECKPOINT_NAME
    )

    def restore(checkpoint: dict) -> None:
        result.compile_seconds = checkpoint["compile_seconds"]
        result.predictions_after = predict(model, valid_dataset, EVALUATION_BATCH_SIZE)

    run.resume(restore)
    for epoch in run.epochs():
        start = time.perf_counter()
        batch_losses, batch_accuracies, batch_penalties = [], [], []
        for x, y, *lengths in run.batches(loader, epoch):
            x, y = x.to(device), y.to(device)
            lengths = lengths[0].to(device) if lengths else None
            loss, accuracy = batch_loss(train_model, x, y, lengths, config.target)
            penalty = recurrent_penalty(model, config.recurrent_l1)
            optimizer.zero_grad(set_to_none=True)
            (loss + penalty).backward()
            optimizer.step()
            batch_losses.append(loss.detach())
            batch_accuracies.append(accuracy)
            batch_penalties.append(penalty.detach())
        train_loss = torch.stack(batch_losses).mean().item()
        train_accuracy = torch.stack(batch_accuracies).mean().item()

        result.predictions_after = predict(model, valid_dataset, EVALUATION_BATCH_SIZE)
        if config.target == "final":
            valid_loss, valid_accuracy = score(result.predictions_after, valid_dataset.tensors[1])
        else:
            valid_loss, valid_accuracy = evaluate_target(model, valid_dataset, config.target)
        epoch_results = {
            "epoch": epoch,
            "train_loss": train_loss,  # the MSE alone, as published, also with --recurrent-l1
            "train_accuracy": train_accuracy,
            "valid_loss": valid_loss,
            "valid_accuracy": valid_accuracy,
            "seconds": time.perf_counter() - start,
        }
        if (
            config.recurrent_l1 > 0
        ):  # the mean over the epoch's steps of λ · Σ|W_h*|, which the MSE leaves out
            epoch_results["train_penalty"] = torch.stack(batch_penalties).mean().item()
        result.compile_seconds = run.compile_seconds
        run.commit(
            epoch_results,
            train_loss + epoch_results.get("train_penalty", 0.0),
            lambda checkpoint: write_outputs(config, result, checkpoint),
            epoch_line(epoch_results, config.epochs),
        )

    result.length_generalization = length_generalization(
        model, config.lengths, config.valid_samples, data_generator
    )
    if config.max_test_length is not None:  # drawn last, so the sets above are those of a run without it
        accuracy = counting_accuracy_by_length(model, config.max_test_length, data_generator)
        result.accuracy_by_length = accuracy.tolist()
        result.longest_counted_length = longest_counted_length(accuracy)
    write_outputs(config, result)
    return result


# ---------------------------------------------------------------------------------------------------
# Report: the printed lines and tables, the JSON and the figure


def recurrent_penalty(model: nn.Module, weight: float) -> Tensor:
    """weight · Σ|W_h*| over the model's recurrent weights (`recurrent_weights`), differentiable; a zero
    tensor that adds nothing to the loss or its gradients when weight is 0."""
    if weight == 0:
        return torch.zeros((), device=next(model.parameters()).device)
    return weight * sum(matrix.abs().sum() for matrix in recurrent_weights(model.lstm))


def format_loss(loss: float) -> str:
    """Two decimals from 1 up (23.02), two significant digits below (0.031, 0.0062)."""
    return f"{loss:.2f}" if loss >= 1 else f"{loss:.2g}"


def format_accuracy(accuracy: float) -> str:
    return f"{100 * accuracy:.2f}%"


def epoch_line(epoch: dict, epochs: int) -> str:
    train = (
        f"Train Loss {format_loss(epoch['train_loss'])} Accuracy {format_accuracy(epoch['train_accuracy'])}"
    )
    if "train_penalty" in epoch:
        train += f" L1 Penalty {format_loss(epoch['train_penalty'])}"
    valid = (
        f"Valid Loss {format_loss(epoch['valid_loss'])} Accuracy {format_accuracy(epoch['valid_accuracy'])}"
    )
    return f"Epoch {epoch['epoch']}/{epochs} | {epoch['seconds']:.1f}s | {train} | {valid}"


def report(history: list[dict]) -> str:
    """The per-epoch results as a markdown table in the published format."""
    header = ("Epoch", "Train Loss", "Train Accuracy", "Valid Loss", "Valid Accuracy")
    rows = [
        (
            epoch["epoch"],
            format_loss(epoch["train_loss"]),
            format_accuracy(epoch["train_accuracy"]),
            format_loss(epoch["valid_loss"]),
            format_accuracy(epoch["valid_accuracy"]),
        )
        for epoch in history
    ]
    return markdown_table(header, rows)


# The published results this script reproduces:
# epoch → (train loss, train accuracy, valid loss, valid accuracy).
PUBLISHED = {
    0: (23.02, 0.1006, 4.82, 0.1670),
    5: (0.031, 0.9794, 0.016, 0.9810),
    10: (0.006, 0.9988, 0.004, 1.0),
    19: (0.002, 1.0, 0.002, 1.0),
}


def uses_published_settings(config: Config) -> bool:
    """Whether the run's experiment settings are the published ones (seed, device and cell aside)."""
    published = Config()
    settings = ("seq_len", "train_samples", "valid_samples", "hidden_size", "epochs", "batch_size", "lr")
    settings += ("train_lengths", "target", "readout", "recurrent_l1")
    return all(getattr(config, name) == getattr(published, name) for name in settings)


def comparison_table(history: list[dict]) -> str:
    """The published rows beside this run's, "published / this run", for the epochs both have."""
    header = ("Epoch", "Train Loss", "Train Accuracy", "Valid Loss", "Valid Accuracy")
    keys = ("train_loss", "train_accuracy", "valid_loss", "valid_accuracy")
    formats = (format_loss, format_accuracy, format_loss, format_accuracy)
    rows = []
    for epoch in history:
        if epoch["epoch"] in PUBLISHED:
            published = PUBLISHED[epoch["epoch"]]
            cells = zip(formats, published, keys, strict=True)
            rows.append((epoch["epoch"], *(f"{fmt(value)} / {fmt(epoch[key])}" for fmt, value, key in cells)))
    return markdown_table(header, rows)


def generalization_table(generalization: dict[str, dict]) -> str:
    header = ("Sequence Length", "Loss", "Accuracy")
    rows = [
        (length, format_loss(scores["loss"]), format_accuracy(scores["accuracy"]))
        for length, scores in generalization.items()
    ]
    return markdown_table(header, rows)


def write_outputs(config: Config, result: BinaryCountingResult, checkpoint: dict | None = None) -> None:
    """Write the run so far into config.out_dir, each file atomically: the figure, the weights, the
    checkpoint (when given: only at the end of an epoch, where --resume can start) and the JSON last,
    so that the JSON never lists an epoch whose checkpoint is not yet written."""
    out_dir = Path(config.out_dir)
    results = {
        "config": config_of(config),
        "machine": describe_machine(),
        "lstm_path": lstm_path(result.model, config.batch_size, config.compile),
        "epochs": result.history,
        "length_generalization": result.length_generalization,
    }
    if result.compile_seconds is not None:
        results["compile_seconds"] = result.compile_seconds
    if result.longest_counted_length is not None:
        results["longest_counted_length"] = result.longest_counted_length
        results["accuracy_by_length"] = result.accuracy_by_length  # entry n − 1: n-bit sequences
    if not config.no_figures:
        save_figure(plot_results(config, result), out_dir / FIGURE_NAME)
    save_torch(result.model.state_dict(), out_dir / WEIGHTS_NAME)
    if checkpoint is not None:
        save_torch(checkpoint, out_dir / CHECKPOINT_NAME)
    save_json(results, out_dir / JSON_NAME)


def plot_results(config: Config, result: BinaryCountingResult) -> Figure:
    """Loss and accuracy per epoch, length generalization, and predicted vs true count before and after."""
    figure = Figure(figsize=(16, 9.5), layout="constrained")
    grid = figure.add_gridspec(2, 6)
    loss_axes = figure.add_subplot(grid[0, 0:2])
    accuracy_axes = figure.add_subplot(grid[0, 2:4])
    generalization_axes = figure.add_subplot(grid[0, 4:6])
    before_axes = figure.add_subplot(grid[1, 0:3])
    after_axes = figure.add_subplot(grid[1, 3:6], sharex=before_axes, sharey=before_axes)
    cell = trained_cell(result.model, config.variant, config.batch_size, config.compile)
    figure.suptitle(
        f"An LSTM of hidden size {config.hidden_size} trained to count the ones in {config.seq_len} random"
        f" bits: {cell}",
        fontsize=15,
    )

    epochs = [epoch["epoch"] for epoch in result.history]
    for split, style in (("train", "o-"), ("valid", "s--")):
        loss_axes.plot(epochs, [epoch[f"{split}_loss"] for epoch in result.history], style, label=split)
        accuracies = [100 * epoch[f"{split}_accuracy"] for epoch in result.history]
        accuracy_axes.plot(epochs, accuracies, style, label=split)
    loss_axes.set(
        yscale="log",
        xlabel="epoch",
        ylabel="mean squared error (log scale)",
        title="Loss: squared distance between predicted and true count",
    )
    accuracy_axes.set(
        ylim=(0, 102),
        xlabel="epoch",
        ylabel="accuracy (%)",
        title="Accuracy: share of sequences whose rounded\nprediction equals the number of ones",
    )
    for axes, place in ((loss_axes, "upper right"), (accuracy_axes, "lower right")):
        axes.legend(
            title="train: mean over the epoch's batches\nvalid: after the epoch", loc=place, fontsize=9
        )
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)

    plot_generalization(generalization_axes, result.length_generalization, config.seq_len)

    counts = result.valid_dataset.tensors[1]
    plot_predictions(before_axes, counts, result.predictions_before, config.seq_len)
    before_axes.set_title("Before training: predicted vs true count on the validation set")
    plot_predictions(after_axes, counts, result.predictions_after, config.seq_len)
    after_axes.set_title(
        f"After {len(result.history)} epoch(s): predicted vs true count on the validation set"
    )
    after_axes.tick_params(labelleft=True)
    return figure


def plot_predictions(axes, counts: Tensor, predictions: Tensor, seq_len: int) -> None:
    """One dot per sequence: true count (spread sideways so the dots do not hide each other) vs prediction."""
    jitter = np.random.default_rng(0).uniform(-0.25, 0.25, size=len(counts))
    possible = np.arange(seq_len + 1)
    # A prediction for count k is correct when it lies in [k - 0.5, k + 0.5]: one box per count.
    axes.bar(
        possible,
        1,
        bottom=possible - 0.5,
        width=0.7,
        color="tab:green",
        alpha=0.2,
        label="rounds to the true count",
    )
    axes.plot(possible, possible, color="tab:green", lw=1, label="prediction = true count")
    axes.scatter(
        counts.numpy() + jitter, predictions.numpy(), s=8, alpha=0.4, label="one validation sequence"
    )
    axes.set(xlabel="true number of ones", ylabel="predicted number of ones")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend(loc="upper left", fontsize=9)
    axes.grid(alpha=0.3)


def plot_generalization(axes, generalization: dict[str, dict], seq_len: int) -> None:
    """Mean prediction per true count, one line per tested sequence length."""
    axes.set(
        title=f"Length generalization: trained on {seq_len} bits,\nhow does it count other lengths?",
        xlabel="true number of ones",
        ylabel="mean predicted number of ones",
    )
    axes.grid(alpha=0.3)
    if not generalization:
        axes.text(0.5, 0.5, "measured when training ends", ha="center", va="center", transform=axes.transAxes)
        return
    longest = max(int(length) for length in generalization)
    axes.plot([0, longest], [0, longest], "k--", lw=1, label="prediction = true count")
    for length, scores in generalization.items():
        by_count = scores["mean_prediction_by_count"]
        style = {"lw": 2.5} if int(length) == seq_len else {"lw": 1.2}
        label = f"{length} bits: {format_accuracy(scores['accuracy'])} correct"
        axes.plot(
            [int(count) for count in by_count], list(by_count.values()), "o-", ms=3, label=label, **style
        )
    axes.legend(loc="upper left", fontsize=9)


# ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)

    def run(history: list[dict]) -> None:
        result = train(config, history)
        print(report(history))
        if uses_published_settings(config):
            print("\nThe published results / this run:")
            print(comparison_table(history))
        print(f"\nLength generalization (trained on {config.seq_len} bits):")
        print(generalization_table(result.length_generalization))
        if result.longest_counted_length is not None:
            print(
                f"\nLongest counted length: {result.longest_counted_length} (every length up to it counted"
                f" right on ≥ {COUNTED_SHARE:.0%} of {SCAN_SAMPLES} sequences; scanned to"
                f" {config.max_test_length})"
            )
        print(f"\nLSTM: {trained_cell(result.model, config.variant, config.batch_size, config.compile)}")
        if result.compile_seconds is not None:
            print(f"\ntorch.compile: the first training step took {result.compile_seconds:.1f}s")
        written = (JSON_NAME, WEIGHTS_NAME) if config.no_figures else (FIGURE_NAME, JSON_NAME, WEIGHTS_NAME)
        print(f"\nWrote {', '.join(str(config.out_dir / name) for name in written)}")

    return run_until_interrupted(run, report)


if __name__ == "__main__":
    sys.exit(main())
