"""Look inside any LSTM of this project: its gates and states over a sequence, what its units follow,
how far its gradient reaches back, and what forcing a gate does.

Every function takes the hand-written `lstm_cell.LSTM` (any variant, or a cell of your own that the
layer steps through its `step`) and data, and reads the cell's own values from `LSTM.trace`, the loop
that trains. They are the notebook's analyses, written once so that they point at any cell:

    from inspect_lstm import plot_gates, use_style
    use_style()
    plot_gates(model.lstm, x[0])          # i, f, g, o, c and h of every unit over one sequence

x is laid out as the layer takes it: (batch, seq_len, input_size) for a batch_first LSTM, else
(seq_len, batch, input_size), or one sequence (seq_len, input_size); what a function returns per
sequence and step is laid out (batch, seq_len), whatever the layer's layout.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import inspect
import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor, nn

from lstm_cell import LSTM, VARIANTS, LSTMCell

# The notebook's figures: at most 10 inches wide at 100 dpi, text of 10 points or more, a light grid.
STYLE = {
    "figure.dpi": 100,
    "font.size": 11,
    "axes.titlesize": 11,
    "legend.fontsize": 10,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
# One colour per meaning, in every figure.
COLORS = {
    "train": "tab:blue",
    "valid": "tab:orange",
    "hand-written": "tab:brown",
    "torch.nn.LSTM": "tab:pink",
    "LSTM": "tab:brown",
    "plain RNN": "tab:olive",
    "truth": "black",
    "forecast": "tab:cyan",
    "two-tap recurrence": "tab:olive",
}
# What each traced quantity is, its colour map and range, for plot_gates.
PANELS = {
    "i": ("input gate i: how much to write", "viridis", (0, 1)),
    "f": ("forget gate f: how much memory to keep", "viridis", (0, 1)),
    "g": ("cell candidate g: what could be written", "RdBu_r", (-1, 1)),
    "o": ("output gate o: how much memory to show", "viridis", (0, 1)),
    "c": ("cell state c, each unit divided by its largest |c|", "RdBu_r", (-1, 1)),
    "h": ("hidden state h: what the cell shows (o ⊙ tanh(c) in the textbook cell)", "RdBu_r", (-1, 1)),
}


def use_style() -> None:
    """Apply the notebook's figure settings (STYLE) to matplotlib."""
    plt.rcParams.update(STYLE)


def check_lstm(lstm: object) -> LSTM:
    if not isinstance(lstm, LSTM):
        kind = type(lstm)
        raise TypeError(
            f"expected the hand-written lstm_cell.LSTM, got {kind.__module__}.{kind.__qualname__}"
        )
    return lstm


