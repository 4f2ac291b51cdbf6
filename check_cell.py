"""Check a cell of your own before an hour of training: python check_cell.py SPEC

SPEC names an `lstm_cell.LSTMCell` subclass as the scripts' --variant does: a built-in name
(standard, cifg, …), path/to/file.py:ClassName, or module:ClassName (importable from the working
folder). On a small float64 layer of it (2 layers, input 3, hidden 4, 5 steps, batch 2) it checks

    gradients       torch.autograd.gradcheck of the output, h_n and c_n with respect to the input,
                    the initial state and every parameter: a hand-written gradient that is wrong fails
    stepping        the layer's output, h_n, c_n and every gradient equal those of calling the cell's
                    own forward step by step, in training mode and without gradients

and reports what `LSTM.trace` records, whether the cell is random in training mode (dropout: its
results then vary with the seed), which training path the cell gets at the published sizes and
why (`LSTM.training_path`), and what a training step costs there against the standard cell. Every
evaluation draws the same random numbers (a cell with dropout is checked as one function) and starts
from the cell's buffers as they were (running statistics do not drift between evaluations).

Exit status: 0 every check holds; 1 one fails (the report says which and by how much); 2 a SPEC that
does not load, before anything runs.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from experiment_utils import cell_class_name, first_line, load_cell_class, variant_spec
from lstm_cell import BPTT_LARGEST_STATE, LSTM, LSTMCell, shipped_path

LAYERS, INPUT_SIZE, HIDDEN_SIZE, STEPS, BATCH = 2, 3, 4, 5, 2  # the float64 layer the checks run on
# The published sizes (batch, seq_len, input_size, hidden_size): binary counting, then the sine wave.
PUBLISHED_SIZES = {"binary counting": (16, 20, 1, 20), "sine wave": (1, 40, 1, 50)}
STEPPING_TOLERANCE = 1e-10  # float64: a shipped cell's stacked matmuls round differently
FINITE_DIFFERENCE = 1e-6


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Check an LSTM cell of your own: gradients, agreement with stepping it, trace, training"
        " path and cost.",
        epilog="exit status: 0 every check holds; 1 a check fails; 2 usage error (a SPEC that does not load)",
    )
    parser.add_argument(
        "spec",
        type=variant_spec,
        metavar="SPEC",
        help="the cell: a built-in name, path/to/file.py:ClassName or module:ClassName",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=20,
        help="timed training steps per cell and size, interleaved, the median reported (default: 20)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats: expected a positive whole number, got {args.repeats}")
    return args


class CheckFailed(Exception):
    """A check that does not hold; the message says which and by how much."""


@contextlib.contextmanager
def same_randomness(layer: LSTM, seed: int = 0) -> Iterator[None]:
    """Every evaluation inside draws the random numbers of `seed` and leaves the layer's buffers as they
    were."""
    buffers = {name: buffer.clone() for name, buffer in layer.named_buffers()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, buffer in layer.named_buffers():
                    buffer.copy_(buffers[name])


def small_layer(cell_class: type[LSTMCell]) -> tuple[LSTM, list[str], list[Tensor]]:
    """The float64 layer of the checks, and the names and values of what its function takes: x, h_0, c_0
    and every parameter."""
    torch.manual_seed(0)
    layer = LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=LAYERS, variant=cell_class, dtype=torch.float64)
    x = torch.randn(STEPS, BATCH, INPUT_SIZE, dtype=torch.float64)
    h_0, c_0 = torch.randn(2, LAYERS, BATCH, HIDDEN_SIZE, dtype=torch.float64)
    parameters = dict(layer.named_parameters())
    values = [x, h_0, c_0, *(parameter.detach() for parameter in parameters.values())]
    return layer, ["x", "h_0", "c_0", *parameters], values


class Stepped(nn.Module):
    """The layer's function computed by calling each cell's own forward, `cell(x_t, (h, c))`, step by step."""

    def __init__(self, layer: LSTM) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        inputs, h_n, c_n = x, [], []
        for number, cell in enumerate(self.layer.cells):
            h, c, outputs = state[0][number], state[1][number], []
            for x_t in inputs:
                h, c = cell(x_t, (h, c))
                outputs.append(h)
            inputs = torch.stack(outputs)
            h_n.append(h)
            c_n.append(c)
        return inputs, (torch.stack(h_n), torch.stack(c_n))


def as_function(module: nn.Module, layer: LSTM, names: list[str]) -> Callable[..., tuple[Tensor, ...]]:
    """(x, h_0, c_0, *parameters) ↦ (output, h_n, c_n) of `module` (the layer, or Stepped of it)."""
    prefix = "" if module is layer else "layer."

    def run(x: Tensor, h_0: Tensor, c_0: Tensor, *parameters: Tensor) -> tuple[Tensor, ...]:
        values = {prefix + name: value for name, value in zip(names[3:], parameters, strict=True)}
        with same_randomness(layer):
            output, (h_n, c_n) = torch.func.functional_call(module, values, (x, (h_0, c_0)))
        return output, h_n, c_n

    return run


def check_gradients(function: Callable, names: list[str], values: list[Tensor]) -> str:
    """torch.autograd.gradcheck of `function`; where it fails, the input whose gradient is furthest off."""
    inputs = [value.detach().clone().requires_grad_() for value in values]
    if torch.autograd.gradcheck(function, inputs, raise_exception=False):
        return f"gradcheck holds for output, h_n, c_n w.r.t. x, h_0, c_0 and {len(names) - 3} parameters"
    found = {name: directional(function, inputs, index) for index, name in enumerate(names)}
    name = max(found, key=lambda name: abs(found[name][0] - found[name][1]))
    analytic, numeric = found[name]
    raise CheckFailed(
        f"gradcheck fails; furthest off, along a random direction of {name}: the gradient gives"
        f" {analytic:.6g}, finite differences {numeric:.6g} (off by {abs(analytic - numeric):.3g})"
    )


def directional(function: Callable, inputs: list[Tensor], index: int) -> tuple[float, float]:
    """u · J v for random u and a random v in input `index` alone: by the gradient, and by central
    finite differences."""
    generator = torch.Generator().manual_seed(index)
    direction = torch.randn(inputs[index].shape, generator=generator, dtype=torch.float64)
    outputs = function(*inputs)
    weights = [torch.randn(output.shape, generator=generator, dtype=torch.float64) for output in outputs]
    (gradient,) = torch.autograd.grad(outputs, [inputs[index]], weights, allow_unused=True)
    analytic = 0.0 if gradient is None else float((gradient * direction).sum())
    with torch.no_grad():

        def moved(sign: float) -> list[Tensor]:
            step = sign * FINITE_DIFFERENCE * direction
            return [value + step if number == index else value for number, value in enumerate(inputs)]

        plus, minus = function(*moved(1.0)), function(*moved(-1.0))
    numeric = sum(float(((p - m) * w).sum()) for p, m, w in zip(plus, minus, weights, strict=True))
    return analytic, numeric / (2 * FINITE_DIFFERENCE)


def check_stepping(layer_run: Callable, step_run: Callable, names: list[str], values: list[Tensor]) -> str:
    """The layer and stepping the cell agree on every output and gradient, with and without gradients."""
    differences = {}
    for mode, gradients in (("training", True), ("without gradients", False)):
        results = []
        for run in (layer_run, step_run):
            inputs = [value.detach().clone().requires_grad_(gradients) for value in values]
            with torch.set_grad_enabled(gradients):
                outputs = run(*inputs)
            found = dict(zip(("output", "h_n", "c_n"), outputs, strict=True))
            if gradients:
                weights = [torch.randn(o.shape, generator=torch.Generator().manual_seed(1)) for o in outputs]
                loss = sum((o * w.to(o.dtype)).sum() for o, w in zip(outputs, weights, strict=True))
                grads = torch.autograd.grad(loss, inputs, allow_unused=True)
                found |= {f"∂/∂{n}": g for n, g in zip(names, grads, strict=True) if g is not None}
            results.append(found)
        layer_values, stepped = results
        if layer_values.keys() != stepped.keys():
            missing = sorted(layer_values.keys() ^ stepped.keys())
            raise CheckFailed(f"stepping: {', '.join(missing)} come from only one of the layer and stepping")
        for key, value in layer_values.items():
            differences[f"{key} ({mode})"] = float((value - stepped[key]).detach().abs().max())
    worst = max(differences, key=differences.get)
    if not differences[worst] <= STEPPING_TOLERANCE:
        raise CheckFailed(
            f"the layer differs from stepping the cell's forward: {worst} by {differences[worst]:.3g}"
            f" (tolerance {STEPPING_TOLERANCE:g})"
        )
    return f"the layer equals stepping the cell's forward to {differences[worst]:.1g} (outputs and gradients)"


def describe_trace(layer: LSTM, x: Tensor) -> str:
    try:
        records = layer.trace(x)
    except Exception as failure:  # a cell with its own forward or a hook, or whose step names other keys
        return f"trace: not available ({first_line(failure)})"
    shapes = {key: tuple(value.shape) for key, value in records[0].items()}
    keys = ", ".join(shapes)
    same = len(set(shapes.values())) == 1
    shape = next(iter(shapes.values())) if same else shapes
    return f"trace records {keys} for every layer, each {shape} (seq_len, batch, hidden_size)"


def describe_randomness(layer: LSTM, x: Tensor) -> str:
    """Whether the cell is random in training mode (dropout, noise): its output under two seeds."""
    with torch.no_grad():
        outputs = []
        for seed in (1, 2):
            with same_randomness(layer, seed):
                outputs.append(layer(x)[0])
    difference = float((outputs[0] - outputs[1]).abs().max())
    if difference == 0:
        return "deterministic in training mode: two random seeds give the same output"
    return (
        f"random in training mode: two random seeds' outputs differ by up to {difference:.3g}. The checks"
        " above give every evaluation the same draw, so they check the cell for one draw; its results"
        " vary with the seed: compare it over several (compare_variants.py --seeds N)"
    )


def path_reason(cell: LSTMCell, path: str) -> str:
    """Why `path`: from the same test LSTM.path_of makes (`lstm_cell.shipped_path`)."""
    shipped = shipped_path(cell)
    if shipped is None:
        return (
            "a class lstm_cell.py does not ship (or changed since), or an instance with something of its own:"
            " the layer calls the cell at every step, and autograd differentiates it"
        )
    if path != shipped:
        return (
            f"as shipped, but a state of batch × hidden above {BPTT_LARGEST_STATE[shipped]}, where autograd"
            " is as fast (benchmarks/README.md)"
        )
    if shipped == "bptt":
        return "lstm_cell.LSTMCell as shipped: lstm_bptt's backward with the textbook derivatives"
    return "a variant as shipped: lstm_bptt's backward, each step's local derivatives by autograd"


def training_paths(cell_class: type[LSTMCell]) -> list[str]:
    lines = []
    for task, (batch, _, input_size, hidden) in PUBLISHED_SIZES.items():
        layer = LSTM(input_size, hidden, variant=cell_class)
        path = layer.training_path(batch)
        lines.append(f"training path at {task}'s size: {path} ({path_reason(layer.cells[0], path)})")
    return lines


def step_seconds(layer: LSTM, x: Tensor) -> float:
    start = time.perf_counter()
    output, (_, c_n) = layer(x)
    (output.sum() + c_n.sum()).backward()
    return time.perf_counter() - start


def costs(cell_class: type[LSTMCell], repeats: int) -> list[str]:
    """A training step (forward and backward) at each published size, against the standard cell's."""
    lines = []
    for task, (batch, steps, input_size, hidden) in PUBLISHED_SIZES.items():
        torch.manual_seed(0)
        layers = {"yours": LSTM(input_size, hidden, variant=cell_class), "standard": LSTM(input_size, hidden)}
        x = torch.randn(steps, batch, input_size)
        times: dict[str, list[float]] = {name: [] for name in layers}
        for repeat in range(repeats + 2):  # interleaved; the first two warm up
            for name, layer in layers.items():
                seconds = step_seconds(layer, x)
                if repeat >= 2:
                    times[name].append(seconds)
        yours, standard = (statistics.median(times[name]) for name in layers)
        lines.append(
            f"a training step at {task}'s size {(batch, steps, input_size, hidden)}: {1e3 * yours:.2f} ms,"
            f" {yours / standard:.1f}× the standard cell's {1e3 * standard:.2f} ms"
        )
    return lines


