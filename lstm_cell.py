"""An LSTM written by hand: one cell whose parameters are the gate matrices of the textbook equations.

For an input x, the previous hidden state h and the previous cell state c, one time step is

    i  = σ(W_ii x + W_hi h + b_i)        input gate:      how much of the candidate to write
    f  = σ(W_if x + W_hf h + b_f)        forget gate:     how much of the old cell state to keep
    g  = tanh(W_ig x + W_hg h + b_g)     cell candidate:  what could be written
    o  = σ(W_io x + W_ho h + b_o)        output gate:     how much of the cell state to show
    c' = f ⊙ c + i ⊙ g
    h' = o ⊙ tanh(c')

This is `torch.nn.LSTM`'s cell, the one Greff et al. ("LSTM: A Search Space Odyssey", IEEE TNNLS 2017)
call NP, "no peepholes". In reading order: `LSTMCell`, these lines one gate a line; the variants Greff et
al. compared (`VARIANTS`); `LSTM`, a stack of cells called like `torch.nn.LSTM`, whose one loop over time
(`run_layer`) calls each cell at every step; `shipped_path`, which knows from a cell's class, source and
instance, never by running it, whether lstm_bptt's hand-written backward pass is the cell's own; then the
conversions to and from `torch.nn.LSTM`, and the input checks.
"""

from __future__ import annotations

import contextvars
import hashlib
import math
import operator
import re
import types
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

import lstm_bptt

State = tuple[Tensor, Tensor]
Steps = dict[str, Tensor]  # one step's i, f, g, o, c and h (and "a", the pre-activations, in lstm_bptt)
STEP_RECORD = contextvars.ContextVar("STEP_RECORD", default=None)  # LSTM.trace's, while it runs


class LSTMCell(nn.Module):
    """One LSTM time step, `(h', c') = cell(x, (h, c))`, with the equations of this module's docstring.

    Shapes: x is (batch, input_size); h, c, h' and c' are (batch, hidden_size); a missing state starts
    from zeros. Parameters, for each gate k of `GATES`: W_ik (hidden_size, input_size), W_hk
    (hidden_size, hidden_size) and, unless bias=False, b_k (hidden_size,): one bias per gate where
    PyTorch keeps two (b_ih + b_hh). `forget_bias`: every b_f's initial value (None keeps PyTorch's
    uniform initialization; Jozefowicz, Zaremba & Sutskever, ICML 2015, recommend 1.0).

    A cell of your own is a subclass (or an instance with a method replaced). It may override `step`,
    one line of it (`input_gate`, `forget_gate`, `candidate`, `output_gate`, `output_activation`),
    `preactivations` (every gate's a_k = W_ik x + W_hk h + b_k), `affine` (one of them) or `forward`;
    `GATES` names its gates (a gate "u" gets W_iu, W_hu, b_u). Whatever it overrides, the layer calls
    `cell(x_t, (h, c))` at every step, hooks included, and autograd differentiates what ran ("autograd"
    in `LSTM.training_path()`). Only this class and the variants, exactly as this file ships them and
    with nothing added to the instance (`shipped_path`), train by lstm_bptt's hand-written backward pass
    instead: the same step forward, then the textbook derivatives ("bptt") or, for a variant, its own
    step's, taken by autograd ("bptt, local derivatives by autograd").

    `reset_parameters` initializes the gate matrices and biases only. A subclass that adds parameters
    makes them like `first_weight(self)` (its dtype and device) and initializes them in its own
    `reset_parameters`, called at the end of its `__init__` (as `PeepholeLSTMCell` does).
    Raises TypeError/ValueError for sizes that are not positive ints and for input or state of the
    wrong shape, dtype or device, naming what was expected and what came.
    """

    GATES = ("i", "f", "g", "o")  # the gates with weight matrices, in torch.nn.LSTM's stacking order

    def __init__(self, input_size, hidden_size, bias=True, *, forget_bias=None, device=None, dtype=None):
        super().__init__()
        self.input_size = check_size("input_size", input_size)
        self.hidden_size = check_size("hidden_size", hidden_size)
        self.bias = check_type("bias", bias, bool)
        self.forget_bias = check_forget_bias(forget_bias, bias, dtype)
        shapes = {"W_i": (hidden_size, input_size), "W_h": (hidden_size, hidden_size), "b_": (hidden_size,)}
        for kind, name in gate_names(self):
            setattr(self, name, nn.Parameter(torch.empty(shapes[kind], device=device, dtype=dtype)))
        LSTMCell.reset_parameters(self)  # this class's: a subclass's own parameters do not exist yet

    def forward(self, x: Tensor, state: State | None = None) -> State:
        check_input(x, f"(batch, input_size={self.input_size})", rank=2, like=first_weight(self), name="x")
        h, c = check_state(state, (x.shape[0], self.hidden_size), like=x)
        steps = self.step(self.preactivations(x, h), c)
        # LSTM.trace is reading the step (never under torch.compile, which cannot trace a ContextVar)
        if not torch.compiler.is_compiling() and (record := STEP_RECORD.get()) is not None:
            record.append((self, dict(steps), {key: value._version for key, value in steps.items()}))
        return steps["h"], steps["c"]

    def preactivations(self, x: Tensor, h: Tensor) -> dict[str, Tensor]:
        """a_k = W_ik x + W_hk h + b_k for each gate k in GATES, each (batch, hidden_size)."""
        return {gate: self.affine(gate, x, h) for gate in self.GATES}

    def affine(self, gate: str, x: Tensor, h: Tensor) -> Tensor:
        a = x @ getattr(self, f"W_i{gate}").T + h @ getattr(self, f"W_h{gate}").T
        return a + getattr(self, f"b_{gate}") if self.bias else a

    def step(self, a: dict[str, Tensor], c: Tensor) -> Steps:
        """The equations, from the gates' pre-activations `a` and the previous cell state c.

        Returns every quantity of the step, {"i", "f", "g", "o", "c", "h"}, each (batch, hidden_size);
        "c" and "h" are c' and h'. `LSTM.trace` records them.
        """
        i = self.input_gate(a, c)
        f = self.forget_gate(a, c, i)
        g = self.candidate(a)
        c_next = f * c + i * g
        o = self.output_gate(a, c_next)
        h_next = o * self.output_activation(c_next)
        return {"i": i, "f": f, "g": g, "o": o, "c": c_next, "h": h_next}

    # One line of the equations each, so that a variant replaces exactly the line it changes.
    def input_gate(self, a: dict[str, Tensor], c: Tensor) -> Tensor:
        return torch.sigmoid(a["i"])

    def forget_gate(self, a: dict[str, Tensor], c: Tensor, i: Tensor) -> Tensor:
        return torch.sigmoid(a["f"])

    def candidate(self, a: dict[str, Tensor]) -> Tensor:
        return torch.tanh(a["g"])

    def output_gate(self, a: dict[str, Tensor], c_next: Tensor) -> Tensor:
        return torch.sigmoid(a["o"])

    def output_activation(self, c_next: Tensor) -> Tensor:
        return torch.tanh(c_next)

    def reset_parameters(self) -> None:
        """PyTorch's initialization, uniform in ±1/√hidden_size: the gate matrices as nn.LSTMCell draws
        them, and each gate's one bias as one such draw (nn.LSTMCell adds two, b_ih + b_hh, so its
        sum spreads √2 wider); then forget_bias if given."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for parameter in gate_parameters(self):
            nn.init.uniform_(parameter, -bound, bound)
        if self.forget_bias is not None:
            with torch.no_grad():
                self.set_forget_bias(self.forget_bias)

    def set_forget_bias(self, value: float) -> None:
        self.b_f.fill_(value)

    @classmethod
    def from_torch(cls, cell: nn.LSTMCell) -> LSTMCell:
        """A cell computing exactly what `cell` computes, on its device, in its dtype and training mode,
        training what it trains. TypeError for anything but an nn.LSTMCell, ValueError for a subclass."""
        return cell_from_torch(cls, cell)

    def to_torch(self) -> nn.LSTMCell:
        """A `torch.nn.LSTMCell` computing exactly what this cell computes, in its training mode and
        training what it trains. ValueError for a cell that is not this class as shipped (a variant, an
        edited cell), and where only some of the gates stacked in one of nn.LSTMCell's matrices train."""
        return cell_to_torch(self)

    def extra_repr(self) -> str:
        settings = f"input_size={self.input_size}, hidden_size={self.hidden_size}, bias={self.bias}"
        return settings + ("" if self.forget_bias is None else f", forget_bias={self.forget_bias}")


