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

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from lstm_cell import LSTM, LSTMCell

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
    "h": ("hidden state h = o ⊙ tanh(c)", "RdBu_r", (-1, 1)),
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


def trace_batch_first(lstm: LSTM, x: Tensor, layer: int = -1) -> dict[str, Tensor]:
    """`lstm.trace` of one layer for x in the layer's own layout (or one sequence (seq_len,
    input_size)), every quantity laid out (batch, seq_len, hidden_size), without gradients."""
    check_lstm(lstm)
    if not -len(lstm.cells) <= layer < len(lstm.cells):
        raise ValueError(f"layer must name one of the LSTM's {len(lstm.cells)} layer(s), got {layer}")
    with torch.no_grad():
        steps = lstm.trace(x)[layer]
    if x.dim() == 2:
        return {key: value.unsqueeze(0) for key, value in steps.items()}
    return steps if lstm.batch_first else {key: value.transpose(0, 1) for key, value in steps.items()}


def plot_gates(lstm: LSTM, x: Tensor, *, layer: int = -1, title: str | None = None) -> Figure:
    """A figure of i, f, g, o, c and h of every unit of `layer` over the steps of one sequence x
    (seq_len, input_size), one heat map each (units × steps), under a strip of the input.

    Read from `lstm.trace`, so for a variant the panels show the values its step uses (ones for a
    gate it removes). Raises TypeError for anything but the hand-written LSTM, ValueError for x of
    another shape and for a cell the layer calls whole (trace's error)."""
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
    the constant), R² of the fit, and `follows`: the one feature that alone explains the state with
    R² ≥ the threshold (the best such), or None. R² is NaN for a unit whose state never changes."""

    unit: int
    coefficients: dict[str, float]
    r_squared: float
    follows: str | None


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

    A unit "follows" a feature only where that feature alone gives R² ≥ `threshold`: over many
    sequences features that vary together (ones and zeros read so far, on sequences of one length)
    cannot be told apart by one sequence, and a label at low R² says nothing. ValueError for a
    feature of another shape or a state that trace does not record."""
    if state not in ("c", "h"):
        raise ValueError(f"state must be 'c' or 'h', got {state!r}")
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
    targets = states.reshape(-1, states.shape[-1]).double()
    columns = [values.reshape(-1).double() for values in features.values()]

    def fit(chosen: list[Tensor]) -> tuple[Tensor, Tensor]:
        design = torch.stack([*chosen, torch.ones_like(targets[:, 0])], dim=1)
        solution = torch.linalg.lstsq(design, targets).solution
        residual = targets - design @ solution
        # A unit whose state never changes has no variance to explain: its R² is NaN, not 1.
        variance = targets.var(dim=0)
        return solution, torch.where(variance > 0, 1 - residual.var(dim=0) / variance, torch.nan)

    solution, r_squared = fit(columns)
    alone = torch.stack([fit([column])[1] for column in columns])  # (features, units)
    names = [*features, "constant"]
    fits = []
    for unit in range(targets.shape[1]):
        best = int(alone[:, unit].argmax())
        follows = list(features)[best] if bool(alone[best, unit] >= threshold) else None
        coefficients = {name: solution[k, unit].item() for k, name in enumerate(names)}
        fits.append(UnitFit(unit, coefficients, r_squared[unit].item(), follows))
    return fits


def gradient_reach(
    lstm: LSTM, x: Tensor, loss_of: Callable[[Tensor, Tensor], Tensor], *, layer: int = -1
) -> dict[str, np.ndarray]:
    """‖∂L/∂h_t‖ and ‖∂L/∂c_t‖ of `layer` for every step t (arrays of seq_len), the mean over the
    sequences of x, where L = loss_of(h, c) of the last layer's h and c at every step (each laid out
    like the layer's output). The derivatives are those of the very tensors the layer's loop computed
    (its `trace` records), so each counts every path from step t to the loss, the recurrence's too;
    nothing is accumulated in the parameters' .grad. ValueError for a loss that is not a scalar."""
    recorded: list[list[dict[str, Tensor]]] = [[] for _ in check_lstm(lstm).cells]
    x_steps, (h_0, c_0), restore = lstm.prepare(x, None)
    with torch.enable_grad():
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
