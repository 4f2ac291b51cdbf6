"""An LSTM written by hand: one cell whose parameters are the gate matrices of the textbook equations.

For an input x, the previous hidden state h and the previous cell state c, one time step is

    i  = σ(W_ii x + W_hi h + b_i)        input gate:      how much of the candidate to write
    f  = σ(W_if x + W_hf h + b_f)        forget gate:     how much of the old cell state to keep
    g  = tanh(W_ig x + W_hg h + b_g)     cell candidate:  what could be written
    o  = σ(W_io x + W_ho h + b_o)        output gate:     how much of the cell state to show
    c' = f ⊙ c + i ⊙ g
    h' = o ⊙ tanh(c')

This is `torch.nn.LSTM`'s cell, the one Greff et al. ("LSTM: A Search Space Odyssey", IEEE TNNLS 2017)
call NP, "no peepholes". In this file, in reading order:

- `LSTMCell`: these lines, one gate a line. `LSTMCell.forward` *is* the definition of one step.
- The variants Greff et al. compared, each a subclass that replaces the lines it changes: `VARIANTS`
  names them (all but FGR, full gate recurrence, whose gates also read every gate's previous value).
- `LSTM`: a stack of cells run over a sequence, called like `torch.nn.LSTM`. It loops whatever cell it
  is given. For speed it may run a faster specialization of the same step, but only one that has been
  checked, on that very cell, to compute what `cell.forward` computes (`agrees_with_forward`); an
  edited or subclassed cell is never silently replaced by the textbook equations.

The hand-derived backward pass (backpropagation through time) lives in `lstm_bptt.py`, with the same
loop for any cell whose step works unit by unit, its local derivatives taken from the step by autograd.
"""

from __future__ import annotations

import copy
import math
import types
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

import lstm_bptt

State = tuple[Tensor, Tensor]
Steps = dict[str, Tensor]  # one step's i, f, g, o, c and h


