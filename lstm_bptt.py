"""Backpropagation through time (BPTT) by hand: for the standard LSTM equations of `lstm_cell`, and
for any cell whose step works unit by unit, with that step's local derivatives taken by autograd.

Forward, for t = 1 … T, with the four gates stacked [o; i; f; g] so that a_t is (batch, 4·hidden)
(the sigmoid gates side by side, so one call activates them):

    a_t = x_proj_t + W_h h_{t-1}          x_proj_t = W_x x_t + b, computed for all steps at once
    i, f, o = σ(a_i), σ(a_f), σ(a_o)      g = tanh(a_g)
    c_t = f ⊙ c_{t-1} + i ⊙ g
    h_t = o ⊙ tanh(c_t)

Backward, for t = T … 1, carrying dL/dh and dL/dc from step t+1 to step t. Each derivative of a
squashing function is written through the value it produced, σ'(a) = σ(a)(1 − σ(a)) and
tanh'(a) = 1 − tanh²(a), so every factor is a product of values the forward pass already computed:

    dh_t = dL/dh_t + W_hᵀ da_{t+1}                              h_t reaches the loss and step t+1
    dc_t = dc_{t+1} ⊙ f_{t+1} + dh_t ⊙ o_t ⊙ (1 − tanh²(c_t))   c_t reaches c_{t+1} and h_t
    da_i = dc_t ⊙ g_t ⊙ i_t(1 − i_t)          da_f = dc_t ⊙ c_{t-1} ⊙ f_t(1 − f_t)
    da_g = dc_t ⊙ i_t ⊙ (1 − g_t²)            da_o = dh_t ⊙ tanh(c_t) ⊙ o_t(1 − o_t)

and finally dx_proj_t = da_t, dW_h = Σ_t da_tᵀ h_{t-1}, dh_0 = W_hᵀ da_1, dc_0 = dc_1 ⊙ f_1.

The term dc_{t+1} ⊙ f_{t+1} is the forget gate's path: from c_{t+1} back to c_t the gradient is only
multiplied by f, with no weight matrix and no squashing derivative in between, so where f stays near 1
it travels many steps undiminished (Hochreiter & Schmidhuber's "constant error carousel", with the
forget gate of Gers, Schmidhuber & Cummins 2000). In a plain RNN the same step multiplies by
W_hᵀ and tanh'(a) every time, and the gradient shrinks or grows geometrically.

Any cell whose step maps (a_t, c_{t-1}) to (c_t, h_t) unit by unit (hidden unit j's c_t and h_t depend
only on unit j's pre-activations and c_{t-1}: true of every variant in `lstm_cell`, peepholes included)
has the same recursion, with four local derivatives in place of the products above:

    dh_t = dL/dh_t + W_hᵀ da_{t+1}
    da_t = dh_t ⊙ ∂h_t/∂a_t + dc_t ⊙ ∂c_t/∂a_t
    dc_{t-1} = dh_t ⊙ ∂h_t/∂c_{t-1} + dc_t ⊙ ∂c_t/∂c_{t-1}

`LocalBPTT` takes those derivatives from autograd, for many steps at once, by differentiating the
cell's own step (so they are the cell's, not a copy of its equations); the gradient of the step's
own parameters (a peephole's p_i, say) comes the same way.

Both are specializations: `lstm_cell.LSTM` uses one only for a cell it has checked computes, forward
and backward, what stepping the cell with autograd computes (`lstm_cell.agrees_with_forward`), and the
tests pin them to torch.nn.LSTM and gradcheck. Both are first-order only: a backward pass with
create_graph=True raises, naming the way out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Step = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]  # (a_t, c_{t-1}) -> (c_t, h_t)
DERIVATIVE_STEPS = 256  # LocalBPTT differentiates the step this many time steps at a time (memory)


def run_layer(x: Tensor, h_0: Tensor, c_0: Tensor, parameters: Sequence[Tensor]):
    """One layer of the standard equations: (every step's h (T, batch, hidden), (h_T, c_T)).

    x is (T, batch, input_size); h_0 and c_0 are (batch, hidden). `parameters`: the gates' W_x
    (hidden, input_size) each, then their W_h (hidden, hidden), then their b (hidden,) unless there is
    no bias, every group in the gate order o, i, f, g. Backward raises if one of them was changed in
    place after the forward pass, as autograd does for every tensor it saves.
    """
    hs, h_last, c_last = LSTMLayerBPTT.apply(x, h_0, c_0, *parameters)
    return hs, (h_last, c_last)


def run_layer_local(
    step: Step,
    gates: int,
    x: Tensor,
    h_0: Tensor,
    c_0: Tensor,
    parameters: Sequence[Tensor],
    step_parameters: Sequence[Tensor],
):
    """One layer of a unit-wise `step`, with `LocalBPTT`: (every step's h, (h_T, c_T)).

    As `run_layer`, for `gates` gates in the order in which `step` splits a_t (batch, gates·hidden).
    `step_parameters`: the parameters `step` uses besides the gates' W_x, W_h and b.
    """
    count = len(parameters)
    hs, h_last, c_last = LocalBPTT.apply(step, gates, count, x, h_0, c_0, *parameters, *step_parameters)
    return hs, (h_last, c_last)


class LSTMLayerBPTT(torch.autograd.Function):
    """The equations of this module's docstring, forward and backward, over a whole layer.

    At the published sizes a PyTorch call, or a view of a tensor, costs more than its arithmetic, so
    each step makes as few of either as it can: in inference mode, into one step's buffers whose views
    are made once (benchmarks/README.md measures this against a plainer loop).
    """

    @staticmethod
    def forward(ctx, x: Tensor, h_0: Tensor, c_0: Tensor, *parameters: Tensor):
        W_x, W_h, b = ctx.weights = stack_weights(parameters, gates=4)
        hidden = W_h.shape[1]
        W_h_T = W_h.T.contiguous()  # a matmul with a transposed view is slower at these sizes
        h, c = h_0, c_0
        every_gates, hs, cs = [], [], [c_0]
        with torch.inference_mode():  # skips autograd's bookkeeping, about a tenth of each small call
            gates = x.new_empty(x.shape[1], 4 * hidden)  # one step's [o, i, f, g], kept by a copy
            sigmoid_gates, g = gates[:, : 3 * hidden], gates[:, 3 * hidden :]
            o, i, f = sigmoid_gates.chunk(3, dim=1)
            for x_proj_t in input_projections(x, W_x, b).unbind(0):
                torch.addmm(x_proj_t, h, W_h_T, out=gates)  # a_t
                sigmoid_gates.sigmoid_()  # o, i, f
                g.tanh_()
                c = f * c
                c.addcmul_(i, g)  # c_t = f ⊙ c_{t-1} + i ⊙ g
                h = torch.tanh(c).mul_(o)  # h_t = o ⊙ tanh(c_t)
                every_gates.append(gates.clone())
                hs.append(h)
                cs.append(c)
        return keep_for_backward(ctx, x, h_0, every_gates, cs, hs, parameters)

    @staticmethod
    def backward(ctx, grad_hs: Tensor, grad_h_last: Tensor, grad_c_last: Tensor):
        check_first_order()
        x, h_0, gates, cs, hs, *_ = ctx.saved_tensors  # raises after an in-place change
        W_h = ctx.weights[1]
        steps, batch, hidden = hs.shape
        by_dh, by_dc = local_derivatives(gates, cs)
        # One step's results, in a row of seven blocks per batch row, [0, da_o, da_i, da_f, da_g,
        # dc_t ⊙ f_t, dc_t], seen through views chosen so that one addcmul, [0, dc_{t+1} ⊙ f_{t+1}] +
        # dh_t ⊙ by_dh, gives [da_o, dc_t], and one mul, dc_t ⊙ by_dc, gives [da_i, da_f, da_g,
        # dc_t ⊙ f_t]: four calls a step, where separate results took six.
        blocks = grad_hs.new_zeros(batch, 7, hidden)
        carried = blocks[:, 0:6:5]  # [0, dc_{t+1} ⊙ f_{t+1}]
        dh_products = blocks[:, 1:7:5]  # [da_o, dc_t]
        dc_products = blocks[:, 2:6]  # [da_i, da_f, da_g, dc_t ⊙ f_t]
        da, dc = blocks[:, 1:5].flatten(1), blocks[:, 6:7]
        blocks[:, 5] = grad_c_last
        dh = grad_hs.new_empty(batch, hidden)
        dh_ = dh.unsqueeze(1)
        grad_gates = grad_hs.new_empty(steps, batch, 4 * hidden)  # every step's da = [da_o, da_i, da_f, da_g]
        grad_h = list(grad_hs.unbind(0))
        grad_h[-1] = grad_h[-1] + grad_h_last  # h_T reaches the loss through output and through h_n
        per_step = zip(grad_h, by_dh.unbind(0), by_dc.unbind(0), grad_gates.unbind(0), strict=True)
        with torch.inference_mode():  # as in forward
            for grad_h_t, by_dh_t, by_dc_t, da_t in reversed(tuple(per_step)):
                torch.addmm(grad_h_t, da, W_h, out=dh)  # dh_t (da still holds da_{t+1}, or zeros)
                torch.addcmul(carried, dh_, by_dh_t, out=dh_products)
                torch.mul(dc, by_dc_t, out=dc_products)
                da_t.copy_(da)
        return input_gradients(ctx, grad_gates, blocks[:, 5].clone(), x, h_0, hs, ctx.needs_input_grad[0])


def local_derivatives(gates: Tensor, cs: Tensor) -> tuple[Tensor, Tensor]:
    """What dh_t and dc_t are multiplied by in the backward loop, for every step at once.

    by_dh (T, batch, 2, hidden) = [tanh(c_t) ⊙ o_t(1 − o_t), o_t ⊙ (1 − tanh²(c_t))]: times dh_t, da_o
    and dh_t's share of dc_t. by_dc (T, batch, 4, hidden) = [g_t ⊙ i_t(1 − i_t), c_{t-1} ⊙ f_t(1 − f_t),
    i_t ⊙ (1 − g_t²), f_t]: times dc_t, da_i, da_f, da_g and the dc_t ⊙ f_t carried to step t-1.
    """
    o, i, f, g = gates.chunk(4, dim=2)
    tanh_cs = cs[1:].tanh()
    by_dh = torch.stack((tanh_cs * o * (1 - o), o * (1 - tanh_cs * tanh_cs)), dim=2)
    by_dc = torch.stack((g * i * (1 - i), cs[:-1] * f * (1 - f), i * (1 - g * g), f), dim=2)
    return by_dh, by_dc


class LocalBPTT(torch.autograd.Function):
    """The recursion of this module's docstring for a unit-wise `step`, its local derivatives by autograd.

    Forward runs `step` at every step without recording a graph. Backward differentiates `step`
    over DERIVATIVE_STEPS steps at a time, all their rows as one batch: since each unit's outputs
    depend on that unit's inputs only, the gradient of Σ h_t with respect to (a_t, c_{t-1}) is
    (∂h_t/∂a_t, ∂h_t/∂c_{t-1}), and likewise for c_t. The loop over time then makes three calls a
    step, and one more gradient of the same graph gives the step's own parameters theirs.
    """

    @staticmethod
    def forward(
        ctx, step: Step, gates: int, count: int, x: Tensor, h_0: Tensor, c_0: Tensor, *parameters: Tensor
    ):
        """`parameters`: the gates' `count` W_x, W_h and b (as in `run_layer`), then the step's own."""
        W_x, W_h, b = ctx.weights = stack_weights(parameters[:count], gates)
        ctx.step, ctx.gates, ctx.count = step, gates, count
        W_h_T = W_h.T.contiguous()
        h, c = h_0, c_0
        pre_activations, hs, cs = [], [], [c_0]
        with torch.inference_mode():
            for x_proj_t in input_projections(x, W_x, b).unbind(0):
                a = torch.addmm(x_proj_t, h, W_h_T)
                c, h = step(a, c)
                pre_activations.append(a)
                hs.append(h)
                cs.append(c)
        return keep_for_backward(ctx, x, h_0, pre_activations, cs, hs, parameters)

    @staticmethod
    def backward(ctx, grad_hs: Tensor, grad_h_last: Tensor, grad_c_last: Tensor):
        check_first_order()
        x, h_0, pre_activations, cs, hs, *parameters = ctx.saved_tensors  # raises after an in-place change
        step_parameters = parameters[ctx.count :]
        W_h = ctx.weights[1]
        steps, batch, hidden = hs.shape
        gates = ctx.gates
        grad_h = list(grad_hs.unbind(0))
        grad_h[-1] = grad_h[-1] + grad_h_last
        rows = grad_hs.new_empty(steps, batch, gates + 1, hidden)  # every step's [da_t, dc_{t-1}]
        # The step's own parameters that train (a frozen one gets no gradient), each gradient summed over
        # the chunks; it needs every step's dh_t and dc_t.
        trained = [parameter for parameter in step_parameters if parameter.requires_grad]
        grad_trained = [torch.zeros_like(parameter) for parameter in trained]
        if trained:
            dhs, dcs = torch.empty_like(hs), torch.empty_like(hs)
        dc, da_next = grad_c_last, None
        for stop in range(steps, 0, -DERIVATIVE_STEPS):
            start = max(stop - DERIVATIVE_STEPS, 0)
            with torch.enable_grad():
                a = pre_activations[start:stop].detach().requires_grad_()
                c_previous = cs[start:stop].detach().requires_grad_()
                c_next, h_next = ctx.step(a.flatten(0, 1), c_previous.flatten(0, 1))
                by_dh = unit_derivatives(h_next, (a, c_previous), gates, hidden)
                by_dc = unit_derivatives(c_next, (a, c_previous), gates, hidden)
            with torch.inference_mode():
                for t in reversed(range(start, stop)):
                    dh = grad_h[t] if da_next is None else torch.addmm(grad_h[t], da_next, W_h)
                    row = torch.mul(dh.unsqueeze(1), by_dh[t - start], out=rows[t])
                    row.addcmul_(dc.unsqueeze(1), by_dc[t - start])  # [da_t, dc_{t-1}]
                    if trained:
                        dhs[t], dcs[t] = dh, dc
                    da_next, dc = row[:, :gates].flatten(1), row[:, gates]
            if trained:
                outputs = (c_next, h_next)
                grads = (dcs[start:stop].flatten(0, 1), dhs[start:stop].flatten(0, 1))
                for total, part in zip(grad_trained, gradients(outputs, trained, grads), strict=True):
                    total += part
        grad_gates = rows[:, :, :gates].flatten(2)
        needs_x = ctx.needs_input_grad[3]
        of_trained = iter(grad_trained)
        return (
            None,
            None,
            None,
            *input_gradients(ctx, grad_gates, dc.clone(), x, h_0, hs, needs_x),
            *(next(of_trained) if p.requires_grad else None for p in step_parameters),
        )


def unit_derivatives(output: Tensor, inputs: tuple[Tensor, Tensor], gates: int, hidden: int) -> Tensor:
    """(∂output/∂a, ∂output/∂c_previous) of a unit-wise step, as (steps, batch, gates + 1, hidden)."""
    by_a, by_c = gradients((output,), inputs, (torch.ones_like(output),))
    return torch.cat((by_a.unflatten(-1, (gates, hidden)), by_c.unsqueeze(2)), dim=2)


def gradients(outputs, inputs, grad_outputs) -> tuple[Tensor, ...]:
    """torch.autograd.grad, keeping the graph, with zeros for an input an output does not use."""
    return torch.autograd.grad(
        outputs, inputs, grad_outputs, retain_graph=True, allow_unused=True, materialize_grads=True
    )


# ---------------------------------------------------------------------------------------------------
# What both share: the stacked weights, the input projections and the gradients they give.


def keep_for_backward(
    ctx, x: Tensor, h_0: Tensor, per_step: list[Tensor], cs: list[Tensor], hs: list[Tensor], parameters
) -> tuple[Tensor, Tensor, Tensor]:
    """The end of a forward pass: every step's tensors stacked (outside inference mode, so that autograd
    may save them), saved with the inputs and the parameters (x, h_0, per_step, cs, hs, *parameters),
    and (hs, h_T, c_T) returned, h_T and c_T of their own: changing one in place must not change what
    is saved."""
    per_step_, cs_, hs_ = (torch.stack(tensors) for tensors in (per_step, cs, hs))
    ctx.save_for_backward(x, h_0, per_step_, cs_, hs_, *parameters)
    return hs_, hs_[-1].clone(), cs_[-1].clone()


def stack_weights(parameters: Sequence[Tensor], gates: int) -> tuple[Tensor, Tensor, Tensor | None]:
    """(W_x, W_h, b): each group of `gates` parameters (W_x's, W_h's, b's) concatenated; b is None
    when there are only two groups (no bias)."""
    W_x, W_h, *b = (
        torch.cat(parameters[start : start + gates]) for start in range(0, len(parameters), gates)
    )
    return W_x, W_h, b[0] if b else None


def input_projections(x: Tensor, W_x: Tensor, b: Tensor | None) -> Tensor:
    """W_x x_t + b for every step at once: (T, batch, gates·hidden)."""
    flat = x.reshape(-1, x.shape[-1])
    return (flat @ W_x.T if b is None else torch.addmm(b, flat, W_x.T)).view(*x.shape[:2], -1)


def input_gradients(
    ctx, grad_gates: Tensor, grad_c_0: Tensor, x: Tensor, h_0: Tensor, hs: Tensor, needs_x: bool
) -> tuple:
    """The gradients of a layer's inputs, (dx, dh_0, dc_0, then each gate's dW_x, dW_h and db), from
    every step's da (T, batch, gates·hidden): dx_t = W_xᵀ da_t, dh_0 = W_hᵀ da_1, dW_x = Σ_t da_tᵀ x_t,
    dW_h = Σ_t da_tᵀ h_{t-1}, db = Σ_t da_t."""
    W_x, W_h, b = ctx.weights
    gates = grad_gates.shape[-1] // W_h.shape[1]
    da = grad_gates.flatten(0, 1)
    grad_x = (da @ W_x).view_as(x) if needs_x else None
    h_previous = torch.cat((h_0.unsqueeze(0), hs[:-1])).flatten(0, 1)
    weights = [da.T @ x.flatten(0, 1), da.T @ h_previous] + ([da.sum(0)] if b is not None else [])
    return (
        grad_x,
        grad_gates[0] @ W_h,
        grad_c_0,
        *(part for weight in weights for part in weight.chunk(gates)),
    )


def check_first_order() -> None:
    """RuntimeError when a backward pass asks for a graph of the gradient, which neither path builds."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            "the hand-derived BPTT backward pass of lstm_bptt is first-order only, and this backward "
            "pass asked for a graph of the gradient (create_graph=True: gradients of gradients, "
            "gradient penalties, Hessian-vector products); build the LSTM with backward='autograd'"
        )
