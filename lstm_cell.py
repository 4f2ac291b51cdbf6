"""A hand-written LSTM whose parameters are the gate matrices of the textbook equations.

For an input x, the previous hidden state h and the previous cell state c, one time step is

    i  = σ(W_ii x + W_hi h + b_i)        input gate:      how much of the candidate to write
    f  = σ(W_if x + W_hf h + b_f)        forget gate:     how much of the old cell state to keep
    g  = tanh(W_ig x + W_hg h + b_g)     cell candidate:  what could be written
    o  = σ(W_io x + W_ho h + b_o)        output gate:     how much of the cell state to show
    c' = f ⊙ c + i ⊙ g
    h' = o ⊙ tanh(c')

`LSTMCell` computes exactly these lines, gate by gate. `LSTM` runs a stack of cells over a sequence
with the same call and return shapes as `torch.nn.LSTM`; for speed it stacks the four gate matrices
so that one matmul per step gives all four gates, and it carries its gradient back through time with
a hand-written backward pass (`LSTMLayerFunction`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

State = tuple[Tensor, Tensor]


class LSTMCell(nn.Module):
    """One LSTM time step: `(h', c') = cell(x, (h, c))` with the equations of this module's docstring.

    Shapes: x is (batch, input_size); h, c, h' and c' are (batch, hidden_size).
    Parameters: W_i* are (hidden_size, input_size), W_h* are (hidden_size, hidden_size), b_* are
    (hidden_size,). PyTorch keeps two biases per gate (b_ih + b_hh); one is enough.
    """

    def __init__(self, input_size: int, hidden_size: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.input_size = check_size("input_size", input_size)
        self.hidden_size = check_size("hidden_size", hidden_size)
        like = {"device": device, "dtype": dtype}
        self.W_ii = nn.Parameter(torch.empty(hidden_size, input_size, **like))
        self.W_if = nn.Parameter(torch.empty(hidden_size, input_size, **like))
        self.W_ig = nn.Parameter(torch.empty(hidden_size, input_size, **like))
        self.W_io = nn.Parameter(torch.empty(hidden_size, input_size, **like))
        self.W_hi = nn.Parameter(torch.empty(hidden_size, hidden_size, **like))
        self.W_hf = nn.Parameter(torch.empty(hidden_size, hidden_size, **like))
        self.W_hg = nn.Parameter(torch.empty(hidden_size, hidden_size, **like))
        self.W_ho = nn.Parameter(torch.empty(hidden_size, hidden_size, **like))
        self.b_i = nn.Parameter(torch.empty(hidden_size, **like))
        self.b_f = nn.Parameter(torch.empty(hidden_size, **like))
        self.b_g = nn.Parameter(torch.empty(hidden_size, **like))
        self.b_o = nn.Parameter(torch.empty(hidden_size, **like))
        self.reset_parameters()

    def forward(self, x: Tensor, state: State | None = None) -> State:
        check_input(x, f"(batch, input_size={self.input_size})", rank=2, like=self.W_ii, name="x")
        h, c = check_state(state, (x.shape[0], self.hidden_size), like=x)
        i, f, g, o = self.gates(x, h)
        c_next = f * c + i * g
        h_next = o * torch.tanh(c_next)
        return h_next, c_next

    def gates(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The input gate i, forget gate f, cell candidate g and output gate o for input x and state h."""
        i = torch.sigmoid(x @ self.W_ii.T + h @ self.W_hi.T + self.b_i)
        f = torch.sigmoid(x @ self.W_if.T + h @ self.W_hf.T + self.b_f)
        g = torch.tanh(x @ self.W_ig.T + h @ self.W_hg.T + self.b_g)
        o = torch.sigmoid(x @ self.W_io.T + h @ self.W_ho.T + self.b_o)
        return i, f, g, o

    def reset_parameters(self) -> None:
        # PyTorch's initialization, so that this cell and nn.LSTMCell start from the same distribution.
        bound = 1.0 / math.sqrt(self.hidden_size)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def stacked_weights(self) -> tuple[Tensor, Tensor, Tensor]:
        """(W_x, W_h, b): the gate matrices stacked in the order [o; i; f; g].

        One matmul with a stacked matrix computes all four gates at once. The sigmoid gates come
        first and the tanh candidate last, so each nonlinearity runs once over one contiguous slice;
        the output gate leads them because its gradient comes from dh and the others' from dc, which
        lets the backward pass compute each group with one call (see `backward_loop`).
        """
        W_x = torch.cat((self.W_io, self.W_ii, self.W_if, self.W_ig))
        W_h = torch.cat((self.W_ho, self.W_hi, self.W_hf, self.W_hg))
        b = torch.cat((self.b_o, self.b_i, self.b_f, self.b_g))
        return W_x, W_h, b

    @classmethod
    def from_torch(cls, cell: nn.LSTMCell) -> LSTMCell:
        """A cell computing exactly what `cell` computes, on its device and in its dtype."""
        if not isinstance(cell, nn.LSTMCell):
            raise TypeError(f"from_torch expected a torch.nn.LSTMCell, got {type(cell).__name__}")
        if not cell.bias:
            raise ValueError("from_torch expected a torch.nn.LSTMCell with bias=True, got bias=False")
        weight = cell.weight_ih
        ours = cls(cell.input_size, cell.hidden_size, device=weight.device, dtype=weight.dtype)
        ours.load_torch_weights(cell.weight_ih, cell.weight_hh, cell.bias_ih + cell.bias_hh)
        return ours

    def to_torch(self) -> nn.LSTMCell:
        """A `torch.nn.LSTMCell` computing exactly what this cell computes."""
        cell = nn.LSTMCell(self.input_size, self.hidden_size, device="meta", dtype=self.W_ii.dtype)
        # Made on the meta device and filled here: no random initialization, so no draw from the RNG.
        cell = cell.to_empty(device=self.W_ii.device)
        with torch.no_grad():
            cell.weight_ih.copy_(self.torch_weight_ih())
            cell.weight_hh.copy_(self.torch_weight_hh())
            cell.bias_ih.copy_(self.torch_bias())
            cell.bias_hh.zero_()
        return cell

    # PyTorch stacks its gate matrices in the order [i; f; g; o].
    def torch_weight_ih(self) -> Tensor:
        return torch.cat((self.W_ii, self.W_if, self.W_ig, self.W_io))

    def torch_weight_hh(self) -> Tensor:
        return torch.cat((self.W_hi, self.W_hf, self.W_hg, self.W_ho))

    def torch_bias(self) -> Tensor:
        return torch.cat((self.b_i, self.b_f, self.b_g, self.b_o))

    @torch.no_grad()
    def load_torch_weights(self, weight_ih: Tensor, weight_hh: Tensor, bias: Tensor) -> None:
        """Copy PyTorch's stacked [i; f; g; o] weights and summed bias into the named gate matrices."""
        ours = (self.W_ii, self.W_if, self.W_ig, self.W_io, self.W_hi, self.W_hf, self.W_hg, self.W_ho)
        ours += (self.b_i, self.b_f, self.b_g, self.b_o)
        theirs = (*weight_ih.chunk(4), *weight_hh.chunk(4), *bias.chunk(4))
        for parameter, value in zip(ours, theirs, strict=True):
            parameter.copy_(value)

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, hidden_size={self.hidden_size}"