class LSTMCell(nn.Module):
    """One LSTM time step, `(h', c') = cell(x, (h, c))`, with the equations of this module's docstring.

    Shapes: x is (batch, input_size); h, c, h' and c' are (batch, hidden_size); a missing state
    starts from zeros. Parameters: W_i* (hidden_size, input_size), W_h* (hidden_size, hidden_size),
    b_* (hidden_size,), one per gate in `GATES`. PyTorch keeps two biases per gate (b_ih + b_hh);
    one is enough. `bias=False` leaves out the b_*.

    `forget_bias`: the initial value of every b_f (None keeps PyTorch's uniform initialization;
    Jozefowicz, Zaremba & Sutskever, ICML 2015, recommend 1.0 so that the cell starts by keeping c).

    Raises TypeError/ValueError for sizes that are not positive ints and for input or state of the
    wrong shape, dtype or device, naming what was expected and what came.
    """

    GATES = ("i", "f", "g", "o")  # the gates with weight matrices, in torch.nn.LSTM's stacking order

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        forget_bias: float | None = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.input_size = check_size("input_size", input_size)
        self.hidden_size = check_size("hidden_size", hidden_size)
        self.bias = check_bool("bias", bias)
        self.forget_bias = check_forget_bias(forget_bias, bias, dtype)
        like = {"device": device, "dtype": dtype}
        for gate in self.GATES:
            setattr(self, f"W_i{gate}", nn.Parameter(torch.empty(hidden_size, input_size, **like)))
        for gate in self.GATES:
            setattr(self, f"W_h{gate}", nn.Parameter(torch.empty(hidden_size, hidden_size, **like)))
        for gate in self.GATES if bias else ():
            setattr(self, f"b_{gate}", nn.Parameter(torch.empty(hidden_size, **like)))
        self.reset_parameters()

    def forward(self, x: Tensor, state: State | None = None) -> State:
        check_input(x, f"(batch, input_size={self.input_size})", rank=2, like=self.W_ig, name="x")
        h, c = check_state(state, (x.shape[0], self.hidden_size), like=x)
        steps = self.step(self.preactivations(x, h), c)
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
        # PyTorch's initialization, so that this cell and nn.LSTMCell start from the same distribution.
        bound = 1.0 / math.sqrt(self.hidden_size)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)
        if self.forget_bias is not None:
            with torch.no_grad():
                self.set_forget_bias(self.forget_bias)

    def set_forget_bias(self, value: float) -> None:
        self.b_f.fill_(value)

    @classmethod
    def from_torch(cls, cell: nn.LSTMCell) -> LSTMCell:
        """A cell computing exactly what `cell` computes, on its device, in its dtype and training mode,
        training what it trains."""
        if not isinstance(cell, nn.LSTMCell):
            raise TypeError(f"from_torch expected a torch.nn.LSTMCell, got {type(cell).__name__}")
        if cls is not LSTMCell:
            raise ValueError(f"from_torch builds the standard LSTMCell; {cls.__name__} is a variant")
        weight = cell.weight_ih
        ours = cls(cell.input_size, cell.hidden_size, cell.bias, device=weight.device, dtype=weight.dtype)
        biases = (cell.bias_ih, cell.bias_hh) if cell.bias else None
        ours.load_torch_weights(cell.weight_ih, cell.weight_hh, biases)
        return ours.train(cell.training)

    def to_torch(self) -> nn.LSTMCell:
        """A `torch.nn.LSTMCell` computing exactly what this cell computes, in its training mode and
        training the parameters it trains.

        Raises ValueError when this cell is a variant, or an edited cell, that nn.LSTMCell cannot express,
        and when some gates' matrices train and others are frozen (nn.LSTMCell stacks the four gates in
        one matrix, which trains or not as a whole).
        """
        check_convertible(self)
        trains = self.trained_like_torch()
        cell = nn.LSTMCell(self.input_size, self.hidden_size, self.bias, device="meta", dtype=self.W_ig.dtype)
        # Made on the meta device and filled here: no random initialization, so no draw from the RNG.
        cell = cell.to_empty(device=self.W_ig.device)
        with torch.no_grad():
            cell.weight_ih.copy_(torch.cat([getattr(self, f"W_i{gate}") for gate in self.GATES]))
            cell.weight_hh.copy_(torch.cat([getattr(self, f"W_h{gate}") for gate in self.GATES]))
            if self.bias:
                cell.bias_ih.copy_(torch.cat([getattr(self, f"b_{gate}") for gate in self.GATES]))
                cell.bias_hh.zero_()
        for name, parameter in cell.named_parameters():
            parameter.requires_grad_(trains["bias" if name.startswith("bias") else name])
        return cell.train(self.training)

    def trained_like_torch(self) -> dict[str, bool]:
        """Whether nn.LSTMCell's "weight_ih", "weight_hh" and "bias" would train, read from the gates' own
        parameters; ValueError where the gates of one stacked matrix disagree."""
        groups = {"weight_ih": "W_i{}", "weight_hh": "W_h{}"} | ({"bias": "b_{}"} if self.bias else {})
        trains = {}
        for name, pattern in groups.items():
            flags = {
                pattern.format(gate): getattr(self, pattern.format(gate)).requires_grad for gate in self.GATES
            }
            if len(set(flags.values())) > 1:
                raise ValueError(
                    f"to_torch: torch.nn.LSTM stacks {', '.join(flags)} in one {name}, which trains or "
                    f"not as a whole, but here only some of them train ({flags}); set requires_grad alike"
                )
            trains[name] = next(iter(flags.values()))
        return trains

    @torch.no_grad()
    def load_torch_weights(
        self, weight_ih: Tensor, weight_hh: Tensor, biases: tuple[Tensor, Tensor] | None
    ) -> None:
        """Copy PyTorch's stacked [i; f; g; o] weights and the sum of its two biases into the named gate
        matrices; each trains where PyTorch's does (the one bias where either of PyTorch's two does)."""
        for gate, w_i, w_h in zip(self.GATES, weight_ih.chunk(4), weight_hh.chunk(4), strict=True):
            getattr(self, f"W_i{gate}").copy_(w_i).requires_grad_(weight_ih.requires_grad)
            getattr(self, f"W_h{gate}").copy_(w_h).requires_grad_(weight_hh.requires_grad)
        if self.bias:
            bias_trains = any(bias.requires_grad for bias in biases)
            for gate, b in zip(self.GATES, (biases[0] + biases[1]).chunk(4), strict=True):
                getattr(self, f"b_{gate}").copy_(b).requires_grad_(bias_trains)

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

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, **options) -> None:
        super().__init__(input_size, hidden_size, bias, **options)
        like = {"device": self.W_ig.device, "dtype": self.W_ig.dtype}
        self.p_i, self.p_f, self.p_o = (nn.Parameter(torch.empty(hidden_size, **like)) for _ in "ifo")
        self.reset_parameters()  # again, now that the peepholes exist

    def input_gate(self, a, c):
        return torch.sigmoid(a["i"] + self.p_i * c)

    def forget_gate(self, a, c, i):
        return torch.sigmoid(a["f"] + self.p_f * c)

    def output_gate(self, a, c_next):
        return torch.sigmoid(a["o"] + self.p_o * c_next)


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

    `variant` names the cell class (a key of `VARIANTS`, or an `LSTMCell` subclass); `forget_bias`
    is passed to every cell. `backward` chooses how gradients flow back through time:

    - "auto" (default): in eager mode without autocast, the hand-derived backward pass of `lstm_bptt`
      for a cell that computes the standard equations, and for any other cell whose step works unit
      by unit (every variant) the same backward loop with the step's local derivatives taken by
      autograd (`lstm_bptt.LocalBPTT`); autograd everywhere else. Both are first-order only;
    - "bptt": the hand-derived backward pass of the standard equations, or a clear error where it
      cannot be used;
    - "autograd": PyTorch differentiates the cell's own step, step by step (gradients of gradients
      included).

    `training_path()` says which one a training step takes. A cell with a `forward` of its own (its
    class's or the instance's), and every cell under `torch.compile`, `torch.export`, `torch.jit.trace`,
    `torch.func` transforms, forward-mode AD and autocast, is run by calling `cell(x_t, (h, c))` at
    every step.

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
        self.bias = check_bool("bias", bias)
        self.batch_first = check_bool("batch_first", batch_first)
        self.dropout = check_dropout(dropout, num_layers)
        check_unsupported(bidirectional, proj_size)
        self.cell_class = cell_class_of(variant)
        self.variant = next((name for name, cls in VARIANTS.items() if cls is self.cell_class), None)
        self.backward = backward
        options = {"forget_bias": forget_bias, "device": device, "dtype": dtype}
        self.cells = nn.ModuleList(
            self.cell_class(input_size if layer == 0 else hidden_size, hidden_size, bias, **options)
            for layer in range(num_layers)
        )

    @property
    def backward(self) -> str:
        return self._backward

    @backward.setter
    def backward(self, backward: str) -> None:
        if backward not in self.BACKWARDS:
            raise ValueError(f"backward must be one of {self.BACKWARDS}, got {backward!r}")
        self._backward = backward

    def forward(self, x: Tensor, hx: State | None = None) -> tuple[Tensor, State]:
        x, (h_0, c_0), restore = self.prepare(x, hx)
        layer_input, h_n, c_n = x, [], []
        for layer, cell in enumerate(self.cells):
            if layer > 0 and self.dropout > 0:
                layer_input = nn.functional.dropout(layer_input, self.dropout, self.training)
            run_layer = self.layer_runner(cell, needs_gradient(layer_input, h_0, c_0, cell))
            layer_input, (h, c) = run_layer(cell, layer_input, h_0[layer], c_0[layer])
            h_n.append(h)
            c_n.append(c)
        # Stacked, so h_n and c_n are tensors of their own, never views of output (as in nn.LSTM).
        return restore(layer_input), (
            restore(torch.stack(h_n), state=True),
            restore(torch.stack(c_n), state=True),
        )

    def trace(self, x: Tensor, state: State | None = None) -> list[dict[str, Tensor]]:
        """Every step's i, f, g, o, c and h, one dict per layer, each laid out like `output`.

        Computed by the cells' own `step`, the code that trains. For a gate a variant removes, the
        value the variant uses (ones, or 1 − i for CIFG's f). Gradients flow through the result when
        grad mode is on. Raises ValueError for a cell whose forward no longer goes through its `step`.
        """
        x, (h_0, c_0), restore = self.prepare(x, state)
        layer_input, layers = x, []
        for layer, cell in enumerate(self.cells):
            if not agrees_with_forward(cell, run_stacked):
                raise ValueError(
                    f"trace reads the gates from {type(cell).__name__}.step, but this cell's forward no "
                    "longer computes its step through step(); make forward call step, or trace by hand"
                )
            if layer > 0 and self.dropout > 0:
                layer_input = nn.functional.dropout(layer_input, self.dropout, self.training)
            steps: list[Steps] = []
            layer_input, _ = run_stacked(cell, layer_input, h_0[layer], c_0[layer], record=steps)
            layers.append({key: restore(torch.stack([s[key] for s in steps])) for key in steps[0]})
        return layers

    def training_path(self) -> str:
        """How a training step runs in eager mode, one of the values of `PATH_NAMES`.

        "bptt": lstm_bptt's hand-derived backward pass. "bptt, local derivatives by autograd": the
        same loop with the derivatives of the cell's own step (lstm_bptt.LocalBPTT). "autograd": the
        cell's `step` with the input projections of all steps computed at once. "autograd, step by
        step": `cell(x_t, (h, c))` at every step, for a cell with a forward of its own or whose forward no
        longer goes through its `step`.
        """
        return PATH_NAMES[self.layer_runner(self.cells[0], needs_grad=True)]

    def layer_runner(self, cell: LSTMCell, needs_grad: bool) -> Callable:
        """The function that runs `cell` over one layer: the fastest one that computes `cell.forward`."""
        special = special_mode()
        if special is not None:
            if self.backward == "bptt" and needs_grad:
                raise RuntimeError(
                    f"LSTM(backward='bptt') cannot run under {special}: its hand-derived backward pass "
                    "works in eager mode only; use backward='auto' or 'autograd'"
                )
            return run_step_by_step
        # Known without running it: a forward of its own is run by stepping the cell, never stood in for.
        overridden = forward_is_overridden(cell)
        definition = None if overridden else definition_of(cell)  # computed once: the checks use it
        if needs_grad and self.backward != "autograd":
            if not overridden and agrees_with_forward(cell, run_bptt, definition):
                return run_bptt
            if self.backward == "bptt":
                raise ValueError(
                    f"LSTM(backward='bptt') differentiates the standard LSTM equations by hand, but "
                    f"{type(cell).__name__}.forward computes something else (a variant, a subclass or an "
                    "edited cell); use backward='autograd' (or 'auto'), which differentiates the cell's "
                    "own forward"
                )
            if not overridden and agrees_with_forward(cell, run_bptt_local, definition):
                return run_bptt_local
        if overridden or not agrees_with_forward(cell, run_stacked, definition):
            return run_step_by_step
        return run_stacked

    def prepare(self, x: Tensor, hx: State | None) -> tuple[Tensor, State, Callable]:
        """x as (seq_len, batch, input_size), the checked state, and the inverse of that layout."""
        layers, hidden = self.num_layers, self.hidden_size
        like = self.cells[0].W_ig
        if isinstance(x, Tensor) and x.dim() == 2:  # one unbatched sequence
            check_input(x, f"(seq_len, input_size={self.input_size})", rank=2, like=like, name="x")
            if hx is not None:
                for name, tensor in zip(("h_0", "c_0"), check_pair(hx), strict=True):
                    if isinstance(tensor, Tensor) and tensor.dim() != 2:
                        raise ValueError(
                            f"for unbatched 2-D input x of shape {tuple(x.shape)}, {name} must also be "
                            f"2-D, (num_layers={layers}, hidden_size={hidden}); got {tuple(tensor.shape)}"
                        )
                hx = tuple(tensor.unsqueeze(1) for tensor in check_state(hx, (layers, hidden), like=x))
            if len(x) == 0:
                raise ValueError(f"x must hold a non-empty sequence, got shape {tuple(x.shape)}")
            x = x.unsqueeze(1)

            def restore(tensor: Tensor, state: bool = False) -> Tensor:
                return tensor.squeeze(1)

        else:
            layout = "batch, seq_len" if self.batch_first else "seq_len, batch"
            check_input(x, f"({layout}, input_size={self.input_size})", rank=3, like=like, name="x")
            if x.shape[0] == 0 or x.shape[1] == 0:
                raise ValueError(f"x must hold a non-empty sequence and batch, got shape {tuple(x.shape)}")
            if self.batch_first:
                x = x.transpose(0, 1)

            def restore(tensor: Tensor, state: bool = False) -> Tensor:
                return tensor.transpose(0, 1) if self.batch_first and not state else tensor

        state = check_state(hx, (layers, x.shape[1], hidden), like=x)
        return x, state, restore

    @classmethod
    def from_torch(cls, lstm: nn.LSTM) -> LSTM:
        """An LSTM computing exactly what `lstm` computes, on its device, in its dtype and training mode,
        training what it trains (one bias per gate, where either of PyTorch's two trains).

        Raises TypeError for anything but a torch.nn.LSTM, ValueError for bidirectional or proj_size > 0.
        """
        if not isinstance(lstm, nn.LSTM):
            raise TypeError(f"from_torch expected a torch.nn.LSTM, got {type(lstm).__name__}")
        check_unsupported(lstm.bidirectional, lstm.proj_size, what="from_torch")
        weight = lstm.weight_ih_l0
        ours = cls(
            lstm.input_size,
            lstm.hidden_size,
            lstm.num_layers,
            lstm.bias,
            lstm.batch_first,
            lstm.dropout,
            device=weight.device,
            dtype=weight.dtype,
        )
        for layer, cell in enumerate(ours.cells):
            weights = {name: getattr(lstm, f"{name}_l{layer}", None) for name in ("weight_ih", "weight_hh")}
            biases = (
                (getattr(lstm, f"bias_ih_l{layer}"), getattr(lstm, f"bias_hh_l{layer}"))
                if lstm.bias
                else None
            )
            cell.load_torch_weights(weights["weight_ih"], weights["weight_hh"], biases)
        return ours.train(lstm.training)

    def to_torch(self) -> nn.LSTM:
        """A `torch.nn.LSTM` computing exactly what this LSTM computes, in its training mode, training
        what it trains (both of PyTorch's biases where ours does).

        Raises ValueError when the cells are a variant, or edited, so that nn.LSTM cannot express them,
        or when only some of the gates stacked in one of nn.LSTM's matrices train.
        """
        like = self.cells[0].W_ig
        lstm = nn.LSTM(
            self.input_size,
            self.hidden_size,
            self.num_layers,
            self.bias,
            self.batch_first,
            self.dropout,
            device="meta",
            dtype=like.dtype,
        ).to_empty(device=like.device)
        with torch.no_grad():
            for layer, cell in enumerate(self.cells):
                converted = cell.to_torch()
                for name, value in converted.named_parameters():
                    getattr(lstm, f"{name}_l{layer}").copy_(value).requires_grad_(value.requires_grad)
        return lstm.train(self.training)

    def extra_repr(self) -> str:
        settings = [f"variant={self.variant or self.cell_class.__name__!r}", f"backward={self.backward!r}"]
        settings += [f"bias={self.bias}", f"batch_first={self.batch_first}", f"dropout={self.dropout}"]
        return ", ".join(settings)


