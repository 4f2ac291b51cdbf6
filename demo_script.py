"""A quick tour: train both experiments with the hand-written LSTM and save their figures.

    python demo_script.py           # quick settings that still show learning, outputs in runs/demo/
    python demo_script.py --full    # the published settings of both experiments

It calls the training scripts' own functions, so what it shows is what they run, and passes its
options on to both (it builds each script's `Config`): a bad value is a usage error before either
trains, SIGTERM stops it as Ctrl-C does, and both write their figures, JSON, weights and
checkpoints into the one --out-dir.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import binary_counting
import sine_wave_prediction
from experiment_utils import (
    RunSettings,
    add_common_arguments,
    configured,
    finish_parsing,
    run_until_interrupted,
    trained_cell,
)

# Quick settings, chosen from measured runs. Binary counting sits on a plateau (predicting the mean
# count, loss ≈ 5) for its first ~1 500 Adam steps whatever the data size, so the quick run keeps the
# published 10 000 sequences and stops after 6 epochs, when validation accuracy is above 99 %.
# The sine wave takes 8 windows per SGD step with 8× the learning rate: an eighth of the steps of the
# published batch-1 run, nearly the same loss curve.
QUICK_BINARY_COUNTING = {"epochs": 6}
QUICK_SINE_WAVE = {"batch_size": 8, "lr": 0.08}


@dataclass
class Config(RunSettings):
    """The demo's settings: both experiments' quick settings, or with `full` their published ones,
    and the settings they share. Two experiments in one go leave nothing for `resume` to continue."""

    full: bool = False
    out_dir: Path = Path("runs/demo")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.resume:
            raise ValueError("the demo runs two experiments in one go and has no --resume")


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(description="Train both experiments quickly and save their figures.")
    parser.add_argument("--full", action="store_true", help="run both at their published settings instead")
    add_common_arguments(parser, default_out_dir=str(Config.out_dir), resumable=False)
    return configured(parser, Config, finish_parsing(parser, argv, parser.parse_args(argv)))


def experiment_config(config: Config, script, quick_settings: dict):
    """One experiment's configuration (`script.Config`): its quick settings (unless `full`) and the
    settings the demo shares with it."""
    shared = {field.name: getattr(config, field.name) for field in fields(RunSettings)}
    return script.Config(**shared, **({} if config.full else quick_settings))


def run_binary_counting(args: Config) -> str:
    settings = experiment_config(args, binary_counting, QUICK_BINARY_COUNTING)
    result = binary_counting.train(settings)
    figure = "none (--no-figures)" if settings.no_figures else settings.out_dir / binary_counting.FIGURE_NAME
    last = result.history[-1]
    generalization = ", ".join(
        f"{length} bits {binary_counting.format_accuracy(scores['accuracy'])}"
        for length, scores in result.length_generalization.items()
    )
    return (
        f"Binary counting ({settings.epochs} epochs, {settings.train_samples} sequences"
        f" of {settings.seq_len} bits):"
        f" valid accuracy {binary_counting.format_accuracy(last['valid_accuracy'])},"
        f" valid loss {binary_counting.format_loss(last['valid_loss'])}\n"
        f"  accuracy at other lengths: {generalization}\n"
        f"  LSTM: {trained_cell(result.model, settings.variant, settings.batch_size, settings.compile)}\n"
        f"  figure: {figure}"
    )


def run_sine_wave(args: Config) -> str:
    settings = experiment_config(args, sine_wave_prediction, QUICK_SINE_WAVE)
    result = sine_wave_prediction.train(settings)
    last = result.history[-1]
    figures = ", ".join(str(settings.out_dir / f"sine_epoch{epoch}.png") for epoch in settings.plot_epochs)
    figures = "none (--no-figures)" if settings.no_figures else figures
    return (
        f"Sine wave ({settings.epochs} epochs): train loss {last['train_loss']:.4f},"
        f" forecast MSE on the held-out 40 points {last['test_loss']:.4f}\n"
        f"  LSTM: {trained_cell(result.model, settings.variant, settings.batch_size, settings.compile)}\n"
        f"  figures: {figures}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()

    def run_both(summaries: list[str]) -> None:
        for run in (run_binary_counting, run_sine_wave):
            summaries.append(run(args))
        print("\n" + "\n\n".join(summaries))
        print(f"\nBoth experiments took {time.perf_counter() - start:.0f}s.")

    def finished(summaries: list[str]) -> str:
        return f"{len(summaries)} of 2 experiments finished."

    return run_until_interrupted(run_both, lambda _: "", unit="experiment", stopped=finished)


if __name__ == "__main__":
    sys.exit(main())
