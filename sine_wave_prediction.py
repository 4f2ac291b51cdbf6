"""Forecast the held-out end of a sine wave with the hand-written LSTM.

The series is y = sin(2πt/40) for t = 0 … 799. The model sees the first 760 points as sliding windows
of 40, each labelled with the point that follows it, and learns to predict one step ahead. After each
epoch it forecasts the last 40 points autoregressively: it starts from the last 40 training points,
predicts the next one, appends that prediction to its input, slides the window and repeats, so from
the second step on it reads its own output. The test loss is the MSE of that forecast against the
held-out true values y[760:800].

What that test measures: training is teacher-forced (every window holds true points), the forecast
runs free (from its second step it reads its own predictions). Since 760 = 19 periods of 40, the
held-out points repeat, value for value, a period the model trained on (y[760 + k] = y[720 + k]):
the test asks whether the model stays on a trajectory it has memorized, not whether it forecasts
something new. So after training the script also forecasts signals it never saw (another phase,
another period, another amplitude, a noisy start), each from its first window, and compares the
LSTM with the two-tap linear recurrence y_t = 2 cos(2π/P) y_{t-1} - y_{t-2}, which continues any
pure sine of period P exactly ("generalization" and "two_tap_recurrence" in sine_wave.json).

    python sine_wave_prediction.py                    # the published settings, outputs in runs/sine_wave/
    python sine_wave_prediction.py --out-dir figures  # the same, regenerating the committed results
    python sine_wave_prediction.py --resume           # continue the run in runs/sine_wave/
    python sine_wave_prediction.py --cell torch       # the same run with torch.nn.LSTM

After every epoch --out-dir holds sine_epoch{N}.png for each --plot-epochs N reached, sine_loss.png,
sine_wave.json, the weights sine_wave.pt (rebuild the model with `experiment_utils.load_model`) and
the checkpoint sine_wave.checkpoint.pt that --resume continues from.

Importable: `train(Config())` runs the experiment (or `Config(batch_size=8, lr=0.08)`, any settings)
and returns a `SineResult`.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from experiment_utils import (
    ResumeKeys,
    RunSettings,
    TrainingRun,
    add_common_arguments,
    compile_model,
    config_of,
    configured,
    describe_machine,
    finish_parsing,
    interrupts_held,
    lstm_path,
    markdown_table,
    model_of,
    non_negative_int,
    positive_float,
    positive_int,
    run_until_interrupted,
    save_figure,
    save_json,
    save_torch,
    start_run,
    trained_cell,
)

NUM_POINTS = 800  # t = 0 … 799
PERIOD = 40  # points per sine period
HELD_OUT = 40  # the last HELD_OUT points are never trained on; the forecast predicts them
TRAIN_POINTS = NUM_POINTS - HELD_OUT
PLOT_EPOCHS = (0, 2, 9)  # the published figures: after the first, the third and the last epoch
JSON_NAME = "sine_wave.json"
WEIGHTS_NAME = "sine_wave.pt"  # the model's state_dict after the last finished epoch
CHECKPOINT_NAME = "sine_wave.checkpoint.pt"  # everything --resume needs
RESUME_KEYS = ResumeKeys(
    extras=("forecasts", "compile_seconds"), generators=("shuffle",), optimizer="SGD"
)  # what its checkpoint holds besides make_checkpoint's own
DEFAULT_OUT_DIR = "runs/sine_wave"  # outside the tracked files: a trial run changes nothing in git


@dataclass
class Config(RunSettings):
    """The settings of a run; the defaults are the published ones (the original README: windows of 40
    points, hidden size 50, SGD at lr 0.01 on batches of 1, 10 epochs, figures after epochs 0, 2, 9).

    `plot_epochs` None: those of PLOT_EPOCHS inside the run. Raises ValueError for a window that
    leaves no training target, plot epochs outside the run, and RunSettings' errors.
    """

    window: int = 40
    hidden_size: int = 50
    epochs: int = 10
    lr: float = 0.01
    batch_size: int = 1
    plot_epochs: list[int] | None = None
    out_dir: Path = Path(DEFAULT_OUT_DIR)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.window >= TRAIN_POINTS:
            raise ValueError(f"--window must be below the {TRAIN_POINTS} training points, got {self.window}")
        if self.plot_epochs is None:
            self.plot_epochs = [epoch for epoch in PLOT_EPOCHS if epoch < self.epochs]
        outside = [epoch for epoch in self.plot_epochs if epoch >= self.epochs]
        if outside:
            raise ValueError(
                f"--plot-epochs {' '.join(map(str, outside))} outside this run's epochs 0 … {self.epochs - 1}"
            )
        self.plot_epochs = sorted(set(self.plot_epochs))


def parse_args(argv: list[str] | None = None) -> Config:
    """The configuration of a command line; the defaults are Config's, the published ones. Bad values
    exit with status 2."""
    defaults = Config()
    parser = argparse.ArgumentParser(
        description="Forecast the held-out end of a sine wave with the hand-written LSTM."
    )
    default = " (default: %(default)s)"
    parser.add_argument(
        "--window", type=positive_int, default=defaults.window, help="points per input window" + default
    )
    parser.add_argument(
        "--hidden-size", type=positive_int, default=defaults.hidden_size, help="LSTM hidden units" + default
    )
    parser.add_argument(
        "--epochs", type=positive_int, default=defaults.epochs, help="passes over the windows" + default
    )
    parser.add_argument("--lr", type=positive_float, default=defaults.lr, help="SGD learning rate" + default)
    parser.add_argument(
        "--batch-size", type=positive_int, default=defaults.batch_size, help="windows per SGD step" + default
    )
    parser.add_argument(
        "--plot-epochs",
        type=non_negative_int,
        nargs="*",
        metavar="EPOCH",
        help="zero-based epochs to draw as sine_epoch{N}.png "
        f"(default: those of {' '.join(map(str, PLOT_EPOCHS))} inside the run)",
    )
    add_common_arguments(parser, default_out_dir=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    if args.plot_epochs is not None:  # as Config keeps them, before --resume compares the settings
        args.plot_epochs = sorted(set(args.plot_epochs))
    # The window, and plot epochs within the run: Config's checks, after --resume took in the run's.
    return configured(parser, Config, finish_parsing(parser, argv, args, CHECKPOINT_NAME, RESUME_KEYS))


# ---------------------------------------------------------------------------------------------------
# Data


def make_series(num_points: int = NUM_POINTS, period: float = PERIOD) -> Tensor:
    """y = sin(2πt/period) for t = 0 … num_points - 1, as a float32 tensor of shape (num_points,)."""
    t = torch.arange(num_points, dtype=torch.float64)
    return torch.sin(2 * math.pi * t / period).float()


def make_windows(series: Tensor, window: int) -> TensorDataset:
    """Every run of `window` consecutive points, x (N, window, 1), with the point after it, y (N,)."""
    runs = series.unfold(0, window + 1, 1)  # (N, window + 1): each window followed by its target
    return TensorDataset(runs[:, :window].unsqueeze(-1).clone(), runs[:, window].clone())


# ---------------------------------------------------------------------------------------------------
# Forecast


@torch.no_grad()
def forecast(model: nn.Module, seed_window: Tensor, steps: int) -> Tensor:
    """Predict `steps` points after `seed_window`, each from a window that ends in the previous predictions.

    seed_window holds the last known points, shape (window,) or (window, 1), on the model's device.
    Returns the `steps` predictions as a CPU tensor of shape (steps,).
    """
    window = seed_window.reshape(-1)
    predictions = []
    for _ in range(steps):
        next_point = model(window.view(1, -1, 1)).reshape(1)
        predictions.append(next_point)
        window = torch.cat((window[1:], next_point))
    return torch.cat(predictions).cpu()


# ---------------------------------------------------------------------------------------------------
# Generalization: signals never trained on

# name → (amplitude, period in points, phase in radians, standard deviation of noise on the seed window).
# The phase of 1 rad is 6.4 points, not a whole number, so no training window holds these values.
UNSEEN_SIGNALS = {
    "phase +1 rad": (1.0, PERIOD, 1.0, 0.0),
    "period 30": (1.0, 30, 0.0, 0.0),
    "period 50": (1.0, 50, 0.0, 0.0),
    "amplitude 0.5": (0.5, PERIOD, 0.0, 0.0),
    "noisy seed window (σ 0.05)": (1.0, PERIOD, 1.0, 0.05),
}


def make_signal(amplitude: float, period: float, phase: float, num_points: int) -> Tensor:
    """y = amplitude · sin(2πt/period + phase) for t = 0 … num_points - 1, float32, (num_points,)."""
    t = torch.arange(num_points, dtype=torch.float64)
    return (amplitude * torch.sin(2 * math.pi * t / period + phase)).float()


def two_tap_forecast(seed_window: Tensor, steps: int, period: float = PERIOD) -> Tensor:
    """The recurrence y_t = 2 cos(2π/period) y_{t-1} - y_{t-2} run `steps` points past seed_window.

    Exact for any pure sine of that period, whatever its amplitude and phase (the identity
    sin(a + b) + sin(a - b) = 2 cos(b) sin(a)). With period = PERIOD it is the best linear forecaster
    of the training signal, which knows nothing of other periods. Returns (steps,), float32.
    """
    coefficient = 2 * math.cos(2 * math.pi / period)
    values = [float(v) for v in seed_window.reshape(-1)[-2:]]
    for _ in range(steps):
        values.append(coefficient * values[-1] - values[-2])
    return torch.tensor(values[2:], dtype=torch.float32)


def unseen_windows(window: int, seed: int) -> dict[str, tuple[Tensor, Tensor]]:
    """{signal: (seed window (window,), clean truth (HELD_OUT,))} for every UNSEEN_SIGNALS signal, the
    noise on the seed windows drawn in that order from a generator seeded with `seed`."""
    noise_generator = torch.Generator().manual_seed(seed)
    windows = {}
    for name, (amplitude, period, phase, noise) in UNSEEN_SIGNALS.items():
        signal = make_signal(amplitude, period, phase, window + HELD_OUT)
        seed_window, truth = signal[:window].clone(), signal[window:]
        seed_window += noise * torch.randn(window, generator=noise_generator)
        windows[name] = seed_window, truth
    return windows


def measure_generalization(model: nn.Module, window: int, seed: int) -> tuple[dict, dict]:
    """Forecast MSE over HELD_OUT points of every UNSEEN_SIGNALS signal, from its first `window` points.

    Returns ({signal: LSTM forecast MSE}, {signal: two-tap recurrence MSE}), the recurrence tuned to
    the training period. The seed windows are `unseen_windows(window, seed)`; the forecast is scored
    against the clean signal.
    """
    device = next(model.parameters()).device
    lstm, recurrence = {}, {}
    for name, (seed_window, truth) in unseen_windows(window, seed).items():
        lstm[name] = nn.functional.mse_loss(forecast(model, seed_window.to(device), HELD_OUT), truth).item()
        recurrence[name] = nn.functional.mse_loss(two_tap_forecast(seed_window, HELD_OUT), truth).item()
    return lstm, recurrence


def generalization_figure(model: nn.Module, window: int, seed: int) -> Figure:
    """One panel per UNSEEN_SIGNALS signal: its seed window, the truth over the HELD_OUT points, the
    model's forecast and the two-tap recurrence's, the windows of `measure_generalization`."""
    signals = unseen_windows(window, seed)
    figure = Figure(figsize=(10, 2.4 * math.ceil(len(signals) / 2)), layout="constrained")
    axes = list(figure.subplots(math.ceil(len(signals) / 2), 2, sharex=True, sharey=True).flat)
    t = torch.arange(window + HELD_OUT)
    device = next(model.parameters()).device
    for ax, (name, (seed_window, truth)) in zip(axes, signals.items(), strict=False):
        ax.axvspan(window - 0.5, window + HELD_OUT - 0.5, color="0.92", lw=0)
        ax.plot(t[:window], seed_window, color="k", lw=1, label="seed window")
        ax.plot(t[window:], truth, color="k", ls="--", lw=1, label="truth")
        ax.plot(t[window:], forecast(model, seed_window.to(device), HELD_OUT).cpu(), color="C3", label="LSTM")
        recurrence = two_tap_forecast(seed_window, HELD_OUT)
        ax.plot(t[window:], recurrence, color="C8", label=f"two-tap, P = {PERIOD}")
        ax.set(title=name, ylim=(-1.6, 1.6))
    for ax in axes[len(signals) :]:  # the panel left over when the signals do not fill the grid
        ax.set_visible(False)
    figure.axes[0].legend(loc="lower left", fontsize=9)
    figure.supxlabel(f"t (grey: the {HELD_OUT} forecast points)")
    return figure


# ---------------------------------------------------------------------------------------------------
# Training


@dataclass
class SineResult:
    model: nn.Module
    history: list[dict]  # one {"epoch", "train_loss", "test_loss", "seconds"} per finished epoch
    series: Tensor  # the whole true signal, (NUM_POINTS,)
    forecasts: dict[int, Tensor] = field(default_factory=dict)  # epoch → its HELD_OUT forecast values
    compile_seconds: float | None = None  # the first training step under --compile
    generalization: dict[str, float] = field(default_factory=dict)  # unseen signal → forecast MSE
    two_tap_recurrence: dict[str, float] = field(default_factory=dict)  # the same for the recurrence


def train(config: Config, history: list[dict] | None = None) -> SineResult:
    """Train with the settings `config`; after each epoch forecast the held-out points and write the outputs.

    Each finished epoch is appended to `history` (a new list when None) as soon as it ends, so a caller
    that is interrupted keeps every finished epoch. With `config.resume` the run continues from its
    checkpoint in config.out_dir, and every epoch after it equals that of the run never interrupted.
    Raises Diverged after an epoch whose training loss is not finite, and OutputError when a file
    cannot be written.
    """
    history = [] if history is None else history
    device = start_run(config)
    series = make_series()
    train_series, held_out = series[:TRAIN_POINTS], series[TRAIN_POINTS:]
    windows = make_windows(train_series, config.window)
    shuffle_generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(windows, batch_size=config.batch_size, shuffle=True, generator=shuffle_generator)

    model = model_of(config, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    # Only training steps run compiled; the forecast uses the same parameters uncompiled, so that its
    # single windows without gradients cause no recompilation.
    train_model = compile_model(model) if config.compile else model
    seed_window = train_series[-config.window :].to(device)
    result = SineResult(model=model, history=history, series=series)
    generators = {"shuffle": shuffle_generator}
    run = TrainingRun(
        config, device, model, optimizer, generators, history, Path(config.out_dir) / CHECKPOINT_NAME
    )

    def restore(checkpoint: dict) -> None:
        result.forecasts = dict(checkpoint["forecasts"])
        result.compile_seconds = checkpoint["compile_seconds"]

    run.resume(restore)
    for epoch in run.epochs():
        start = time.perf_counter()
        total_loss = torch.zeros((), device=device)
        for x, y in run.batches(loader, epoch):
            x, y = x.to(device), y.to(device)
            loss = nn.functional.mse_loss(train_model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += loss.detach() * len(y)
        train_loss = total_loss.item() / len(windows)

        predicted = forecast(model, seed_window, HELD_OUT)
        test_loss = nn.functional.mse_loss(predicted, held_out).item()
        seconds = time.perf_counter() - start
        result.forecasts[epoch] = predicted
        result.compile_seconds = run.compile_seconds
        run.commit(
            {"epoch": epoch, "train_loss": train_loss, "test_loss": test_loss, "seconds": seconds},
            train_loss,
            lambda checkpoint: write_outputs(config, result, checkpoint),
            f"Epoch {epoch}/{config.epochs} | {seconds:.1f}s | "
            f"Train Loss {train_loss:.4f} | Test Loss {test_loss:.4f}",
            forecasts=dict(result.forecasts),
        )
    result.generalization, result.two_tap_recurrence = measure_generalization(
        model, config.window, config.seed
    )
    # Also when resumed after its last epoch: a kill between that epoch's checkpoint and its JSON
    # leaves files to write again (the same content otherwise).
    with interrupts_held():
        write_outputs(config, result)
    return result


# ---------------------------------------------------------------------------------------------------
# Report


def write_outputs(config: Config, result: SineResult, checkpoint: dict | None = None) -> None:
    """The figures of the epochs finished so far, the weights, the checkpoint (when given: at the end of
    an epoch), then sine_wave.json last, so that the JSON never lists an epoch whose checkpoint is not
    yet written; each file atomically."""
    out_dir = Path(config.out_dir)
    last = result.history[-1]
    if not config.no_figures:
        cell = trained_cell(result.model, config.variant, config.batch_size, config.compile)
        if last["epoch"] in config.plot_epochs:
            forecasted = result.forecasts[last["epoch"]]
            figure = forecast_figure(result.series, forecasted, last, config.window, cell)
            save_figure(figure, out_dir / f"sine_epoch{last['epoch']}.png")
        save_figure(loss_figure(result.history, cell), out_dir / "sine_loss.png")
    save_torch(result.model.state_dict(), out_dir / WEIGHTS_NAME)
    if checkpoint is not None:
        save_torch(checkpoint, out_dir / CHECKPOINT_NAME)
    results = {"config": config_of(config), "machine": describe_machine()}
    results["lstm_path"] = lstm_path(result.model, config.batch_size, config.compile)
    results |= {"epochs": result.history, "forecast": last_forecast(result)}
    results |= {"generalization": result.generalization, "two_tap_recurrence": result.two_tap_recurrence}
    if result.compile_seconds is not None:
        results["compile_seconds"] = result.compile_seconds
    save_json(results, out_dir / JSON_NAME)


def last_forecast(result: SineResult) -> list[float]:
    return result.forecasts[result.history[-1]["epoch"]].tolist()


def forecast_figure(series: Tensor, predicted: Tensor, epoch: dict, window: int, cell: str = "") -> Figure:
    """The true signal with the forecast over the held-out points; below, a close-up of the forecast.
    `cell` says what trained (`trained_cell`), in the title."""
    t = torch.arange(len(series))
    seed_start, end = TRAIN_POINTS - window, len(series)
    figure = Figure(figsize=(10, 6.4), layout="constrained")
    whole, close_up = figure.subplots(2, 1, height_ratios=(1, 1.3))
    for ax in (whole, close_up):
        ax.axvspan(seed_start - 0.5, TRAIN_POINTS - 0.5, color="C0", alpha=0.12, lw=0, label="seed window")
        ax.axvspan(TRAIN_POINTS - 0.5, end - 0.5, color="0.88", lw=0, label="held out")
        ax.plot(t[:TRAIN_POINTS], series[:TRAIN_POINTS], color="C0", lw=1.2, label="training points")
        ax.plot(t[TRAIN_POINTS:], series[TRAIN_POINTS:], color="k", lw=1.2, ls="--", label="held-out truth")
        ax.plot(t[TRAIN_POINTS:], predicted, color="C3", lw=1.5, marker="o", ms=3, label="forecast")
        ax.set_ylim(-1.5, 1.5)
        ax.set_ylabel("y")
    whole.set_title(f"The whole signal, y = sin(2πt/{PERIOD})", fontsize=10)
    close_up.set_xlim(seed_start - 0.5, end - 0.5)
    close_up.set_xlabel("t")
    close_up.set_title(
        f"Close-up: from the last {window} training points, each forecast point is predicted "
        "from a window that ends in the previous predictions",
        fontsize=10,
    )
    figure.legend(*whole.get_legend_handles_labels(), loc="outside lower center", ncol=5)
    figure.suptitle(
        f"Epoch {epoch['epoch']}: train loss {epoch['train_loss']:.2g}, "
        f"test loss (MSE of the {len(predicted)}-point forecast) {epoch['test_loss']:.2g}"
        + (f"\n{cell}" if cell else "")
    )
    return figure


def loss_figure(history: list[dict], cell: str = "") -> Figure:
    """Train and test loss per epoch; `cell` says what trained (`trained_cell`), in the title."""
    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(6, 4), layout="constrained")
    ax = figure.subplots()
    ax.semilogy(epochs, [row["train_loss"] for row in history], marker="o", label="train: one-step MSE")
    ax.semilogy(epochs, [row["test_loss"] for row in history], marker="o", label="test: forecast MSE")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (log scale)")
    ax.set_title("Sine wave: loss per epoch" + (f"\n{cell}" if cell else ""), fontsize=10)
    ax.legend()
    return figure


def report(history: list[dict]) -> str:
    rows = [(row["epoch"], f"{row['train_loss']:.4f}", f"{row['test_loss']:.4f}") for row in history]
    return markdown_table(("Epoch", "Train Loss", "Test Loss"), rows)


def generalization_table(run: dict) -> str:
    """The forecast MSE of the LSTM and of the two-tap recurrence on the held-out end of the training
    signal and on every unseen signal, from a run's JSON (its "config", "epochs", "generalization" and
    "two_tap_recurrence")."""
    series = make_series()
    seed_window = series[TRAIN_POINTS - run["config"]["window"] : TRAIN_POINTS]
    held_out_two_tap = nn.functional.mse_loss(two_tap_forecast(seed_window, HELD_OUT), series[TRAIN_POINTS:])
    rows = [("held-out end of the training signal", run["epochs"][-1]["test_loss"], held_out_two_tap.item())]
    rows += [(name, mse, run["two_tap_recurrence"][name]) for name, mse in run["generalization"].items()]
    header = (
        "Signal (40-point forecast from a 40-point window)",
        "LSTM MSE",
        f"Two-tap recurrence (P = {PERIOD}) MSE",
    )
    return markdown_table(
        header, [(name, f"{lstm:.2g}", f"{recurrence:.2g}") for name, lstm, recurrence in rows]
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)

    def run(history: list[dict]) -> None:
        result = train(config, history)
        print(report(history))
        run = {"config": config_of(config), "epochs": history, "generalization": result.generalization}
        print("\nForecasts of signals the model never saw, each from its first window:")
        print(generalization_table(run | {"two_tap_recurrence": result.two_tap_recurrence}))
        print(f"\nLSTM: {trained_cell(result.model, config.variant, config.batch_size, config.compile)}")
        if result.compile_seconds is not None:
            print(f"torch.compile: the first training step took {result.compile_seconds:.1f}s")

    return run_until_interrupted(run, report)


if __name__ == "__main__":
    sys.exit(main())