def check_layer(lstm: LSTM, layer: int) -> int:
    if (
        isinstance(layer, bool)
        or not isinstance(layer, int)
        or not -len(lstm.cells) <= layer < len(lstm.cells)
    ):
        raise ValueError(
            f"layer must be an int naming one of the LSTM's {len(lstm.cells)} layer(s), got {layer!r}"
        )
    return layer


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """The model in evaluation mode while the block runs, then in the mode it had: what is looked at
    is the model itself, not one draw of its dropout between layers."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def trace_batch_first(lstm: LSTM, x: Tensor, layer: int = -1) -> dict[str, Tensor]:
    """`lstm.trace` of one layer for x in the layer's own layout (or one sequence (seq_len,
    input_size)), every quantity laid out (batch, seq_len, hidden_size), without gradients and in
    evaluation mode (no dropout between layers)."""
    check_layer(check_lstm(lstm), layer)
    with torch.no_grad(), evaluating(lstm):
        steps = lstm.trace(x)[layer]
    if x.dim() == 2:
        return {key: value.unsqueeze(0) for key, value in steps.items()}
    return steps if lstm.batch_first else {key: value.transpose(0, 1) for key, value in steps.items()}


def plot_gates(lstm: LSTM, x: Tensor, *, layer: int = -1, title: str | None = None) -> Figure:
    """A figure of i, f, g, o, c and h of every unit of `layer` over the steps of one sequence x
    (seq_len, input_size), one heat map each (units × steps), under a strip of the input.

    Read from `lstm.trace`, so for a variant the panels show the values its step uses (ones for a
    gate it removes). Raises TypeError for anything but the hand-written LSTM, ValueError for x of
    another shape and for a cell whose call runs its own forward or a hook (trace's error)."""
    if not isinstance(x, Tensor) or x.dim() != 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"expected one sequence x of shape (seq_len, input_size), got {shape}")
    steps = {key: value[0].T.numpy() for key, value in trace_batch_first(lstm, x.detach(), layer).items()}
    hidden, seq_len = steps["h"].shape
    figure = Figure(figsize=(10, 2.2 * len(PANELS) + 1.2), layout="constrained")
    axes = figure.subplots(len(PANELS) + 1, 1, sharex=True, height_ratios=(0.5, *[2] * len(PANELS)))
    extent = (0.5, seq_len + 0.5, hidden - 0.5, -0.5)
    axes[0].imshow(
        x.detach().T.numpy(), cmap="Greys", aspect="auto", extent=(0.5, seq_len + 0.5, x.shape[1], 0)
    )
    axes[0].set(yticks=[], title=title or f"input, {seq_len} steps")
    for ax, (name, (label, colormap, limits)) in zip(axes[1:], PANELS.items(), strict=True):
        values = steps[name]
        if name == "c":
            values = values / np.maximum(np.abs(values).max(axis=1, keepdims=True), 1e-12)
        if name in ("g", "h"):  # bounded by 1 in the textbook cell, not in every variant (niaf, noaf)
            bound = max(1.0, float(np.abs(values).max()))
            limits = (-bound, bound)
        image = ax.imshow(values, cmap=colormap, vmin=limits[0], vmax=limits[1], aspect="auto", extent=extent)
        figure.colorbar(image, ax=ax, pad=0.01)
        ax.set(title=label, ylabel="unit")
    for ax in axes:
        ax.grid(False)
    axes[-1].set_xlabel("time step t")
    return figure


def saturation_shares(
    lstm: LSTM, x: Tensor, *, threshold: float = 0.95, layer: int = -1
) -> dict[str, Tensor]:
    """Per step (seq_len,), over the sequences and units of `layer`: the share of gates i, f, o near
    a bound (below 1 − threshold or above threshold) and of units with |tanh c| > threshold, where the
    gradient through the gate or the output activation is small."""
    steps = trace_batch_first(lstm, x, layer)
    shares = {
        gate: ((steps[gate] < 1 - threshold) | (steps[gate] > threshold)).float().mean(dim=(0, 2))
        for gate in ("i", "f", "o")
    }
    shares["tanh c"] = (steps["c"].tanh().abs() > threshold).float().mean(dim=(0, 2))
    return shares


@dataclass
class UnitFit:
    """One unit's least-squares fit of its state on the features: coefficients (one per feature, then
    the constant; the smallest such where features are collinear), R² of the fit, `alone`: R² of each
    feature with a constant by itself, and `follows`: the feature that alone explains the state with
    R² ≥ the threshold when it is the only one, or None; `passing`: every feature that does, best
    first, so that a tie (two features each explaining the state) shows as one and names neither.
    R² is NaN for a unit whose state never changes."""

    unit: int
    coefficients: dict[str, float]
    r_squared: float
    alone: dict[str, float]
    follows: str | None
    passing: list[str]