# ---------------------------------------------------------------------------------------------------
# Running one layer: three ways, each returning (every step's h (seq_len, batch, hidden), (h_n, c_n)).


def run_step_by_step(cell: LSTMCell, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, State]:
    """The definition itself: `cell(x_t, (h, c))` at every step, differentiated by autograd."""
    outputs = []
    for x_t in x:
        h, c = cell(x_t, (h, c))
        outputs.append(h)
    return torch.stack(outputs), (h, c)


def run_bptt(cell: LSTMCell, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, State]:
    """The standard equations with `lstm_bptt`'s hand-derived backward pass (for a checked cell only)."""
    return lstm_bptt.run_layer(x, h, c, gate_parameters(cell, "oifg"))


def run_bptt_local(cell: LSTMCell, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, State]:
    """`cell.step` at every step, with `lstm_bptt.LocalBPTT`: the backward loop of the standard cell,
    its local derivatives taken from the cell's own step by autograd (for a checked cell only)."""
    parameters = gate_parameters(cell, cell.GATES)
    step_parameters = [p for p in cell.parameters() if not any(p is q for q in parameters)]

    def step(a: Tensor, c: Tensor) -> State:
        steps = cell.step(dict(zip(cell.GATES, a.split(cell.hidden_size, dim=1), strict=True)), c)
        return steps["c"], steps["h"]

    return lstm_bptt.run_layer_local(step, len(cell.GATES), x, h, c, parameters, step_parameters)