# ---------------------------------------------------------------------------------------------------
# The variants of Greff et al. (2017), Table I, each changing one thing relative to LSTMCell ("NP").


class PeepholeLSTMCell(LSTMCell):
    """Peephole connections (Gers & Schmidhuber, IJCNN 2000; Greff et al. 2017's "vanilla" LSTM):

        i  = σ(W_ii x + W_hi h + p_i ⊙ c + b_i)
        f  = σ(W_if x + W_hf h + p_f ⊙ c + b_f)
        o  = σ(W_io x + W_ho h + p_o ⊙ c' + b_o)      the output gate looks at the new cell state

    p_i, p_f and p_o are (hidden_size,) parameters; everything else is LSTMCell's.
    """

    def __init__(self, input_size, hidden_size, bias=True, **options):
        super().__init__(input_size, hidden_size, bias, **options)
        self.p_i, self.p_f, self.p_o = (
            nn.Parameter(first_weight(self).new_empty(hidden_size)) for _ in "ifo"
        )
        self.reset_parameters()  # again, now that the peepholes exist

    def reset_parameters(self) -> None:
        super().reset_parameters()
        bound = 1.0 / math.sqrt(self.hidden_size)
        for peephole in (self.p_i, self.p_f, self.p_o):
            nn.init.uniform_(peephole, -bound, bound)

    # a_k + p_k ⊙ c in one call (torch.addcmul): one small call less per gate and step.
    def input_gate(self, a, c):
        return torch.sigmoid(torch.addcmul(a["i"], self.p_i, c))

    def forget_gate(self, a, c, i):
        return torch.sigmoid(torch.addcmul(a["f"], self.p_f, c))

    def output_gate(self, a, c_next):
        return torch.sigmoid(torch.addcmul(a["o"], self.p_o, c_next))


class NoInputGateLSTMCell(LSTMCell):
    """NIG, no input gate: i ≡ 1, so c' = f ⊙ c + g. No W_ii, W_hi, b_i (Greff et al. 2017)."""

    GATES = ("f", "g", "o")

    def input_gate(self, a, c):
        return torch.ones_like(c)


class NoForgetGateLSTMCell(LSTMCell):
    """NFG, no forget gate: f ≡ 1, so c' = c + i ⊙ g, the original LSTM of Hochreiter & Schmidhuber
    (1997). No W_if, W_hf, b_f; a forget_bias is refused (Greff et al. 2017)."""

    GATES = ("i", "g", "o")

    def forget_gate(self, a, c, i):
        return torch.ones_like(c)

    def set_forget_bias(self, value: float) -> None:
        raise ValueError("forget_bias: the nfg variant has no forget gate; leave forget_bias unset")


class NoOutputGateLSTMCell(LSTMCell):
    """NOG, no output gate: o ≡ 1, so h' = tanh(c'). No W_io, W_ho, b_o (Greff et al. 2017)."""

    GATES = ("i", "f", "g")

    def output_gate(self, a, c_next):
        return torch.ones_like(c_next)


class NoInputActivationLSTMCell(LSTMCell):
    """NIAF, no input activation function: g = W_ig x + W_hg h + b_g, without the tanh (Greff et al. 2017)."""

    def candidate(self, a):
        return a["g"]


class NoOutputActivationLSTMCell(LSTMCell):
    """NOAF, no output activation function: h' = o ⊙ c', without the tanh, so h is unbounded
    (Greff et al. 2017)."""

    def output_activation(self, c_next):
        return c_next


class CoupledGateLSTMCell(LSTMCell):
    """CIFG, coupled input and forget gate: f = 1 − i, as in the GRU (Cho et al. 2014; Greff et al.
    2017). No W_if, W_hf, b_f; a forget_bias B sets b_i = −B, so that f = 1 − σ(b_i) starts at σ(B)."""

    GATES = ("i", "g", "o")

    def forget_gate(self, a, c, i):
        return 1 - i

    def set_forget_bias(self, value: float) -> None:
        self.b_i.fill_(-value)