def unit_fits(
    lstm: LSTM,
    x: Tensor,
    features: dict[str, Tensor],
    *,
    state: str = "c",
    threshold: float = 0.9,
    layer: int = -1,
) -> list[UnitFit]:
    """Fit every unit's `state` ("c" or "h") at every step of every sequence of x to the features
    (each (batch, seq_len), e.g. the running count of ones) plus a constant, in float64.

    A unit "follows" a feature only where that feature alone, and no other, gives R² ≥ `threshold`: over many
    sequences features that vary together (ones and zeros read so far, on sequences of one length)
    cannot be told apart by one sequence, and a label at low R² says nothing. ValueError for a
    feature of another shape or with values that are not finite, a threshold outside [0, 1], or a
    state that trace does not record."""
    if state not in ("c", "h"):
        raise ValueError(f"state must be 'c' or 'h', got {state!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be a number from 0 to 1, got {threshold!r}")
    if not (
        isinstance(features, dict) and features and all(isinstance(v, Tensor) for v in features.values())
    ):
        raise TypeError(
            f"features must be a non-empty dict of tensors (batch, seq_len), got {features!r:.80}"
        )
    states = trace_batch_first(lstm, x, layer)[state]
    shape = states.shape[:2]
    for name, values in features.items():
        if tuple(values.shape) != tuple(shape):
            raise ValueError(f"feature {name!r} must have shape {tuple(shape)}, got {tuple(values.shape)}")
        if not torch.isfinite(values).all():
            raise ValueError(f"feature {name!r} must hold finite numbers only")
    targets = states.reshape(-1, states.shape[-1]).double().cpu()
    columns = [values.reshape(-1).double().cpu() for values in features.values()]

    def fit(chosen: list[Tensor]) -> tuple[Tensor, Tensor]:
        design = torch.stack([*chosen, torch.ones_like(targets[:, 0])], dim=1)
        # The SVD solver: features that add up to another (ones + zeros = steps) leave the design
        # singular, where the default solver's answer need not fit at all.
        solution = torch.linalg.lstsq(design, targets, driver="gelsd").solution
        residual = targets - design @ solution
        # A unit whose state never changes has no variance to explain: its R² is NaN, not 1.
        variance = targets.var(dim=0)
        return solution, torch.where(variance > 0, 1 - residual.var(dim=0) / variance, torch.nan)

    solution, r_squared = fit(columns)
    alone = torch.stack([fit([column])[1] for column in columns])  # (features, units)
    names = [*features, "constant"]
    fits = []
    for unit in range(targets.shape[1]):
        coefficients = {name: solution[k, unit].item() for k, name in enumerate(names)}
        single = {name: alone[k, unit].item() for k, name in enumerate(features)}
        passing = sorted(
            (name for name, value in single.items() if value >= threshold), key=lambda n: -single[n]
        )
        follows = passing[0] if len(passing) == 1 else None
        fits.append(UnitFit(unit, coefficients, r_squared[unit].item(), single, follows, passing))
    return fits


def gradient_reach(
    lstm: LSTM, x: Tensor, loss_of: Callable[[Tensor, Tensor], Tensor], *, layer: int = -1
) -> dict[str, np.ndarray]:
    """‖∂L/∂h_t‖ and ‖∂L/∂c_t‖ of `layer` for every step t (arrays of seq_len), the mean over the
    sequences of x, where L = loss_of(h, c) of the last layer's h and c at every step (each laid out
    like the layer's output). The derivatives are those of the very tensors the layer's loop computed
    (its `trace` records), so each counts every path from step t to the loss, the recurrence's too;
    nothing is accumulated in the parameters' .grad; in evaluation mode. ValueError for a loss that is
    not a scalar and for a layer the LSTM does not have."""
    recorded: list[list[dict[str, Tensor]]] = [[] for _ in check_lstm(lstm).cells]
    check_layer(lstm, layer)
    x_steps, (h_0, c_0), restore = lstm.prepare(x, None)
    with torch.enable_grad(), evaluating(lstm):
        # An input that needs a gradient makes every state need one, frozen parameters or not.
        lstm.run(x_steps.detach().requires_grad_(), h_0, c_0, records=[steps.append for steps in recorded])
        h, c = (restore(torch.stack([steps[key] for steps in recorded[-1]])) for key in ("h", "c"))
        loss = loss_of(h, c)
        if not isinstance(loss, Tensor) or loss.dim() != 0:
            raise ValueError(f"loss_of must return a scalar tensor, got {loss!r:.60}")
        states = [steps[key] for key in ("h", "c") for steps in recorded[layer]]
        gradients = torch.autograd.grad(loss, states, allow_unused=True)
    seq_len = len(recorded[layer])
    norms = [0.0 if g is None else g.norm(dim=-1).mean().item() for g in gradients]
    return {"h": np.array(norms[:seq_len]), "c": np.array(norms[seq_len:])}


GATE_METHODS = {"i": "input_gate", "f": "forget_gate", "g": "candidate", "o": "output_gate"}