PROJECTION_STEPS = 256  # input projections computed this many steps at a time, to bound their memory


def run_stacked(
    cell: LSTMCell, x: Tensor, h: Tensor, c: Tensor, *, record: list[Steps] | None = None
) -> tuple[Tensor, State]:
    """`cell.step` at every step, its pre-activations from stacked matrices, differentiated by autograd.

    The input's share W_ik x_t + b_k of every gate needs no recurrence, so one matmul computes it for
    many steps at once; the recurrent share of all gates is one matmul a step. Appends every step's
    quantities to `record` when given.
    """
    W_x, W_h, b = stacked_weights(cell)
    W_h_T = W_h.T
    # Without a graph to keep, each chunk's h go straight into the output: a long sequence never holds
    # its outputs twice (every step's, and stacked).
    output = None if torch.is_grad_enabled() else x.new_empty(len(x), len(h), cell.hidden_size)
    chunks = []
    for start in range(0, len(x), PROJECTION_STEPS):
        chunk = x[start : start + PROJECTION_STEPS]
        x_proj = lstm_bptt.input_projections(chunk, W_x, b)
        hs = []
        for x_proj_t in x_proj.unbind(0):  # one view per step, with one node in autograd's graph
            a = torch.addmm(x_proj_t, h, W_h_T).split(cell.hidden_size, dim=1)
            steps = cell.step(dict(zip(cell.GATES, a, strict=True)), c)
            h, c = steps["h"], steps["c"]
            hs.append(h)
            if record is not None:
                record.append(steps)
        if output is None:
            chunks.append(torch.stack(hs))
        else:
            torch.stack(hs, out=output[start : start + len(chunk)])
    if output is None:
        output = chunks[0] if len(chunks) == 1 else torch.cat(chunks)
    return output, (h, c)