VARIANTS: dict[str, type[LSTMCell]] = {
    "standard": LSTMCell,
    "peephole": PeepholeLSTMCell,
    "nig": NoInputGateLSTMCell,
    "nfg": NoForgetGateLSTMCell,
    "nog": NoOutputGateLSTMCell,
    "niaf": NoInputActivationLSTMCell,
    "noaf": NoOutputActivationLSTMCell,
    "cifg": CoupledGateLSTMCell,
}


# ---------------------------------------------------------------------------------------------------
# The layer


class LSTM(nn.Module):
    """A stack of cells run over a sequence, with torch.nn.LSTM's signature, call and return shapes.

    `output, (h_n, c_n) = lstm(x, (h_0, c_0))` (the state may also be given as `hx=`), with x of shape
    (seq_len, batch, input_size), or (batch, seq_len, input_size) when batch_first, or
    (seq_len, input_size) for one unbatched sequence with a state of (num_layers, hidden_size).
    output holds the last layer's h at every step; h_n and c_n hold every layer's last state,
    (num_layers, batch, hidden_size). A missing state starts from zeros. `dropout` applies to every
    layer's output but the last, in training mode, as in torch.nn.LSTM.

    `variant` names the cell class (a key of `VARIANTS`, or an `LSTMCell` subclass); `forget_bias` is
    passed to every cell. Every path runs the cell's own code forward (`run_layer`); `backward` chooses
    how gradients flow back through time, and `training_path()` names the path a training step takes:

    - "auto" (default): for LSTMCell and the variants as shipped (`shipped_path`), lstm_bptt's
      backpropagation through time while a step's state (batch × hidden_size) is at most
      BPTT_LARGEST_STATE (first-order only); beyond, where the arithmetic rather than the number of
      calls takes the time (benchmarks/README.md), and for every other cell, autograd;
    - "bptt": the textbook derivatives at every size, or a clear error for any other cell;
    - "autograd": PyTorch differentiates the cell's own calls (gradients of gradients included).

    Under `torch.compile`, `torch.export`, `torch.jit.trace`, `torch.func` transforms, forward-mode AD
    and autocast, every cell is called at every step and autograd differentiates it.
    Raises ValueError for `bidirectional=True` and `proj_size > 0`, which it does not implement.
    """

    BACKWARDS = ("auto", "bptt", "autograd")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        *,
        variant: str | type[LSTMCell] = "standard",
        forget_bias: float | None = None,
        backward: str = "auto",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.input_size = check_size("input_size", input_size)
        self.hidden_size = check_size("hidden_size", hidden_size)
        self.num_layers = check_size("num_layers", num_layers)
        self.bias = check_type("bias", bias, bool)
        self.batch_first = check_type("batch_first", batch_first, bool)
        self.dropout = check_dropout(dropout, num_layers)
        check_unsupported(bidirectional, proj_size)
        self.cell_class = cell_class_of(variant)
        self.variant = next((name for name, cls in VARIANTS.items() if cls is self.cell_class), None)
        self.backward = backward  # checked by __setattr__, as when it is set later
        options = {"forget_bias": forget_bias, "device": device, "dtype": dtype}
        self.cells = nn.ModuleList(
            self.cell_class(input_size if layer == 0 else hidden_size, hidden_size, bias, **options)
            for layer in range(num_layers)
        )

    def __setattr__(self, name: str, value) -> None:
        if name == "backward" and value not in self.BACKWARDS:  # a misspelt path must not train silently
            raise ValueError(f"backward must be one of {self.BACKWARDS}, got {value!r}")
        super().__setattr__(name, value)

    def forward(self, x: Tensor, hx: State | None = None) -> tuple[Tensor, State]:
        x, (h_0, c_0), restore = self.prepare(x, hx)
        output, h_n, c_n = self.run(x, h_0, c_0)
        return restore(output), (restore(h_n, state=True), restore(c_n, state=True))

    def trace(self, x: Tensor, state: State | None = None) -> list[dict[str, Tensor]]:
        """Every step's i, f, g, o, c and h, one dict per layer, each laid out like `output`.

        Recorded from the cells' own `step` in the layer's loop, differentiable by autograd: a shipped
        cell's stepped on stacked matrices as it trains (equal to its training path to the bit), any
        other cell's as each call `cell(x_t, (h, c))` ran it. For a gate a variant removes, the value the
        variant uses (ones, or 1 − i for CIFG's f). Raises ValueError for a cell whose call does not
        return what one call of its step returned (its own forward or a hook changed it), whose gates
        the record would not explain.
        """
        x, (h_0, c_0), restore = self.prepare(x, state)
        layers: list[list[Steps]] = [[] for _ in self.cells]
        self.run(x, h_0, c_0, records=[layer.append for layer in layers])
        return [{key: restore(torch.stack([s[key] for s in steps])) for key in "ifgoch"} for steps in layers]

    def run(self, x: Tensor, h_0: Tensor, c_0: Tensor, records: list[Callable] | None = None):
        """Every layer in turn: (the last layer's output, h_n, c_n), x laid out (seq_len, batch, input)."""
        layer_input, h_n, c_n = x, [], []
        for layer, cell in enumerate(self.cells):
            if layer > 0 and self.dropout > 0:
                layer_input = nn.functional.dropout(layer_input, self.dropout, self.training)
            needs_grad = torch.is_grad_enabled() and any(
                tensor.requires_grad for tensor in (layer_input, h_0, c_0, *cell.parameters())
            )
            plain = all(type(tensor) in (Tensor, nn.Parameter) for tensor in (layer_input, h_0, c_0))
            if records:  # trace: a shipped cell stepped on stacked matrices, any other called, by autograd
                shipped = plain and special_mode() is None and shipped_path(cell) is not None
                path = TRACED_BY_AUTOGRAD if shipped else "autograd"
            else:
                path = self.path_of(cell, needs_grad, layer_input.shape[1], plain)
            record = records[layer] if records else None
            layer_input, (h, c) = run_layer(cell, layer_input, h_0[layer], c_0[layer], path, record)
            h_n.append(h)
            c_n.append(c)
        # Stacked, so h_n and c_n are tensors of their own, never views of output (as in nn.LSTM).
        return layer_input, torch.stack(h_n), torch.stack(c_n)

    def training_path(self, batch_size: int = 1) -> str:
        """How a training step of `batch_size` sequences runs in eager mode, one of `PATHS` (where the
        layers differ, each layer's), decided as `forward` decides it, without running a cell."""
        paths = [self.path_of(cell, needs_grad=True, batch_size=batch_size) for cell in self.cells]
        return paths[0] if len(set(paths)) == 1 else "; ".join(f"layer {n}: {p}" for n, p in enumerate(paths))

    def path_of(self, cell: LSTMCell, needs_grad: bool, batch_size: int, plain_inputs: bool = True) -> str:
        """One of PATHS, or WITHOUT_GRADIENTS for a shipped cell when nothing needs a gradient."""
        special = special_mode() if plain_inputs else "a tensor subclass as input or state"
        shipped = None if special else shipped_path(cell)
        if needs_grad and self.backward == "bptt" and shipped != "bptt":
            if special:
                raise RuntimeError(
                    f"LSTM(backward='bptt') cannot run under {special}: its hand-derived backward pass "
                    "works on plain tensors in eager mode only; use backward='auto' or 'autograd'"
                )
            raise ValueError(
                f"LSTM(backward='bptt') differentiates the textbook equations by hand, but "
                f"{type(cell).__name__} is not lstm_cell.LSTMCell as shipped (a variant, a subclass, an "
                "edited or hooked cell); use backward='auto' or 'autograd', which differentiate its own step"
            )
        if shipped is None:
            return "autograd"
        if not needs_grad:
            return WITHOUT_GRADIENTS
        large = batch_size * cell.hidden_size > BPTT_LARGEST_STATE[shipped] and self.backward == "auto"
        return "autograd" if large or self.backward == "autograd" else shipped

    def prepare(self, x: Tensor, hx: State | None) -> tuple[Tensor, State, Callable]:
        """x as (seq_len, batch, input_size), the checked state, and the inverse of that layout."""
        unbatched = isinstance(x, Tensor) and x.dim() == 2
        layout = "seq_len" if unbatched else "batch, seq_len" if self.batch_first else "seq_len, batch"
        like, rank = first_weight(self.cells[0]), 2 if unbatched else 3
        check_input(x, f"({layout}, input_size={self.input_size})", rank=rank, like=like, name="x")
        shape, layers, hidden = tuple(x.shape), self.num_layers, self.hidden_size
        if unbatched:
            for name, tensor in zip(("h_0", "c_0"), () if hx is None else check_pair(hx), strict=False):
                if isinstance(tensor, Tensor) and tensor.dim() != 2:
                    raise ValueError(
                        f"for unbatched 2-D input x of shape {shape}, {name} must also be 2-D, "
                        f"(num_layers={layers}, hidden_size={hidden}); got {tuple(tensor.shape)}"
                    )
            if hx is not None:
                hx = tuple(tensor.unsqueeze(1) for tensor in check_state(hx, (layers, hidden), like=x))
            x = x.unsqueeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"x must hold a non-empty sequence and batch, got shape {shape}")

        def restore(tensor: Tensor, state: bool = False) -> Tensor:
            if unbatched:
                return tensor.squeeze(1)
            return tensor.transpose(0, 1) if self.batch_first and not state else tensor

        return x, check_state(hx, (layers, x.shape[1], hidden), like=x), restore

    @classmethod
    def from_torch(cls, lstm: nn.LSTM) -> LSTM:
        """An LSTM computing exactly what `lstm` computes, on its device, in its dtype and training mode,
        training what it trains (one bias per gate, where either of PyTorch's two trains).
        Raises TypeError for anything but a torch.nn.LSTM, ValueError for bidirectional or proj_size > 0."""
        return lstm_from_torch(cls, lstm)

    def to_torch(self) -> nn.LSTM:
        """A `torch.nn.LSTM` computing exactly what this LSTM computes, in its training mode, training
        what it trains. ValueError where the cells are not LSTMCell as shipped (a variant, an edited
        cell), or where only some of the gates stacked in one of nn.LSTM's matrices train."""
        return lstm_to_torch(self)

    def extra_repr(self) -> str:
        settings = [f"variant={self.variant or self.cell_class.__name__!r}", f"backward={self.backward!r}"]
        settings += [f"bias={self.bias}", f"batch_first={self.batch_first}", f"dropout={self.dropout}"]
        return ", ".join(settings)


