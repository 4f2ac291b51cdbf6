"""A quick tour: train both experiments with the hand-written LSTM and save their figures.

    python demo_script.py           # quick settings that still show learning, outputs in runs/demo/
    python demo_script.py --full    # the published settings of both experiments

It calls the training scripts' own functions, so what it shows is what they run, and passes its
options on to both: a bad value is a usage error before either trains, SIGTERM stops it as Ctrl-C
does, and both write their figures, JSON, weights and checkpoints into the one --out-dir.
"""

from __future__ import annotations

import argparse
import sys
import time

import binary_counting
import sine_wave_prediction
from experiment_utils import (
    add_common_arguments,
    finish_parsing,
    run_until_interrupted,
    trained_cell,
)

# Quick settings, chosen from measured runs. Binary counting sits on a plateau (predicting the mean
# count, loss ≈ 5) for its first ~1 500 Adam steps whatever the data size, so the quick run keeps the
# published 10 000 sequences and stops after 6 epochs, when validation accuracy is above 99 %.
# The sine wave takes 8 windows per SGD step with 8× the learning rate: a tenth of the steps of the
# published batch-1 run, nearly the same loss curve.
QUICK_BINARY_COUNTING = ["--epochs", "6"]
QUICK_SINE_WAVE = ["--batch-size", "8", "--lr", "0.08"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train both experiments quickly and save their figures.")
    parser.add_argument("--full", action="store_true", help="run both at their published settings instead")
    # Two experiments in one go: nothing for --resume to continue, so the demo has none.
    add_common_arguments(parser, default_out_dir="runs/demo", resumable=False)
    return finish_parsing(parser, argv, parser.parse_args(argv))


def experiment_argv(args: argparse.Namespace, quick_settings: list[str]) -> list[str]:
    """The command line of one experiment: its quick settings (unless --full) and the shared options."""
    argv = [] if args.full else list(quick_settings)
    argv += ["--seed", str(args.seed), "--device", str(args.device), "--cell", args.cell]
    argv += ["--threads", str(args.threads), "--out-dir", str(args.out_dir), "--variant", args.variant]
    argv += [] if args.forget_bias is None else ["--forget-bias", str(args.forget_bias)]
    flags = ("--compile", "--quiet", "--no-figures")
    return argv + [flag for flag in flags if getattr(args, flag.lstrip("-").replace("-", "_"))]


def run_binary_counting(args: argparse.Namespace) -> str:
    settings = binary_counting.parse_args(experiment_argv(args, QUICK_BINARY_COUNTING))
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


def run_sine_wave(args: argparse.Namespace) -> str:
    settings = sine_wave_prediction.parse_args(experiment_argv(args, QUICK_SINE_WAVE))
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