def check(spec: str, repeats: int) -> list[tuple[str, str]]:
    """Every check and report line for the cell `spec`: (status, line), status "ok", "FAIL" or "info"."""
    cell_class = load_cell_class(spec)
    report = [("info", f"{spec}: {cell_class_name(cell_class)}")]
    try:
        layer, names, values = small_layer(cell_class)
        with same_randomness(layer), torch.no_grad():
            output, (h_n, c_n) = layer(values[0])
    except (Exception, SystemExit) as failure:
        return [*report, ("FAIL", f"cannot build and run a layer of it: {first_line(failure)}")]
    dtypes = [str(value.dtype).removeprefix("torch.") for value in (output, h_n, c_n)]
    if dtypes != ["float64"] * 3:
        return [
            *report,
            (
                "FAIL",
                f"a float64 layer of it returns output, h_n, c_n as {', '.join(dtypes)}: the checks need a"
                " cell that computes in its parameters' dtype (create what it adds with the cell's dtype)",
            ),
        ]
    count = sum(value.numel() for value in values[3:])
    report.append(
        ("info", f"a float64 layer of {LAYERS} cells, {count} parameters in {len(values) - 3} tensors")
    )
    layer_run, step_run = as_function(layer, layer, names), as_function(Stepped(layer), layer, names)
    for name, run_check in (
        ("gradients", lambda: check_gradients(layer_run, names, values)),
        ("stepping", lambda: check_stepping(layer_run, step_run, names, values)),
    ):
        report.append(checked(name, run_check))
    report.append(("info", describe_trace(layer, values[0])))
    report.append(checked("randomness", lambda: describe_randomness(layer, values[0]), "info"))
    # At the published sizes, where a cell that only works small fails.
    report.append(checked("training paths", lambda: "\n      ".join(training_paths(cell_class)), "info"))
    if all(status != "FAIL" for status, _ in report):
        report.append(checked("cost", lambda: "\n      ".join(costs(cell_class, repeats)), "info"))
    return report


def checked(name: str, run_check: Callable[[], str], status: str = "ok") -> tuple[str, str]:
    """(status, the line run_check returns), or ("FAIL", why) where the check fails or the cell raises."""
    try:
        return status, run_check()
    except CheckFailed as failure:
        return "FAIL", str(failure)
    except (Exception, SystemExit) as failure:  # the cell itself raised (or exited): that is the finding
        return "FAIL", f"{name}: the cell raised {first_line(failure)}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)  # as the scripts train by default, and steady timings
    report = check(args.spec, args.repeats)
    for status, line in report:
        print(f"{status:>4}  {line}")
    failed = [line for status, line in report if status == "FAIL"]
    print(f"\n{len(failed)} check(s) failed." if failed else "\nEvery check holds.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