# ---------------------------------------------------------------------------------------------------
# The loop over time

PATHS = ("bptt", "bptt, local derivatives by autograd", "autograd")
WITHOUT_GRADIENTS = "shipped cell, without gradients"
TRACED_BY_AUTOGRAD = "shipped cell, traced, by autograd"
PROJECTION_STEPS = 256  # input projections computed this many steps at a time, to bound their memory
# The largest batch × hidden_size at which "auto" backpropagates by hand: beyond, the arithmetic, not the
# number of calls, takes the time, and autograd is as fast or faster (benchmarks/README.md).
BPTT_LARGEST_STATE = {"bptt": 8192, "bptt, local derivatives by autograd": 8192}


def run_layer(cell: LSTMCell, x: Tensor, h: Tensor, c: Tensor, path="autograd", record=None):
    """One layer over x (seq_len, batch, input_size) from h, c (batch, hidden): (every step's h, (h, c)).

    "autograd" calls the cell, `cell(x_t, (h, c))`, at every step; with `record` (`trace`), which is
    handed every step's dict, as its step returned it at each call (`traced_steps`); a shipped cell's
    trace (TRACED_BY_AUTOGRAD) steps it on stacked matrices, by autograd. A shipped cell
    without gradients (WITHOUT_GRADIENTS) runs its step on pre-activations from stacked matrices
    (`stacked_steps`), as it does inside lstm_bptt, which differentiates that loop ("bptt" paths).
    """
    if path.startswith("bptt"):
        return backpropagated_by_hand(cell, x, h, c, path)
    if path == WITHOUT_GRADIENTS:
        return over_time(stacked_steps(cell, x), len(x), h, c, record, hs=x.new_empty(len(x), *h.shape))
    if path == TRACED_BY_AUTOGRAD:
        return over_time(stacked_steps(cell, x, differentiable=True), len(x), h, c, record)
    if record is None:
        return over_time(lambda t, h, c: dict(zip("hc", cell(x[t], (h, c)), strict=True)), len(x), h, c)
    return over_time(traced_steps(cell, x), len(x), h, c, record)


