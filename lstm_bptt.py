"""Backpropagation through time (BPTT) by hand, for one layer run by `lstm_cell.run_layer`.

Forward, for t = 1 … T, the cell's own code: its step maps the gates' pre-activations a_t =
W_x x_t + W_h h_{t-1} + b and c_{t-1} to (c_t, h_t); for the textbook cell, a_t = [a_i; a_f; a_g; a_o],

    i, f, o = σ(a_i), σ(a_f), σ(a_o)     g = tanh(a_g)     c_t = f ⊙ c_{t-1} + i ⊙ g     h_t = o ⊙ tanh(c_t)

Backward, for t = T … 1. Where unit j's c_t and h_t depend only on unit j's share of a_t and c_{t-1}
(every variant in `lstm_cell`, peepholes included), each step's Jacobians are diagonal, and the chain
rule works unit by unit, dc_t being c_t's gradient from the steps after t only (dc_T = ∂L/∂c_T):

    dh_t     = ∂L/∂h_t + W_hᵀ da_{t+1}                          h_t reaches the loss and step t+1
    da_t     = dh_t ⊙ ∂h_t/∂a_t     + dc_t ⊙ ∂c_t/∂a_t
    dc_{t-1} = dh_t ⊙ ∂h_t/∂c_{t-1} + dc_t ⊙ ∂c_t/∂c_{t-1}

and the weights' gradients follow from every da_t (`weight_gradients`). For the textbook step the local
derivatives are written out (`textbook_derivatives`), each through the value it produced, σ' = σ(1 − σ)
and tanh' = 1 − tanh²; with ∂h_t/∂c_t = o ⊙ (1 − tanh²(c_t)):

    ∂c_t/∂[a_i, a_f, a_g, a_o, c_{t-1}] = [g ⊙ i(1 − i), c_{t-1} ⊙ f(1 − f), i ⊙ (1 − g²), 0, f]
    ∂h_t/∂[a_i, a_f, a_g, a_o, c_{t-1}] = ∂h_t/∂c_t ⊙ ∂c_t/∂[…], but ∂h_t/∂a_o = tanh(c_t) ⊙ o(1 − o)

The term dc_t ⊙ f is the forget gate's path: from c_t back to c_{t-1} the gradient is only multiplied
by f, with no weight matrix and no squashing derivative in between, so where f stays near 1 it travels
many steps undiminished (Hochreiter & Schmidhuber's "constant error carousel", with the forget gate of
Gers, Schmidhuber & Cummins 2000); a plain RNN multiplies by W_hᵀ and tanh' at every step instead.

For the variants `lstm_cell` ships they are their step's own (`step_derivatives`): autograd
differentiates the step once for many time steps, on the values the forward pass computed. Both are
used only for cells known, from their class, source and instance, to be code shipped in `lstm_cell`
(`lstm_cell.shipped_path`), whose steps are deterministic, unit by unit and free of side effects; any
other cell trains by autograd. First-order only: a backward pass with create_graph=True raises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

DERIVATIVE_STEPS = 256  # the local derivatives are taken this many time steps at a time (memory)
Step = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]  # (a_t, c_{t-1}) -> (c_t, h_t), rows of a batch


def run_layer(
    run: Callable, step: Step | None, gates: int, x: Tensor, h_0: Tensor, c_0: Tensor, parameters, others
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """`run(x, h_0, c_0, record)` (a cell's lstm_cell.run_layer) backpropagated by hand: (hs, (h_T, c_T)).

    `step`: the shipped variant's step, whose local derivatives autograd takes, or None for the textbook
    cell's written-out ones.
    `parameters`: the gates' W_x (hidden, input_size), then W_h (hidden, hidden), then b (hidden,) unless
    there is no bias, each group in the order of the `gates` gates in a_t; `others`: all else the step
    may train (a peephole's p_i). Backward raises after an in-place change of one, as autograd does.
    """
    hs, h, c = LayerBPTT.apply(run, step, gates, len(parameters), x, h_0, c_0, *parameters, *others)
    return hs, (h, c)


class LayerBPTT(torch.autograd.Function):
    """The recursion of this module's docstring over one layer."""

    @staticmethod
    def forward(ctx, run: Callable, step: Step | None, gates: int, count: int, x, h_0, c_0, *tensors):
        ctx.step, ctx.gates, ctx.count = step, gates, count
        ctx.others = tensors[count:]  # the step's own tensors, as the step reads them, to differentiate by
        kept = []  # every step's a_t and c_t, and nothing else of the step's
        with torch.inference_mode():  # no autograd bookkeeping: about a tenth of each small call
            hs, (h, c) = run(x, h_0, c_0, lambda steps: kept.append((steps["a"], steps["c"])))
        # Copied outside inference mode, so that autograd may keep them; h_T and c_T of their own.
        hs, a, cs = hs.clone(), torch.stack([a for a, _ in kept]), torch.stack([c_0, *(c for _, c in kept)])
        ctx.save_for_backward(x, h_0, a, cs, hs, *tensors)
        return hs, h.clone(), c.clone()

    @staticmethod
    def backward(ctx, grad_hs: Tensor, grad_h_T: Tensor, grad_c_T: Tensor):
        check_first_order()
        x, h_0, a, cs, hs, *tensors = ctx.saved_tensors  # raises after an in-place change
        W_x, W_h, b = stack_weights(tensors[: ctx.count], ctx.gates)
        grad_h = grad_hs.clone()
        grad_h[-1] += grad_h_T  # h_T reaches the loss through output and through h_n
        steps, batch, hidden = hs.shape
        rows = grad_hs.new_empty(steps, batch, ctx.gates + 1, hidden)  # every step's [da_t, dc_{t-1}]
        das, dc_rows = rows[:, :, : ctx.gates].flatten(2), rows[:, :, ctx.gates :]  # views of their parts
        dhs = grad_hs.new_empty(steps, batch, hidden)  # every step's dh_t, also as (batch, 1, hidden) views
        trained = [index for index, tensor in enumerate(ctx.others) if tensor.requires_grad]
        own = [0] * len(ctx.others)  # the gradients of what the step uses besides a_t and c_{t-1}
        da, dc = None, grad_c_T.unsqueeze(1)
        for start in reversed(range(0, steps, DERIVATIVE_STEPS)):
            stop = min(start + DERIVATIVE_STEPS, steps)
            chunk = (a[start:stop], cs[start:stop], cs[start + 1 : stop + 1], hs[start:stop])
            if ctx.step is None:
                by_dh, by_dc = textbook_derivatives(*chunk[:3])
            else:
                by_dh, by_dc, outputs = step_derivatives(ctx.step, ctx.gates, *chunk)
            dcs = []
            views = (dhs[start:stop], dhs[start:stop].unsqueeze(2), rows[start:stop], das[start:stop])
            per_step = zip(grad_h[start:stop], by_dh, by_dc, *views, dc_rows[start:stop], strict=True)
            with torch.inference_mode():  # as in forward
                for grad_h_t, by_dh_t, by_dc_t, dh, dh_column, row, da_t, dc_t in reversed(tuple(per_step)):
                    if da is None:
                        dh.copy_(grad_h_t)
                    else:
                        torch.addmm(grad_h_t, da, W_h, out=dh)
                    dcs.append(dc)
                    torch.mul(dh_column, by_dh_t, out=row).addcmul_(dc, by_dc_t)
                    da, dc = da_t, dc_t
            if ctx.step is not None and trained:
                grads = (torch.stack(dcs[::-1]).squeeze(2), dhs[start:stop])  # rows in the chunk's order
                parts = gradients(outputs, [ctx.others[index] for index in trained], grads)
                for index, part in zip(trained, parts, strict=True):
                    own[index] = own[index] + part
        grad_x, grad_h_0, *found = weight_gradients(das, x, h_0, hs, W_x, W_h, b, ctx.needs_input_grad[4])
        found += [part if index in trained else None for index, part in enumerate(own)]
        return (None,) * 4 + (grad_x, grad_h_0, dc.squeeze(1).clone(), *found)


def textbook_derivatives(a: Tensor, c_previous: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """(∂h_t, ∂c_t) by [a_i, a_f, a_g, a_o, c_{t-1}] for the textbook step, from a (steps, batch,
    4·hidden), c_{t-1} and c_t (steps, batch, hidden): each (steps, batch, 5, hidden)."""
    i, f, g, o = a.chunk(4, dim=-1)
    i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
    tanh_c = c.tanh()
    by_dc = torch.stack(
        (g * i * (1 - i), c_previous * f * (1 - f), i * (1 - g * g), torch.zeros_like(o), f), 2
    )
    by_dh = by_dc * (o * (1 - tanh_c * tanh_c)).unsqueeze(2)
    by_dh[:, :, 3] = tanh_c * o * (1 - o)
    return by_dh, by_dc


def step_derivatives(step: Step, gates: int, a: Tensor, c_previous: Tensor, c: Tensor, h: Tensor):
    """(∂h_t, ∂c_t) by [a_t's gates, c_{t-1}], each (steps, batch, gates + 1, hidden), and the step's
    outputs (c_t, h_t), by autograd on the step run on the forward pass's a_t and c_{t-1}: all its rows
    as one batch, since each unit's outputs depend on that unit's inputs only."""
    inputs = (a.detach().requires_grad_(), c_previous.detach().requires_grad_())
    with torch.enable_grad():
        c_new, h_new = step(inputs[0].flatten(0, 1), inputs[1].flatten(0, 1))
        outputs = (c_new.view_as(c), h_new.view_as(h))
    ones = (torch.ones_like(h),)
    by_dh, by_dc = (unit_layout(gradients((output,), inputs, ones), gates) for output in outputs[::-1])
    return by_dh, by_dc, outputs


def unit_layout(by: tuple[Tensor, Tensor], gates: int) -> Tensor:
    """A gradient by (a, c_{t-1}) laid out (steps, batch, gates + 1, hidden), one block per gate and c."""
    return torch.cat((by[0].unflatten(-1, (gates, -1)), by[1].unsqueeze(2)), dim=2)


def gradients(outputs, inputs, grad_outputs) -> tuple[Tensor, ...]:
    """torch.autograd.grad, keeping the graph, with zeros for an input an output does not use."""
    return torch.autograd.grad(
        outputs, inputs, grad_outputs, retain_graph=True, allow_unused=True, materialize_grads=True
    )


# The stacked weights, the input projections and the gradients they give: for both kinds of derivatives.


def stack_weights(parameters: Sequence[Tensor], gates: int) -> tuple[Tensor, Tensor, Tensor | None]:
    """(W_x, W_h, b): each group of `gates` parameters (W_x's, W_h's, b's) concatenated; b is None
    when there are only two groups (no bias)."""
    W_x, W_h, *b = (torch.cat(parameters[k : k + gates]) for k in range(0, len(parameters), gates))
    return W_x, W_h, b[0] if b else None


def input_projections(x: Tensor, W_x: Tensor, b: Tensor | None) -> Tensor:
    """W_x x_t + b for every step at once: (T, batch, gates·hidden)."""
    flat = x.reshape(-1, x.shape[-1])
    return (flat @ W_x.T if b is None else torch.addmm(b, flat, W_x.T)).view(*x.shape[:2], -1)


def weight_gradients(grad_a: Tensor, x: Tensor, h_0: Tensor, hs, W_x, W_h, b, needs_x: bool) -> list:
    """[dx, dh_0, then each gate's dW_x, dW_h and db] from every step's da (T, batch, gates·hidden):
    dx_t = W_xᵀ da_t, dh_0 = W_hᵀ da_1, dW_x = Σ_t da_tᵀ x_t, dW_h = Σ_t da_tᵀ h_{t-1}, db = Σ_t da_t."""
    gates = grad_a.shape[-1] // W_h.shape[1]
    da = grad_a.flatten(0, 1)
    h_previous = torch.cat((h_0.unsqueeze(0), hs[:-1])).flatten(0, 1)
    weights = [da.T @ x.flatten(0, 1), da.T @ h_previous] + ([da.sum(0)] if b is not None else [])
    return [
        (da @ W_x).view_as(x) if needs_x else None,
        grad_a[0] @ W_h,
        *(part for weight in weights for part in weight.chunk(gates)),
    ]


def check_first_order() -> None:
    """RuntimeError when a backward pass asks for a graph of the gradient, which lstm_bptt does not build."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            "the hand-derived BPTT backward pass of lstm_bptt is first-order only, and this backward pass "
            "asked for a graph of the gradient (create_graph=True: gradients of gradients, gradient "
            "penalties, Hessian-vector products); build the LSTM with backward='autograd'"
        )