def force_gate(model: nn.Module, gate: str, value: float) -> nn.Module:
    """A copy of `model` whose every cell has gate i, f, g or o held at `value` at every step.

    The copy's cells get an instance method in place of the gate's, so the layer runs the edited
    step (and trains it by autograd, as any edited cell); `model` is left as it was. ValueError for
    another gate name and for a cell whose step is its own (it may not call the gate method); TypeError
    for a value that is not a finite number and for a model without the hand-written LSTM (as `.lstm`
    or itself)."""
    if not (isinstance(gate, str) and gate in GATE_METHODS):
        raise ValueError(f"gate must be one of {tuple(GATE_METHODS)}, got {gate!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"value must be a finite number, got {value!r}")
    edited = copy.deepcopy(model)
    lstm = check_lstm(edited.lstm if hasattr(edited, "lstm") else edited)
    for cell in lstm.cells:
        # Only LSTMCell's own step calls the gate methods; a step of one's own may never read them.
        if type(cell).step is not LSTMCell.step or "step" in vars(cell):
            raise ValueError(
                f"force_gate replaces {GATE_METHODS[gate]}, which {type(cell).__name__}'s own step may not"
                " call; force the gate inside that step instead"
            )

    def constant(a: dict[str, Tensor], *states: Tensor) -> Tensor:
        return torch.full_like(next(iter(a.values())), value)

    for cell in lstm.cells:
        setattr(cell, GATE_METHODS[gate], constant)
    return edited


# ---------------------------------------------------------------------------------------------------
# The proof that the hand-written LSTM is torch.nn.LSTM, and the table of its variants


def torch_parity(dtype: torch.dtype = torch.float32, seed: int = 0) -> dict[str, float]:
    """max |hand-written − torch.nn.LSTM| of every output and gradient, the same weights in both.

    A 2-layer `torch.nn.LSTM(3, 4)` drawn with `seed`, the same weights in `LSTM.from_torch`, one
    input (7 steps, batch 5), initial state and upstream gradient for both: the output, h_n and c_n,
    the gradients of the input and initial state, every gate matrix's gradient (PyTorch's row blocks
    in its order i, f, g, o; the one bias against bias_ih, whose gradient equals bias_hh's), and one
    step of `LSTMCell.from_torch(nn.LSTMCell)`. Keys name the quantity; a NaN anywhere counts as an
    infinite difference. Only the CPU's generator is seeded, inside a fork that leaves it as it was.
    TypeError for a dtype that is not floating and a seed that is not an int."""
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # drawing the layers leaves every global generator as it was
        torch.random.default_generator.manual_seed(seed)  # the CPU's only: torch.manual_seed seeds GPUs too
        reference, reference_cell = nn.LSTM(3, 4, num_layers=2, dtype=dtype), nn.LSTMCell(3, 4, dtype=dtype)
        ours, our_cell = LSTM.from_torch(reference), LSTMCell.from_torch(reference_cell)
    x, upstream = (torch.randn(7, 5, size, generator=generator, dtype=dtype) for size in (3, 4))
    h_0, c_0 = torch.randn(2, 2, 5, 4, generator=generator, dtype=dtype)
    results = []
    for model in (reference, ours):
        inputs = [tensor.clone().requires_grad_() for tensor in (x, h_0, c_0)]
        output, (h_n, c_n) = model(inputs[0], (inputs[1], inputs[2]))
        ((output * upstream).sum() + h_n.sum() + c_n.square().sum()).backward()
        results.append((output, h_n, c_n, *(tensor.grad for tensor in inputs)))
    names = ("output", "h_n", "c_n", "dL/dx", "dL/dh_0", "dL/dc_0")
    differences = {name: largest(a - b) for name, a, b in zip(names, *results, strict=True)}
    for layer, cell in enumerate(ours.cells):
        for index, gate in enumerate("ifgo"):
            for kind, theirs in (("W_i", "weight_ih"), ("W_h", "weight_hh"), ("b_", "bias_ih")):
                expected = getattr(reference, f"{theirs}_l{layer}").grad.chunk(4)[index]
                differences[f"layer {layer}: dL/d{kind}{gate}"] = largest(
                    getattr(cell, f"{kind}{gate}").grad - expected
                )
    state = (h_0[0], c_0[0])
    steps = zip(reference_cell(x[0], state), our_cell(x[0], state), strict=True)
    for name, (theirs, mine) in zip(("LSTMCell h'", "LSTMCell c'"), steps, strict=True):
        differences[name] = largest(theirs - mine)
    return differences


def largest(difference: Tensor) -> float:
    """max |difference|, and infinity where any entry is NaN: a NaN must not pass as a small number."""
    value = difference.abs().max().item()
    return value if not math.isnan(value) else math.inf


def plot_parity(parity: dict[torch.dtype, dict[str, float]]) -> Figure:
    """One bar per quantity of `torch_parity` and dtype, on a log scale beside each dtype's machine
    epsilon; an exact 0 is drawn at 1e-18 so that it shows, an infinite one (a NaN) at 1.
    ValueError for an empty `parity`."""
    if not parity:
        raise ValueError("parity must map at least one dtype to its torch_parity differences")
    floor, names = 1e-18, list(next(iter(parity.values())))
    positions = np.arange(len(names))
    figure = Figure(figsize=(9.5, 8.5), layout="constrained")
    ax = figure.subplots()
    for k, (dtype, differences) in enumerate(parity.items()):
        color, offset = f"C{5 + k}", 0.4 * k - 0.2 * (len(parity) - 1)
        values = np.clip([differences[name] for name in names], floor, 1)
        ax.barh(positions + offset, values, height=0.4, color=color, label=f"{dtype}: max |difference|")
        ax.axvline(torch.finfo(dtype).eps, color=color, ls="--", lw=1, label=f"{dtype} machine epsilon")
    ax.set(xscale="log", xlim=(floor, 1), yticks=positions, yticklabels=names)
    ax.set(xlabel="max |hand-written − torch.nn.LSTM| (log scale)", title="Same weights, same numbers")
    ax.invert_yaxis()
    ax.legend(loc="lower right")
    return figure


def variants_table() -> str:
    """A Markdown table of `lstm_cell.VARIANTS`: name, class, the gates with matrices and the first
    paragraph of the class's docstring (for LSTMCell, which those equations are)."""
    rows = ["| variant | class | gates with matrices | what it is |", "|---|---|---|---|"]
    for name, cls in VARIANTS.items():
        text = " ".join(inspect.getdoc(cls).split("\n\n")[0].split()).rstrip(":") + "."
        if cls is LSTMCell:
            text = "NP, no peepholes: the textbook equations, torch.nn.LSTM's cell."
        text = text.replace("..", ".").replace("|", "\\|")
        rows.append(f"| `{name}` | `{cls.__name__}` | {', '.join(cls.GATES)} | {text} |")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------------
# Step through time: one step's gates and states, and an interactive view of them


def bits_tensor(bits: str) -> Tensor:
    """A bit string ("0110", spaces allowed) as one sequence (1, seq_len, 1), float32 on the CPU;
    TypeError for anything but a string, ValueError for a string of anything but 0s and 1s."""
    if not isinstance(bits, str):
        raise TypeError(f"bits must be a string of 0s and 1s, got {type(bits).__name__}")
    text = "".join(bits.split())
    if not text or set(text) - {"0", "1"}:
        raise ValueError(f"bits must be a string of 0s and 1s, got {bits!r:.40}")
    return torch.tensor([float(bit) for bit in text]).reshape(1, -1, 1)


def step_figure(model: nn.Module, bits: str, step: int, *, layer: int = -1) -> Figure:
    """The view at one step (1 ≤ step ≤ len(bits)): every unit's i, f, g, o, c and h at that step, and
    above them the bits with the step marked; for a model with a head (`LastStepRegressor`), its
    running prediction beside the running count of ones.

    `model` is the hand-written LSTM with one input (any layout, dtype and device) or a model holding
    it as `.lstm`; it is shown in evaluation mode. ValueError for bits that are not 0s and 1s, a step
    outside the sequence, an LSTM of another input size; TypeError for bits that are not a string
    and for a model without the hand-written LSTM."""
    lstm = check_lstm(getattr(model, "lstm", model))
    x = bits_tensor(bits)
    if lstm.input_size != 1:
        raise ValueError(f"the view reads one bit a step: an LSTM with input_size 1, got {lstm.input_size}")
    if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= x.shape[1]:
        raise ValueError(f"step must be an int from 1 to {x.shape[1]}, got {step!r}")
    like = next(lstm.parameters())
    layer_x = (
        x.to(like.device, like.dtype) if lstm.batch_first else x.to(like.device, like.dtype).transpose(0, 1)
    )
    traced = trace_batch_first(lstm, layer_x, layer)
    steps = {key: value[0, step - 1].cpu().double().numpy() for key, value in traced.items()}
    figure = Figure(figsize=(10, 6.5), layout="constrained")
    grid = figure.add_gridspec(3, 3, height_ratios=(1.2, 1, 1))
    top = figure.add_subplot(grid[0, :])
    t = np.arange(1, x.shape[1] + 1)
    top.bar(t, x[0, :, 0].numpy(), width=0.9, color="0.85", label="a 1 read (grey)")
    top.axvline(step, color="k", lw=1.5)
    if hasattr(model, "head") and hasattr(model, "states"):
        with torch.no_grad(), evaluating(model):
            predicted = model.head(model.states(layer_x)).squeeze(-1)
        predicted = (predicted[0] if lstm.batch_first else predicted[:, 0]).cpu().double().numpy()
        count = x[0, :, 0].cumsum(0).numpy()
        top.step(t, count, where="mid", color="k", label="count of ones so far")
        top.plot(t[:step], predicted[:step], "o-", ms=3, color=COLORS["LSTM"], label="running prediction")
        top.set_title(f"step {step}: read a {int(x[0, step - 1, 0])}, predicts {predicted[step - 1]:.2f}")
    else:
        top.set_title(f"step {step}: read a {int(x[0, step - 1, 0])}")
    top.set(xlabel="time step t", xlim=(0.4, x.shape[1] + 0.6))
    top.xaxis.set_major_locator(MaxNLocator(integer=True))
    top.legend(loc="upper left", fontsize=9)
    units = np.arange(lstm.hidden_size)
    for k, (name, (label, _, limits)) in enumerate(PANELS.items()):
        ax = figure.add_subplot(grid[1 + k // 3, k % 3])
        values = steps[name]
        ax.bar(units, values, color=[COLORS["LSTM"] if v >= 0 else "tab:blue" for v in values])
        # c is unbounded, and so are g and h in some variants (niaf, noaf): their own scale past 1.
        bound = max(1.0, float(np.abs(values).max()))
        low, high = (-bound, bound) if name in ("c", "g", "h") else limits
        ax.set(title=label.split(":")[0].split(",")[0], ylim=(low - 0.05, high + 0.05), xlabel="unit")
    return figure


def figure_png(figure: Figure) -> str:
    """The figure as a base64 PNG at 100 dpi (at most 1 000 pixels wide for a 10-inch figure)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return base64.b64encode(buffer.getvalue()).decode()


class StepThrough:
    """An interactive `step_figure`: a text box for the bits and a slider over the steps (ipywidgets).

    Displayed in a notebook it is the live widget where a kernel runs it, and a static figure of the
    view at the last step where the notebook is rendered without one (the same output carries both).
    `show(bits, step)` is the update the widgets call: it redraws the view and returns the figure, or
    the error message for bits that are not 0s and 1s."""

    def __init__(self, model: nn.Module, bits: str = "01101001110111010010", *, layer: int = -1) -> None:
        import ipywidgets as widgets

        self.model, self.layer = model, layer
        self.static = step_figure(model, bits, len(bits_tensor(bits)[0]), layer=layer)
        self.text = widgets.Text(value=bits, description="bits", continuous_update=False)
        length = bits_tensor(bits).shape[1]
        self.slider = widgets.IntSlider(value=length, min=1, max=length, description="step")
        self.output = widgets.Output()
        self.text.observe(lambda change: self.show(change["new"], self.slider.value), names="value")
        self.slider.observe(lambda change: self.show(self.text.value, change["new"]), names="value")
        self.widget = widgets.VBox([self.text, self.slider, self.output])
        self.show(bits, length)

    def show(self, bits: str, step: int) -> Figure | str:
        from IPython.display import clear_output, display

        try:
            length = bits_tensor(bits).shape[1]
        except ValueError as error:
            result = str(error)
        else:
            self.slider.max, step = length, min(step, length)
            result = step_figure(self.model, bits, step, layer=self.layer)
        with self.output:
            clear_output(wait=True)
            display(result)
        return result

    def _repr_mimebundle_(self, **kwargs) -> dict:
        bundle = self.widget._repr_mimebundle_(**kwargs) or {}
        return {**bundle, "image/png": figure_png(self.static), "text/plain": "step-through view"}