def over_time(
    step: Callable[[int, Tensor, Tensor], Steps], steps: int, h: Tensor, c: Tensor, record=None, hs=None
):
    """The loop over time: `step(t, h, c)` for t = 0 … steps − 1, each from the last one's h and c.
    `hs`: where every step's h goes, where no graph is kept (a long sequence never holds its outputs
    twice, every step's and stacked); otherwise they are stacked at the end."""
    stacked = hs is None
    hs = [] if stacked else hs
    for t in range(steps):
        out = step(t, h, c)
        h, c = out["h"], out["c"]
        if stacked:
            hs.append(h)
        else:
            hs[t] = h
        if record is not None:
            record(out)
    return (torch.stack(hs) if stacked else hs), (h, c)


def stacked_steps(
    cell: LSTMCell, x: Tensor, differentiable: bool = False
) -> Callable[[int, Tensor, Tensor], Steps]:
    """Step t of a shipped cell, whose a_t = (W_x x_t + b) + W_h h_{t-1} the layer knows: `cell.step` on
    a_t from stacked matrices, the input's share, which needs no recurrence, computed PROJECTION_STEPS
    steps at a time; the step's dict with "a", a_t, added. `differentiable`: for autograd (trace), a_t
    computed out of place from matrices stacked by StackParameters."""
    if differentiable:
        W_x, W_h, b = StackParameters.apply(len(cell.GATES), *gate_parameters(cell))
    else:
        W_x, W_h, b = lstm_bptt.stack_weights(gate_parameters(cell), len(cell.GATES))
    W_h_T, chunk = W_h.T, {}

    def step(t: int, h: Tensor, c: Tensor) -> Steps:
        if t % PROJECTION_STEPS == 0:  # a_t starts as W_x x_t + b, and each gate's a_k is a view of it
            a = lstm_bptt.input_projections(x[t : t + PROJECTION_STEPS], W_x, b)
            chunk["a"], chunk["gates"] = a.unbind(0), None if differentiable else gate_views(cell, a)
        if differentiable:
            a = torch.addmm(chunk["a"][t % PROJECTION_STEPS], h, W_h_T)
            return {**cell.step(gate_inputs(cell, a), c), "a": a}
        a = chunk["a"][t % PROJECTION_STEPS].addmm_(h, W_h_T)  # + W_h h_{t-1}, in place: the gates see it
        steps = cell.step(chunk["gates"][t % PROJECTION_STEPS], c)
        steps["a"] = a
        return steps

    return step


class StackParameters(torch.autograd.Function):
    """(W_x, W_h, b): the gate matrices concatenated in groups of `gates` (b None without bias), which
    also saves the parameters: after an in-place change of one, backward raises as for torch.nn.LSTM
    (torch.cat alone saves nothing, and the gradient would be taken at the old value)."""

    @staticmethod
    def forward(ctx, gates: int, *parameters: Tensor) -> tuple[Tensor | None, ...]:
        ctx.save_for_backward(*parameters)
        ctx.gates = gates
        return lstm_bptt.stack_weights(parameters, gates)

    @staticmethod
    def backward(ctx, *gradients: Tensor | None) -> tuple[Tensor | None, ...]:
        ctx.saved_tensors  # noqa: B018  (reading them is the check: it raises after an in-place change)
        return None, *(
            part for gradient in gradients if gradient is not None for part in gradient.chunk(ctx.gates)
        )


def traced_steps(cell: LSTMCell, x: Tensor) -> Callable[[int, Tensor, Tensor], Steps]:
    """Step t as the layer runs it, `cell(x_t, (h, c))`, returning what LSTMCell.forward's step returned
    in that call (STEP_RECORD); ValueError where the call did not return that step's h and c as they
    were (its own forward or a hook changed them, or it never ran LSTMCell.forward)."""

    def step(t: int, h: Tensor, c: Tensor) -> Steps:
        calls = []
        token = STEP_RECORD.set(calls)
        try:
            h_next, c_next = cell(x[t], (h, c))
        finally:
            STEP_RECORD.reset(token)
        mine = [(steps, versions) for caller, steps, versions in calls if caller is cell]
        if len(mine) == 1 and mine[0][0]["h"] is h_next and mine[0][0]["c"] is c_next:
            steps, versions = mine[0]
            if all(value._version == versions[key] for key, value in steps.items()):
                return steps
        raise ValueError(
            f"trace reads the gates from {type(cell).__name__}.step, but calling this cell did not return "
            "what one run of LSTMCell.forward's step returned (its own forward or a hook changed it): "
            "trace by hand"
        )

    return step


def backpropagated_by_hand(cell: LSTMCell, x: Tensor, h: Tensor, c: Tensor, path: str):
    """`run_layer` of a shipped cell differentiated by lstm_bptt: with the textbook derivatives ("bptt"),
    or with the local derivatives of the variant's own step."""
    parameters, own = gate_parameters(cell), own_parameters(cell)

    def local(a: Tensor, c: Tensor) -> State:  # in the backward pass, which runs the step again
        same = [id(parameter) for parameter in own_parameters(cell)] == [id(parameter) for parameter in own]
        if not same or shipped_path(cell) is None:
            raise RuntimeError(
                f"{type(cell).__name__} changed after the forward pass (its own parameters replaced, a "
                "method or an attribute set): its backward pass runs the step again, as it ran forward; "
                "change the cell after backward"
            )
        steps = cell.step(gate_inputs(cell, a), c)
        return steps["c"], steps["h"]

    def run(x: Tensor, h: Tensor, c: Tensor, record: Callable) -> tuple[Tensor, State]:
        return run_layer(cell, x, h, c, WITHOUT_GRADIENTS, record)

    step = None if path == "bptt" else local
    return lstm_bptt.run_layer(run, step, len(cell.GATES), x, h, c, parameters, own)


def gate_inputs(cell: LSTMCell, a: Tensor) -> dict[str, Tensor]:
    """The stacked pre-activations a (rows, gates·hidden) as the dict `step` takes, one entry per gate."""
    return dict(zip(cell.GATES, a.chunk(len(cell.GATES), dim=1), strict=True))