def gate_parameters(cell: LSTMCell, order: str) -> list[Tensor]:
    """The cell's W_i*, then W_h*, then b_* (with bias), each group in the gate order `order`."""
    parameters = [getattr(cell, f"{kind}{gate}") for kind in ("W_i", "W_h") for gate in order]
    return parameters + ([getattr(cell, f"b_{gate}") for gate in order] if cell.bias else [])


def stacked_weights(cell: LSTMCell, order: str | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """(W_x, W_h, b): the cell's gate matrices stacked in the order of `order` (default: cell.GATES);
    b is None without bias. AttributeError for a gate the cell does not have."""
    order = cell.GATES if order is None else order
    W_x, W_h, *b = StackParameters.apply(len(order), *gate_parameters(cell, order))
    return W_x, W_h, b[0] if b else None


class StackParameters(torch.autograd.Function):
    """torch.cat of the gate matrices, in groups of `gates`, which also saves the parameters for backward.

    torch.cat alone saves nothing, so a parameter changed in place between forward and backward would
    go unnoticed and its gradient be taken at the old value. Saved here, autograd raises instead, as it
    does for torch.nn.LSTM.
    """

    @staticmethod
    def forward(ctx, gates: int, *parameters: Tensor) -> tuple[Tensor, ...]:
        ctx.save_for_backward(*parameters)
        ctx.gates = gates
        stacked = lstm_bptt.stack_weights(parameters, gates)
        return tuple(weight for weight in stacked if weight is not None)

    @staticmethod
    def backward(ctx, *gradients: Tensor) -> tuple[Tensor | None, ...]:
        ctx.saved_tensors  # noqa: B018  (reading them is the check: it raises after an in-place change)
        return (None, *(part for gradient in gradients for part in gradient.chunk(ctx.gates)))


# ---------------------------------------------------------------------------------------------------
# Which runner may stand in for a cell's forward: checked on the cell itself, once per definition.

PATH_NAMES = {
    run_bptt: "bptt",
    run_bptt_local: "bptt, local derivatives by autograd",
    run_stacked: "autograd",
    run_step_by_step: "autograd, step by step",
}
_agreement: dict[tuple, bool] = {}


def agrees_with_forward(cell: LSTMCell, run_layer: Callable, definition: tuple | None = None) -> bool:
    """Whether `run_layer(cell, x, h, c)` computes what stepping `cell(x_t, (h, c))` computes.

    Forward and gradients, on a float64 copy of the cell with freshly drawn parameters over a short
    random sequence (to 1e-9; see `compare_with_forward`), and remembered for the cell's definition
    (`definition_of`: its class and methods, sizes, training mode, attributes, buffers, submodules,
    hooks, which parameters train). So an edit of the source, a subclass, a replaced method, a hook or
    a changed buffer is always checked anew, and a runner that computes something else is never used.
    `definition`: `definition_of(cell)`, when the caller has it already.
    """
    key = (run_layer, definition_of(cell) if definition is None else definition)
    if key not in _agreement:
        _agreement[key] = compare_with_forward(cell, run_layer)
    return _agreement[key]


def definition_of(cell: LSTMCell) -> tuple:
    """What `cell` computes, as a hashable value that a check of the cell is remembered under.

    Its class and every function of the class and of its bases, looked up anew each time (so a method
    added or replaced later is seen); its plain attributes (sizes, the training mode, numbers, strings,
    methods set on the instance, tensors by `fingerprint`); its forward hooks; its parameters' names,
    shapes and requires_grad; its buffers by `fingerprint` (so that an in-place change is seen); its
    submodules' classes and training modes. Not the parameters' values: `compare_with_forward` draws
    its own, so one check serves every cell built alike.
    """
    cls = type(cell)
    methods = tuple(
        (klass, name, value)
        for klass in cls.__mro__
        if klass not in (nn.Module, object)
        for name, value in vars(klass).items()
        if isinstance(value, (types.FunctionType, staticmethod, classmethod, property))
    )
    attributes = tuple(
        (name, fingerprint(value)) for name, value in vars(cell).items() if not name.startswith("_")
    )
    hooks = tuple((*cell._forward_pre_hooks.values(), *cell._forward_hooks.values()))
    parameters = tuple(
        (name, tuple(p.shape), p.requires_grad) for name, p in cell._parameters.items() if p is not None
    )
    buffers = tuple((name, fingerprint(b)) for name, b in cell._buffers.items())
    modules = tuple((name, type(m), m.training) for name, m in cell._modules.items() if m is not None)
    return (cls, methods, attributes, hooks, parameters, buffers, modules)


FINGERPRINT_ELEMENTS = 2**16  # a tensor up to this size is known by its values, a larger one by identity


def fingerprint(value: object) -> object:
    """A hashable stand-in for an attribute's value. A tensor: its shape, dtype, requires_grad and its
    values (up to FINGERPRINT_ELEMENTS; a larger one by identity and version, which in-place changes
    advance); anything unhashable by its type and identity."""
    if isinstance(value, Tensor):
        known = (tuple(value.shape), value.dtype, value.requires_grad)
        if value.numel() <= FINGERPRINT_ELEMENTS:
            try:
                return (*known, hash(value.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()))
            except (RuntimeError, TypeError):  # a tensor whose bytes cannot be read (sparse, say)
                pass
        return (*known, id(value), value._version)
    try:
        hash(value)
    except TypeError:
        return (type(value), id(value))
    return value


def compare_with_forward(cell: LSTMCell, run_layer: Callable) -> bool:
    """Whether run_layer's output, final state and gradients (of a random weighting of them, with
    respect to the input, the initial state, every parameter and every other tensor of the cell that
    requires a gradient) equal those of stepping the cell.

    On a float64 copy whose parameters are drawn anew (so that agreement holds for the definition,
    not for the values the cell happens to have, such as a zero-initialized term), over 5 steps from
    a cell state large enough to reach the ranges a clip would act on; the global random generator is
    left as it was.
    """
    with (
        torch.random.fork_rng(devices=[]),
        torch.inference_mode(False),
        torch.enable_grad(),
        torch.autocast("cpu", enabled=False),
        # The check's own graph keeps its tensors to itself: torch.utils.checkpoint counts what the
        # layer saves, and its recomputation, which finds the check remembered, would count fewer.
        torch.autograd.graph.saved_tensors_hooks(lambda tensor: tensor, lambda tensor: tensor),
    ):
        generator = torch.Generator().manual_seed(0)
        try:
            double = copy.deepcopy(cell).to(device="cpu", dtype=torch.float64)
            with torch.no_grad():
                for parameter in double.parameters():
                    parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
        except Exception:  # a cell that cannot be copied (pruned, say) is not stood in for
            return False
        x = torch.randn(5, 2, cell.input_size, generator=generator, dtype=torch.float64)
        h, c = torch.randn(2, 2, cell.hidden_size, generator=generator, dtype=torch.float64)
        c = 5 * c
        weights = torch.randn(7, 2, cell.hidden_size, generator=generator, dtype=torch.float64)
        inputs = [x.requires_grad_(), h.requires_grad_(), c.requires_grad_()]
        inputs += [parameter for parameter in double.parameters() if parameter.requires_grad]
        inputs += [
            value
            for value in vars(double).values()
            if isinstance(value, Tensor) and value.requires_grad and value.is_leaf
        ]
        results = []
        for run in (run_step_by_step, run_layer):
            try:
                output, state = run(double, x, h, c)
                loss = (torch.cat((output, *(s.unsqueeze(0) for s in state))) * weights).sum()
                grads = torch.autograd.grad(loss, inputs, allow_unused=True, materialize_grads=True)
            except Exception:  # a runner that cannot run this cell does not compute it either
                return False
            results.append([output, *state, *grads])
    # NaN equals nothing: a check that runs into NaN on both sides has compared nothing.
    return all(
        actual.shape == expected.shape and torch.allclose(actual, expected, rtol=1e-9, atol=1e-9)
        for actual, expected in zip(*results, strict=True)
    )


def forward_is_overridden(cell: LSTMCell) -> bool:
    """Whether `cell.forward` is other code than LSTMCell.forward (a subclass's or the instance's own),
    which the specialized runners, built on `step`, would not run."""
    return type(cell).forward is not LSTMCell.forward or "forward" in vars(cell)


def special_mode() -> str | None:
    """The name of a mode in which the layer steps the cell plainly, or None in plain eager mode."""
    if torch.compiler.is_compiling():
        return "torch.compile or torch.export"
    if torch.jit.is_tracing():  # a custom autograd Function inside torch.jit.trace crashes the process
        return "torch.jit.trace"
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
        return {"cuda": torch.is_autocast_enabled, "cpu": torch.is_autocast_cpu_enabled}.get(
            device_type, lambda: False
        )()


def needs_gradient(x: Tensor, h: Tensor, c: Tensor, cell: LSTMCell) -> bool:
    tensors = [x, h, c, *cell.parameters()]
    return torch.is_grad_enabled() and any(tensor.requires_grad for tensor in tensors)


# ---------------------------------------------------------------------------------------------------
# Settings and input checks: a clear error before any arithmetic, instead of one from inside a matmul.


def cell_class_of(variant: str | type[LSTMCell]) -> type[LSTMCell]:
    if isinstance(variant, type) and issubclass(variant, LSTMCell):
        return variant
    if isinstance(variant, str) and variant in VARIANTS:
        return VARIANTS[variant]
    raise ValueError(f"variant must be one of {', '.join(VARIANTS)} or an LSTMCell subclass, got {variant!r}")


def check_convertible(cell: LSTMCell) -> None:
    """ValueError unless `cell` computes the standard equations, which torch.nn.LSTMCell implements."""
    if not agrees_with_forward(cell, run_bptt):
        raise ValueError(
            f"to_torch: {type(cell).__name__} does not compute the standard LSTM equations (it is a "
            "variant, a subclass or an edited cell), which torch.nn.LSTM cannot express"
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


def check_size(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def check_bool(name: str, value: bool) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_dropout(dropout: float, num_layers: int) -> float:
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
        raise TypeError(f"dropout must be a number, got {type(dropout).__name__}")
    if not 0 <= dropout <= 1:
        raise ValueError(f"dropout must be in [0, 1], got {dropout}")
    if dropout > 0 and num_layers == 1:
        warnings.warn(
            f"dropout={dropout} acts between layers, and num_layers=1 has none: it changes nothing",
            UserWarning,
            stacklevel=3,
        )
    return float(dropout)


def check_forget_bias(forget_bias: float | None, bias: bool, dtype: torch.dtype | None) -> float | None:
    if forget_bias is None:
        return None
    if isinstance(forget_bias, bool) or not isinstance(forget_bias, (int, float)):
        raise TypeError(f"forget_bias must be a number or None, got {type(forget_bias).__name__}")
    if not (abs(forget_bias) < math.inf):  # an int too large for a float compares too, unlike isfinite
        raise ValueError(f"forget_bias must be finite, got {forget_bias}")
    largest = torch.finfo(dtype or torch.get_default_dtype()).max
    if abs(forget_bias) > largest:
        raise ValueError(
            f"forget_bias must fit the parameters' dtype, {dtype or torch.get_default_dtype()} "
            f"(at most {largest:.4g} in size), got {str(forget_bias)[:24]}"
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