class LSTM(nn.Module):
    """A stack of `LSTMCell`s run over a sequence, called like a single-direction `torch.nn.LSTM`.

    `output, (h_n, c_n) = lstm(x, (h_0, c_0))` with x of shape (seq_len, batch, input_size), or
    (batch, seq_len, input_size) when batch_first, or (seq_len, input_size) for one unbatched
    sequence. output holds the last layer's h at every step; h_n and c_n hold every layer's last
    state, (num_layers, batch, hidden_size). A missing state starts from zeros.

    `backward` chooses how gradients flow back through time: "bptt" (the hand-written backward pass
    of `LSTMLayerFunction`, the fast default) or "autograd" (PyTorch differentiates the forward loop).
    Both run under torch.compile, which traces the hand-written backward pass as well.
    """

    BACKWARDS = ("bptt", "autograd")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        batch_first: bool = False,
        *,
        backward: str = "bptt",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.input_size = check_size("input_size", input_size)
        self.hidden_size = check_size("hidden_size", hidden_size)
        self.num_layers = check_size("num_layers", num_layers)
        if not isinstance(batch_first, bool):
            raise TypeError(f"batch_first must be a bool, got {type(batch_first).__name__}")
        self.batch_first = batch_first
        self.backward = backward
        like = {"device": device, "dtype": dtype}
        self.cells = nn.ModuleList(
            LSTMCell(input_size if layer == 0 else hidden_size, hidden_size, **like)
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

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        if isinstance(x, Tensor) and x.dim() == 2:
            return self.forward_unbatched(x, state)
        like = self.cells[0].W_ii
        layout = "batch, seq_len" if self.batch_first else "seq_len, batch"
        check_input(x, f"({layout}, input_size={self.input_size})", rank=3, like=like, name="x")
        if self.batch_first:
            x = x.transpose(0, 1)
        seq_len, batch = x.shape[:2]
        if seq_len == 0 or batch == 0:
            raise ValueError(f"x must hold a non-empty sequence and batch, got shape {tuple(x.shape)}")
        h_0, c_0 = check_state(state, (self.num_layers, batch, self.hidden_size), like=x)

        run_layer = run_layer_autograd
        if self.backward == "bptt":
            run_layer = LSTMLayerFunction.apply
        layer_input, h_n, c_n = x, [], []
        for layer, cell in enumerate(self.cells):
            W_x, W_h, b = cell.stacked_weights()
            # The input projections of all time steps need no recurrence: one matmul does them all.
            x_proj = torch.addmm(b, layer_input.reshape(seq_len * batch, -1), W_x.T)
            layer_input, c_last = run_layer(x_proj.view(seq_len, batch, -1), h_0[layer], c_0[layer], W_h)
            h_n.append(layer_input[-1])
            c_n.append(c_last)

        output = layer_input.transpose(0, 1) if self.batch_first else layer_input
        if self.num_layers == 1:  # a view instead of a copy: one layer's stack is just a new first axis
            return output, (h_n[0].unsqueeze(0), c_n[0].unsqueeze(0))
        return output, (torch.stack(h_n), torch.stack(c_n))

    def forward_unbatched(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        """One sequence of shape (seq_len, input_size), its state (num_layers, hidden_size), if any."""
        batch_dim = 0 if self.batch_first else 1
        if state is not None:
            state = tuple(s.unsqueeze(1) if isinstance(s, Tensor) else s for s in check_pair(state))
        output, (h_n, c_n) = self(x.unsqueeze(batch_dim), state)
        return output.squeeze(batch_dim), (h_n.squeeze(1), c_n.squeeze(1))

    @classmethod
    def from_torch(cls, lstm: nn.LSTM) -> LSTM:
        """An LSTM computing exactly what `lstm` computes, on its device and in its dtype."""
        if not isinstance(lstm, nn.LSTM):
            raise TypeError(f"from_torch expected a torch.nn.LSTM, got {type(lstm).__name__}")
        unsupported = {
            "bidirectional=True": lstm.bidirectional,
            "bias=False": not lstm.bias,
            f"proj_size={lstm.proj_size}": lstm.proj_size > 0,
            f"dropout={lstm.dropout}": lstm.dropout > 0,
        }
        for setting, present in unsupported.items():
            if present:
                raise ValueError(
                    "from_torch expected a single-direction torch.nn.LSTM with bias, no projection "
                    f"and no dropout, got {setting}"
                )
        weight = lstm.weight_ih_l0
        ours = cls(
            lstm.input_size,
            lstm.hidden_size,
            lstm.num_layers,
            lstm.batch_first,
            device=weight.device,
            dtype=weight.dtype,
        )
        for layer, cell in enumerate(ours.cells):
            weight_ih, weight_hh, bias_ih, bias_hh = (
                getattr(lstm, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            )
            cell.load_torch_weights(weight_ih, weight_hh, bias_ih + bias_hh)
        return ours

    def to_torch(self) -> nn.LSTM:
        """A `torch.nn.LSTM` computing exactly what this LSTM computes."""
        like = self.cells[0].W_ii
        lstm = nn.LSTM(
            self.input_size,
            self.hidden_size,
            self.num_layers,
            batch_first=self.batch_first,
            device="meta",
            dtype=like.dtype,
        ).to_empty(device=like.device)
        with torch.no_grad():
            for layer, cell in enumerate(self.cells):
                getattr(lstm, f"weight_ih_l{layer}").copy_(cell.torch_weight_ih())
                getattr(lstm, f"weight_hh_l{layer}").copy_(cell.torch_weight_hh())
                getattr(lstm, f"bias_ih_l{layer}").copy_(cell.torch_bias())
                getattr(lstm, f"bias_hh_l{layer}").zero_()
        return lstm

    def extra_repr(self) -> str:
        return f"backward={self.backward!r}, batch_first={self.batch_first}"


# ---------------------------------------------------------------------------------------------------
# One layer over a whole sequence. Both functions take the input projections x_proj (seq_len, batch,
# 4 * hidden) = W_x x_t + b of every step, the layer's initial (h, c) and the stacked W_h, with the
# gates in the order [o; i; f; g], and return (every step's h, the last c).


def run_layer_autograd(x_proj: Tensor, h: Tensor, c: Tensor, W_h: Tensor) -> tuple[Tensor, Tensor]:
    """The LSTM equations step by step, differentiated by autograd."""
    hidden = h.shape[-1]
    outputs = []
    for x_proj_t in x_proj:
        gates = torch.addmm(x_proj_t, h, W_h.T)
        o, i, f = torch.sigmoid(gates[:, : 3 * hidden]).chunk(3, dim=1)
        g = torch.tanh(gates[:, 3 * hidden :])
        c = f * c + i * g
        h = o * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs), c


class LSTMLayerFunction(torch.autograd.Function):
    """The same computation as `run_layer_autograd`, with backpropagation through time by hand.

    Backward walks the steps in reverse, carrying dL/dh and dL/dc from step t+1 to step t. With a =
    the gate pre-activations and s' = the derivative of each nonlinearity (σ' = σ(1-σ), tanh' = 1-tanh²):

        dh_t  = dL/dh_t (from the output) + W_hᵀ da_{t+1}       h_t enters step t+1 through W_h
        dc_t  = dc_{t+1} ⊙ f_{t+1} + dh_t ⊙ o_t ⊙ tanh'(c_t)    c_t enters c_{t+1} and h_t
        da_o  = dh_t ⊙ tanh(c_t) ⊙ σ'(o)   da_i = dc_t ⊙ g_t ⊙ σ'(i)
        da_f  = dc_t ⊙ c_{t-1} ⊙ σ'(f)     da_g = dc_t ⊙ i_t ⊙ tanh'(g)

    and finally dW_h = Σ_t da_t h_{t-1}ᵀ, dx_proj_t = da_t, dh_0 = W_hᵀ da_1, dc_0 = dc_1 ⊙ f_1.

    At the published sizes each PyTorch call costs more than its arithmetic, so both loops make as
    few calls as they can, in inference mode. Forward keeps every step's gates, h and c. Backward
    first computes, for all steps at once, every factor above that does not depend on the carried
    gradients (`local_derivatives`), so that the loop itself (`backward_loop`) is four calls a step.
    """

    @staticmethod
    def forward(ctx, x_proj: Tensor, h_0: Tensor, c_0: Tensor, W_h: Tensor) -> tuple[Tensor, Tensor]:
        hidden = W_h.shape[1]
        W_h_T = W_h.T.contiguous()  # a matmul with a transposed view is slower at these sizes
        h, c = h_0, c_0
        all_gates, hs, cs = [], [h], [c]
        with torch.inference_mode():  # autograd's bookkeeping would cost each small call about 10%
            # One step's gates, overwritten by every step after a copy is kept; the views are made once.
            gates = x_proj.new_empty(x_proj.shape[1:])
            sigmoid_gates, g = gates[:, : 3 * hidden], gates[:, 3 * hidden :]
            o, i, f = sigmoid_gates.chunk(3, dim=1)
            for x_proj_t in x_proj:
                torch.addmm(x_proj_t, h, W_h_T, out=gates)
                sigmoid_gates.sigmoid_()
                g.tanh_()
                c = f * c
                c.addcmul_(i, g)
                h = torch.tanh(c).mul_(o)
                all_gates.append(gates.clone())
                hs.append(h)
                cs.append(c)
        hs, cs = torch.stack(hs), torch.stack(cs)  # outside inference mode: tensors autograd may keep
        ctx.save_for_backward(torch.stack(all_gates), hs, cs, W_h)
        return hs[1:], cs[-1]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx, grad_hs: Tensor, grad_c_last: Tensor
    ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor]:
        gates, hs, cs, W_h = ctx.saved_tensors
        by_dh, by_dc = local_derivatives(gates, cs)
        loop = backward_loop_for_compiler if torch.compiler.is_compiling() else backward_loop
        grad_gates, grad_c_0 = loop(grad_hs, grad_c_last, by_dh, by_dc, W_h)
        grad_h_0 = grad_gates[0] @ W_h if ctx.needs_input_grad[1] else None
        four_hidden, hidden = W_h.shape
        grad_W_h = grad_gates.view(-1, four_hidden).T @ hs[:-1].reshape(-1, hidden)
        return grad_gates, grad_h_0, grad_c_0 if ctx.needs_input_grad[2] else None, grad_W_h


def local_derivatives(gates: Tensor, cs: Tensor) -> tuple[Tensor, Tensor]:
    """Per step, what dh_t and what dc_t multiply in the backward loop, for every step at once.

    From every step's activated gates [o, i, f, g] and c: by_dh (seq_len, 2, batch, hidden) =
    [tanh(c_t) ⊙ σ'(o), o ⊙ tanh'(c_t)], which times dh_t gives da_o and dh_t's share of dc_t;
    by_dc (seq_len, 4, batch, hidden) = [g ⊙ σ'(i), c_{t-1} ⊙ σ'(f), i ⊙ tanh'(g), f], which times
    dc_t gives da_i, da_f, da_g and dc_t ⊙ f_t, for step t-1's dc.
    """
    hidden = gates.shape[-1] // 4
    sigmoids = gates[..., : 3 * hidden]
    o, i, f, g = gates.chunk(4, dim=2)
    tanh_c = cs[1:].tanh()
    slope_o, slope_i, slope_f = torch.addcmul(sigmoids, sigmoids, sigmoids, value=-1).chunk(3, dim=2)
    by_dh = torch.stack((tanh_c * slope_o, torch.addcmul(o, o * tanh_c, tanh_c, value=-1)), dim=1)
    by_dc = torch.stack((g * slope_i, cs[:-1] * slope_f, torch.addcmul(i, i * g, g, value=-1), f), dim=1)
    return by_dh, by_dc


def backward_loop(
    grad_hs: Tensor, grad_c_last: Tensor, by_dh: Tensor, by_dc: Tensor, W_h: Tensor
) -> tuple[Tensor, Tensor]:
    """Steps T..1 of the backward pass: every step's da (seq_len, batch, 4 * hidden), and dL/dc_0.

    Each step writes into one preallocated row of seven blocks per batch row,
    [0, da_o, da_i, da_f, da_g, dc_t ⊙ f_t, dc_t], through views chosen so that one addcmul
    [0, dc_{t+1} ⊙ f_{t+1}] + dh_t ⊙ by_dh gives [da_o, dc_t] and one mul dc_t ⊙ by_dc gives
    [da_i, da_f, da_g, dc_t ⊙ f_t]; da_t, the four blocks in the middle, is then one matrix.
    """
    batch, hidden = grad_hs.shape[1:]
    blocks = grad_hs.new_zeros(batch, 7, hidden)
    dc_carried = blocks[:, 0:6:5].transpose(0, 1)  # [0, dc_{t+1} ⊙ f_{t+1}]
    dh_products = blocks[:, 1:7:5].transpose(0, 1)  # [da_o, dc_t]
    dc_products = blocks[:, 2:6].transpose(0, 1)  # [da_i, da_f, da_g, dc_t ⊙ f_t]
    da, dc = blocks[:, 1:5].flatten(1), blocks[:, 6]
    blocks[:, 5] = grad_c_last
    dh = grad_hs.new_empty(batch, hidden)
    grad_gates = grad_hs.new_empty(len(grad_hs), batch, 4 * hidden)
    steps = zip(grad_hs.unbind(0), by_dh.unbind(0), by_dc.unbind(0), grad_gates.unbind(0), strict=True)
    with torch.inference_mode():  # as in the forward pass
        for grad_h, by_dh_t, by_dc_t, grad_gates_t in reversed(tuple(steps)):
            torch.addmm(grad_h, da, W_h, out=dh)
            torch.addcmul(dc_carried, dh, by_dh_t, out=dh_products)
            torch.mul(dc, by_dc_t, out=dc_products)
            grad_gates_t.copy_(da)
    return grad_gates, blocks[:, 5]


def backward_loop_for_compiler(
    grad_hs: Tensor, grad_c_last: Tensor, by_dh: Tensor, by_dc: Tensor, W_h: Tensor
) -> tuple[Tensor, Tensor]:
    """`backward_loop` written plainly, a new tensor for every result, for torch.compile to trace.

    torch.compile cannot trace writes into the strided views `backward_loop` uses; it fuses each
    step's elementwise work into one kernel by itself.
    """
    da = grad_hs.new_zeros(grad_hs.shape[1], W_h.shape[0])
    dc_f = grad_c_last
    das = []
    for t in reversed(range(len(grad_hs))):
        dh = torch.addmm(grad_hs[t], da, W_h)
        da_o, dc_from_dh = dh * by_dh[t]
        dc = dc_f + dc_from_dh
        da_i, da_f, da_g, dc_f = dc * by_dc[t]
        da = torch.cat((da_o, da_i, da_f, da_g), dim=1)
        das.append(da)
    return torch.stack(das[::-1]), dc_f


# ---------------------------------------------------------------------------------------------------
# Input checks: a clear error before any arithmetic, instead of a shape error from inside a matmul.


def check_size(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


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