def gate_views(cell: LSTMCell, a: Tensor) -> list[dict[str, Tensor]]:
    """For a (steps, batch, gates·hidden), every step's dict of its gates' views, as `step` takes it."""
    per_gate = [gate.unbind(0) for gate in a.unflatten(2, (len(cell.GATES), -1)).unbind(2)]
    return [dict(zip(cell.GATES, views, strict=True)) for views in zip(*per_gate, strict=True)]


def gate_names(cell: LSTMCell) -> list[tuple[str, str]]:
    """(kind, name) of the cell's W_i*, then W_h*, then b_* (with bias), each in the order of GATES."""
    kinds = ("W_i", "W_h", "b_") if cell.bias else ("W_i", "W_h")
    return [(kind, f"{kind}{gate}") for kind in kinds for gate in cell.GATES]


def gate_parameters(cell: LSTMCell) -> list[Tensor]:
    return [getattr(cell, name) for _, name in gate_names(cell)]


def own_parameters(cell: LSTMCell) -> list[Tensor]:
    """The parameters of `cell` other than its gate matrices and biases (a peephole's p_i)."""
    gates = gate_parameters(cell)
    return [parameter for parameter in cell.parameters() if not any(parameter is gate for gate in gates)]


def first_weight(cell: LSTMCell) -> Tensor:
    """The first gate's W_i: what the input must be like (dtype, device, size)."""
    return getattr(cell, f"W_i{cell.GATES[0]}")


# ---------------------------------------------------------------------------------------------------
# What the layer knows of a cell without running it

# The SHA-256 of this file's text without this line. tests/test_lstm_cell.py prints the new value after an
# edit: put it in only where the tests pass, which check lstm_bptt's textbook derivatives against
# LSTMCell.step; an edit that changes what a shipped step computes needs derivatives of its own.
SHIPPED_SOURCE = "b783e0cc9699a089"


def source_digest() -> str | None:
    """The SHA-256 of this module's source with the value of SHIPPED_SOURCE blanked, or None where none can
    be read (a frozen or exec'd module: nothing is then known)."""
    try:
        text = Path(__file__).read_text()
    except (OSError, NameError):
        return None
    text = re.sub(r'^SHIPPED_SOURCE = "[0-9a-f]*"$', 'SHIPPED_SOURCE = ""', text, count=1, flags=re.M)
    return hashlib.sha256("\n".join(text.splitlines()).encode()).hexdigest()[:16]


def names_of(namespace, private: bool = True) -> dict:
    """A class's or module's names and what they hold, less those Python adds as it goes, and with
    private=False those starting with "_" (torch.compile keeps its compiled code in a module's globals)."""
    return {
        name: value
        for name, value in namespace.items()
        if name not in ADDED_BY_PYTHON and (private or not name.startswith("_"))
    }


AS_SHIPPED = source_digest() == SHIPPED_SOURCE
# Their contents at import: the shipped classes and the classes of PyTorch whose methods the shipped code,
# the layer's steps and lstm_bptt call (a method patched since, Tensor.sigmoid replaced, say, or a Parameter
# given its own __radd__, is code the hand-written path does not know).
ADDED_BY_PYTHON = {"__slotnames__", "__warningregistry__"}  # as it copies a class's objects, or warns
SHIPPED_CLASSES = {cls: names_of(vars(cls)) for cls in VARIANTS.values()}
TORCH_CLASSES = {cls: names_of(vars(cls)) for cls in (Tensor, torch._C.TensorBase, nn.Parameter)}
# The functions of torch they call, as at import; the same for this module and lstm_bptt (at the end).
TORCH_NAMES = [(torch, name) for name in ("sigmoid", "tanh", "ones_like", "addmm", "addcmul", "stack", "cat")]
TORCH_NAMES += [(torch, name) for name in ("matmul", "mul", "zeros")] + [(torch.autograd, "grad")]
TORCH_NAMES += [(nn.Module, name) for name in ("__call__", "_call_impl", "__getattr__", "__setattr__")]
OWN_PARAMETERS = {PeepholeLSTMCell: {"p_i", "p_f", "p_o"}}  # a shipped class's parameters beyond the gates'
INSTANCE_ATTRIBUTES = set(vars(nn.Module())) | {"input_size", "hidden_size", "bias", "forget_bias"}


def shipped_path(cell: LSTMCell) -> str | None:
    """The hand-written backward pass that is `cell`'s own, known without running it: "bptt" (textbook
    derivatives) for LSTMCell and "bptt, local derivatives by autograd" for a variant of VARIANTS, each
    exactly as this file ships it (its class, source and methods, the module's functions and the PyTorch
    functions it calls) with an instance that has nothing added (no attribute, buffer, submodule, hook,
    method, tensor subclass or shared parameter of its own); None for any other. A shipped step is
    deterministic, works unit by unit and does nothing but compute."""
    cls = type(cell)
    if cls not in SHIPPED_CLASSES or not as_shipped(cls) or has_hooks(cell):
        return None
    parameters, names = list(cell._parameters.values()), {name for _, name in gate_names(cell)}
    clean = set(vars(cell)) == INSTANCE_ATTRIBUTES and not (cell._buffers or cell._modules)
    clean = clean and set(cell._parameters) == names | OWN_PARAMETERS.get(cls, set())
    clean = clean and all(type(parameter) in (Tensor, nn.Parameter) for parameter in parameters)
    if not clean or len({id(parameter) for parameter in parameters}) < len(parameters):
        return None
    return "bptt" if cls is LSTMCell else "bptt, local derivatives by autograd"


def as_shipped(cls: type) -> bool:
    """Whether `cls`, the classes it inherits from in this file, this module and lstm_bptt hold what they
    held at import, from the source this file ships, and the PyTorch functions and classes they call are
    as they were then: compared as dicts and lists, which is quick (it runs at every forward)."""
    classes = {
        **{klass: SHIPPED_CLASSES[klass] for klass in cls.__mro__ if klass in SHIPPED_CLASSES},
        **TORCH_CLASSES,
    }
    unchanged = all(vars(klass) == then or names_of(vars(klass)) == then for klass, then in classes.items())
    modules = ((globals(), MODULE_AT_IMPORT), (vars(lstm_bptt), LSTM_BPTT_AT_IMPORT))
    unchanged = unchanged and all(
        names_of(now, private=False) == then for now, then in modules
    )  # dicts: quick
    return AS_SHIPPED and unchanged and code_now() == CODE_AT_IMPORT


def code_now() -> list[list]:
    """The PyTorch functions of TORCH_NAMES, and the code and defaults of every function of this module,
    of lstm_bptt and of the shipped classes (a `__code__` swapped in place is code they do not know)."""
    owners, attributes = zip(*TORCH_NAMES, strict=True)
    return [list(map(getattr, owners, attributes)), list(map(CODE_OF, FUNCTIONS))]


def has_hooks(cell: nn.Module) -> bool:
    """Whether calling `cell` runs anything but its forward: nn.Module.__call__'s own test."""
    hooks = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    globals_ = torch.nn.modules.module
    return any(getattr(cell, name, None) or getattr(globals_, f"_global{name}", None) for name in hooks)


def special_mode() -> str | None:
    """The name of a mode in which the layer calls each cell whole, or None in plain eager mode."""
    if torch.compiler.is_compiling():
        return "torch.compile or torch.export"
    if torch.jit.is_tracing():  # a custom autograd Function inside torch.jit.trace crashes the process
        return "torch.jit.trace"
    if torch._C._len_torch_function_stack() > 0:  # it may change what any torch function computes
        return "a TorchFunctionMode (torch.overrides), such as a torch.device context"
    if torch._C._len_torch_dispatch_stack() > 0:
        return "a TorchDispatchMode"
    if torch._C._are_functorch_transforms_active():
        return "a torch.func transform"
    if any(autocast_enabled(device) for device in ("cpu", "cuda", "mps")):
        return "autocast"
    if torch.autograd.forward_ad._current_level >= 0:  # inside forward_ad.dual_level(): dual tensors
        return "forward-mode AD (torch.autograd.forward_ad)"
    return None


def autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except (TypeError, RuntimeError):  # PyTorch < 2.4 asks for no device type, and knows only cuda and cpu
        legacy = {"cuda": torch.is_autocast_enabled, "cpu": torch.is_autocast_cpu_enabled}
        return legacy.get(device_type, lambda: False)()


# ---------------------------------------------------------------------------------------------------
# Conversions to and from torch.nn.LSTM, which stacks the gates [i; f; g; o] in one matrix


def cell_from_torch(cls: type[LSTMCell], cell: nn.LSTMCell) -> LSTMCell:
    check_torch_module(cell, nn.LSTMCell)
    if cls is not LSTMCell:
        raise ValueError(f"from_torch builds the standard LSTMCell; {cls.__name__} is a variant")
    like = cell.weight_ih
    ours = cls(cell.input_size, cell.hidden_size, cell.bias, device=like.device, dtype=like.dtype)
    load_torch_weights(ours, like, cell.weight_hh, (cell.bias_ih, cell.bias_hh) if cell.bias else None)
    return ours.train(cell.training)


def lstm_from_torch(cls: type[LSTM], lstm: nn.LSTM) -> LSTM:
    check_torch_module(lstm, nn.LSTM)
    check_unsupported(lstm.bidirectional, lstm.proj_size, what="from_torch")
    settings = (lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.bias, lstm.batch_first, lstm.dropout)
    ours = cls(*settings, device=lstm.weight_ih_l0.device, dtype=lstm.weight_ih_l0.dtype)
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")[: 4 if lstm.bias else 2]
    for layer, cell in enumerate(ours.cells):
        weights = [getattr(lstm, f"{name}_l{layer}") for name in names]
        load_torch_weights(cell, *weights[:2], weights[2:] or None)
    return ours.train(lstm.training)


@torch.no_grad()
def load_torch_weights(cell: LSTMCell, weight_ih: Tensor, weight_hh: Tensor, biases) -> None:
    """Copy PyTorch's stacked [i; f; g; o] weights and the sum of its two biases into the named gate
    matrices; each trains where PyTorch's does (the one bias where either of PyTorch's two does)."""
    for gate, w_i, w_h in zip(cell.GATES, weight_ih.chunk(4), weight_hh.chunk(4), strict=True):
        getattr(cell, f"W_i{gate}").copy_(w_i).requires_grad_(weight_ih.requires_grad)
        getattr(cell, f"W_h{gate}").copy_(w_h).requires_grad_(weight_hh.requires_grad)
    if cell.bias:
        bias_trains = any(bias.requires_grad for bias in biases)
        for gate, b in zip(cell.GATES, (biases[0] + biases[1]).chunk(4), strict=True):
            getattr(cell, f"b_{gate}").copy_(b).requires_grad_(bias_trains)


def cell_to_torch(cell: LSTMCell) -> nn.LSTMCell:
    if shipped_path(cell) != "bptt":
        raise ValueError(
            f"to_torch: {type(cell).__name__} is not lstm_cell.LSTMCell as shipped (a variant, a subclass, "
            "an edited or hooked cell), and torch.nn.LSTM cannot express what it computes"
        )
    trains = {}  # whether nn.LSTMCell's weight_ih, weight_hh and biases train: as the gates' own do
    for name, group in (("weight_ih", "W_i"), ("weight_hh", "W_h"), ("bias", "b_")):
        flags = {gate: getattr(cell, gate).requires_grad for kind, gate in gate_names(cell) if kind == group}
        if len(set(flags.values())) > 1:
            raise ValueError(
                f"to_torch: torch.nn.LSTM stacks {', '.join(flags)} in one {name}, which trains or "
                f"not as a whole, but here only some of them train ({flags}); set requires_grad alike"
            )
        trains[name] = all(flags.values())  # True where there is no such matrix (no bias)
    like = first_weight(cell)
    # Made on the meta device and filled here: no random initialization, so no draw from the RNG.
    ours = nn.LSTMCell(cell.input_size, cell.hidden_size, cell.bias, device="meta", dtype=like.dtype)
    ours = ours.to_empty(device=like.device)
    stacked = lstm_bptt.stack_weights(gate_parameters(cell), gates=4)
    with torch.no_grad():
        for name, value in zip(("weight_ih", "weight_hh", "bias_ih"), stacked, strict=True):
            if value is not None:
                getattr(ours, name).copy_(value)
        if cell.bias:
            ours.bias_hh.zero_()
    for name, parameter in ours.named_parameters():
        parameter.requires_grad_(trains["bias" if name.startswith("bias") else name])
    return ours.train(cell.training)


def lstm_to_torch(lstm: LSTM) -> nn.LSTM:
    like = first_weight(lstm.cells[0])
    settings = (lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.bias, lstm.batch_first, lstm.dropout)
    converted = nn.LSTM(*settings, device="meta", dtype=like.dtype).to_empty(device=like.device)
    with torch.no_grad():
        for layer, cell in enumerate(lstm.cells):
            for name, value in cell_to_torch(cell).named_parameters():
                getattr(converted, f"{name}_l{layer}").copy_(value).requires_grad_(value.requires_grad)
    return converted.train(lstm.training)


# ---------------------------------------------------------------------------------------------------
# Settings and input checks: a clear error before any arithmetic, instead of one from inside a matmul.


def cell_class_of(variant: str | type[LSTMCell]) -> type[LSTMCell]:
    if isinstance(variant, type) and issubclass(variant, LSTMCell):
        return variant
    if isinstance(variant, str) and variant in VARIANTS:
        return VARIANTS[variant]
    raise ValueError(f"variant must be one of {', '.join(VARIANTS)} or an LSTMCell subclass, got {variant!r}")


def check_torch_module(module: nn.Module, kind: type[nn.Module]) -> None:
    """TypeError for anything but a `kind`; ValueError for a subclass of it or a module with hooks, whose
    call may compute more than its weights say."""
    if not isinstance(module, kind):
        raise TypeError(f"from_torch expected a torch.nn.{kind.__name__}, got {type(module).__name__}")
    if type(module) is not kind or has_hooks(module):
        raise ValueError(
            f"from_torch converts torch.nn.{kind.__name__}'s own computation, but this is a "
            f"{type(module).__name__}{' with hooks' if has_hooks(module) else ''}: what it adds would be lost"
        )


def check_unsupported(bidirectional: bool, proj_size: int, what: str = "LSTM") -> None:
    if bidirectional:
        raise ValueError(
            f"{what}: bidirectional=True is not supported, this LSTM runs forward in time only; use "
            "torch.nn.LSTM(bidirectional=True), or run a second LSTM over x.flip(0) and concatenate"
        )
    if proj_size:
        raise ValueError(
            f"{what}: proj_size={proj_size} is not supported, h has hidden_size units; use "
            "torch.nn.LSTM(proj_size=...), or a torch.nn.Linear on the output"
        )


def check_type(name: str, value, kind: type):
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{name} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def check_size(name: str, value: int) -> int:
    if check_type(name, value, int) <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def check_dropout(dropout: float, num_layers: int) -> float:
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
        raise TypeError(f"dropout must be a number, got {type(dropout).__name__}")
    if not 0 <= dropout <= 1:
        raise ValueError(f"dropout must be in [0, 1], got {dropout}")
    if dropout > 0 and num_layers == 1:
        message = f"dropout={dropout} acts between layers, and num_layers=1 has none: it changes nothing"
        warnings.warn(message, UserWarning, stacklevel=3)
    return float(dropout)


def check_forget_bias(forget_bias: float | None, bias: bool, dtype: torch.dtype | None) -> float | None:
    if forget_bias is None:
        return None
    if isinstance(forget_bias, bool) or not isinstance(forget_bias, (int, float)):
        raise TypeError(f"forget_bias must be a number or None, got {type(forget_bias).__name__}")
    if not (abs(forget_bias) < math.inf):  # an int too large for a float compares too, unlike isfinite
        raise ValueError(f"forget_bias must be finite, got {forget_bias}")
    dtype = dtype or torch.get_default_dtype()
    if abs(forget_bias) > torch.finfo(dtype).max:
        raise ValueError(
            f"forget_bias must fit the parameters' dtype, {dtype} (at most "
            f"{torch.finfo(dtype).max:.4g} in size), got {str(forget_bias)[:24]}"
        )
    if not bias:
        raise ValueError(f"forget_bias={forget_bias} needs bias=True: with bias=False there is no b_f")
    return float(forget_bias)


def check_input(x: Tensor, expected_shape: str, *, rank: int, like: Tensor, name: str) -> None:
    """x must be a floating tensor like `like` with `rank` dimensions, the last as `like`'s last."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.dtype != like.dtype:
        raise TypeError(f"{name} must have the parameters' dtype {like.dtype}, got {x.dtype}")
    if x.device != like.device:
        raise ValueError(f"{name} must be on the parameters' device {like.device}, got {x.device}")
    if x.dim() != rank or x.shape[-1] != like.shape[-1]:
        raise ValueError(f"{name} must have shape {expected_shape}, got {tuple(x.shape)}")


def check_pair(state) -> State:
    if not isinstance(state, (tuple, list)) or len(state) != 2:
        raise TypeError(f"state must be a pair (h, c) of tensors, got {type(state).__name__}")
    return tuple(state)


def check_state(state: State | None, shape: tuple[int, ...], like: Tensor) -> State:
    """The (h, c) pair, each of `shape` and like `like`; zeros when state is None."""
    if state is None:
        zeros = torch.zeros(shape, dtype=like.dtype, device=like.device)
        return zeros, zeros
    for name, tensor in zip("hc", check_pair(state), strict=True):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"state {name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tuple(tensor.shape) != tuple(shape):
            raise ValueError(f"state {name} must have shape {tuple(shape)}, got {tuple(tensor.shape)}")
        if tensor.dtype != like.dtype:
            raise TypeError(f"state {name} must have dtype {like.dtype}, got {tensor.dtype}")
        if tensor.device != like.device:
            raise ValueError(f"state {name} must be on device {like.device}, got {tensor.device}")
    return state


# At the end, what this module and lstm_bptt hold as shipped, and the functions whose code code_now reads.
FUNCTIONS = [value for module in (globals(), vars(lstm_bptt)) for value in module.values()]
FUNCTIONS += [getattr(value, "__func__", value) for cls in SHIPPED_CLASSES for value in vars(cls).values()]
FUNCTIONS = [function for function in FUNCTIONS if isinstance(function, types.FunctionType)]
CODE_OF = operator.attrgetter("__code__", "__defaults__")
CODE_AT_IMPORT = code_now()
LSTM_BPTT_AT_IMPORT = names_of(vars(lstm_bptt), private=False)
MODULE_AT_IMPORT = {}
MODULE_AT_IMPORT.update(names_of(globals(), private=False))  # itself included: the last name it binds
