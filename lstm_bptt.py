"""Backpropagation through time (BPTT) by hand, for the standard LSTM equations of `lstm_cell`.

Forward, for t = 1 … T, with the four gates stacked [o; i; f; g] so that a_t is (batch, 4·hidden)
(the sigmoid gates side by side, so one call activates them; in backward, the three gates whose
gradient comes from dc_t side by side, so one call computes theirs):

    a_t = x_proj_t + W_h h_{t-1}          x_proj_t = W_x x_t + b, computed for all steps at once
    i, f, o = σ(a_i), σ(a_f), σ(a_o)      g = tanh(a_g)
    c_t = f ⊙ c_{t-1} + i ⊙ g
    h_t = o ⊙ tanh(c_t)

Backward, for t = T … 1, carrying dL/dh and dL/dc from step t+1 to step t, with σ' = σ(1 − σ) and
tanh' = 1 − tanh² (so every derivative is a product of values the forward pass already computed):

    dh_t = dL/dh_t + W_hᵀ da_{t+1}                          h_t reaches the loss directly and via step t+1
    dc_t = dc_{t+1} ⊙ f_{t+1} + dh_t ⊙ o_t ⊙ tanh'(c_t)     c_t reaches c_{t+1} and h_t
    da_i = dc_t ⊙ g_t ⊙ σ'(i_t)           da_f = dc_t ⊙ c_{t-1} ⊙ σ'(f_t)
    da_g = dc_t ⊙ i_t ⊙ tanh'(g_t)        da_o = dh_t ⊙ tanh(c_t) ⊙ σ'(o_t)

and finally dx_proj_t = da_t, dW_h = Σ_t da_tᵀ h_{t-1}, dh_0 = W_hᵀ da_1, dc_0 = dc_1 ⊙ f_1.

The term dc_{t+1} ⊙ f_{t+1} is the forget gate's path: from c_{t+1} back to c_t the gradient is only
multiplied by f, with no weight matrix and no squashing derivative in between, so where f stays near 1
it travels many steps undiminished (Hochreiter & Schmidhuber's "constant error carousel", with the
forget gate of Gers, Schmidhuber & Cummins 2000). In a plain RNN the same step multiplies by
W_hᵀ and tanh' every time, and the gradient shrinks or grows geometrically.

This is a specialization: `lstm_cell.LSTM` uses it only for a cell it has checked computes these
equations (`lstm_cell.agrees_with_forward`), and the tests pin it to torch.nn.LSTM and gradcheck.
It is first-order only: a backward pass with create_graph=True raises, naming the way out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def run_layer(
    x: Tensor,
    h_0: Tensor,
    c_0: Tensor,
    W_x: Tensor,
    W_h: Tensor,
    b: Tensor | None,
    parameters: Sequence[Tensor] = (),
):
    """One layer over a sequence: (every step's h (T, batch, hidden), (h_T, c_T)).

    x is (T, batch, input_size); h_0 and c_0 are (batch, hidden); W_x (4·hidden, input_size),
    W_h (4·hidden, hidden) and b (4·hidden,) or None hold the gates stacked [o; i; f; g].
    `parameters`: the tensors W_x, W_h and b were stacked from. Backward raises if one of them was
    changed in place after the forward pass, as autograd does for the tensors it saves (the stacked
    copies would hide the change and give the gradient at the old values).
    """
    flat = x.reshape(-1, x.shape[-1])
    x_proj = (flat @ W_x.T if b is None else torch.addmm(b, flat, W_x.T)).view(*x.shape[:2], -1)
    hs, c_last = LSTMLayerBPTT.apply(x_proj, h_0, c_0, W_h, tuple(parameters))
    return hs, (hs[-1].clone(), c_last)


class LSTMLayerBPTT(torch.autograd.Function):
    """The equations of this module's docstring, forward and backward, over a whole layer."""

    @staticmethod
    def forward(
        ctx, x_proj: Tensor, h_0: Tensor, c_0: Tensor, W_h: Tensor, parameters: tuple
    ) -> tuple[Tensor, Tensor]:
        ctx.parameters = parameters
        ctx.versions = [parameter._version for parameter in parameters]
        steps, batch, four_hidden = x_proj.shape
        hidden = four_hidden // 4
        gates = x_proj.new_empty(steps, batch, four_hidden)  # every step's activated [o, i, f, g]
        cs = x_proj.new_empty(steps + 1, batch, hidden)  # c_0 … c_T
        tanh_cs = x_proj.new_empty(steps, batch, hidden)  # tanh(c_1) … tanh(c_T)
        hs = x_proj.new_empty(steps, batch, hidden)  # h_1 … h_T
        cs[0] = c_0
        W_h_T = W_h.T.contiguous()  # a matmul with a transposed view is slower at these sizes
        # Every step's views, made by one call per tensor rather than by indexing at every step.
        x_proj_, gates_, c_, tanh_c_, h_ = (tensor.unbind(0) for tensor in (x_proj, gates, cs, tanh_cs, hs))
        o, i, f, g = (gate.unbind(0) for gate in gates.chunk(4, dim=2))
        sigmoid_gates = gates[..., : 3 * hidden].unbind(0)
        h = h_0
        with torch.inference_mode():  # skips autograd's bookkeeping, about a tenth of each small call
            for t in range(steps):
                torch.addmm(x_proj_[t], h, W_h_T, out=gates_[t])  # a_t
                sigmoid_gates[t].sigmoid_()  # o, i, f
                g[t].tanh_()
                torch.mul(f[t], c_[t], out=c_[t + 1]).addcmul_(i[t], g[t])  # c_t = f ⊙ c_{t-1} + i ⊙ g
                torch.tanh(c_[t + 1], out=tanh_c_[t])
                h = torch.mul(o[t], tanh_c_[t], out=h_[t])  # h_t = o ⊙ tanh(c_t)
        ctx.save_for_backward(gates, cs, tanh_cs, h_0, hs, W_h)
        return hs, cs[-1].clone()  # c_T of its own: changing it in place must not change what is saved

    @staticmethod
    def backward(ctx, grad_hs: Tensor, grad_c_last: Tensor):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "the hand-derived BPTT backward pass of lstm_bptt is first-order only, and this backward "
                "pass asked for a graph of the gradient (create_graph=True: gradients of gradients, "
                "gradient penalties, Hessian-vector products); build the LSTM with backward='autograd'"
            )
        changed = [p._version != v for p, v in zip(ctx.parameters, ctx.versions, strict=True)]
        if any(changed):
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an inplace "
                "operation: a parameter of the LSTM changed after the forward pass (lstm_bptt); run the "
                "forward pass again after changing it"
            )
        gates, cs, tanh_cs, h_0, hs, W_h = ctx.saved_tensors
        steps, batch, hidden = hs.shape
        da_o_by_dh, dc_by_dh, da_ifg_by_dc = local_derivatives(gates, cs, tanh_cs)
        f = gates[..., 2 * hidden : 3 * hidden]
        grad_gates = torch.empty_like(gates)  # every step's da = [da_o, da_i, da_f, da_g]
        grad_o = grad_gates[..., :hidden]
        grad_ifg = grad_gates.view(steps, batch, 4, hidden)[:, :, 1:]
        # Every step's views, made by one call per tensor (as in forward).
        per_step = (grad_hs, da_o_by_dh, dc_by_dh, da_ifg_by_dc, f, grad_o, grad_ifg, grad_gates)
        grad_h_, da_o_by_dh_, dc_by_dh_, da_ifg_by_dc_, f_, da_o_, da_ifg_, da_ = (
            t.unbind(0) for t in per_step
        )
        dc_carried = grad_c_last  # dc_{t+1} ⊙ f_{t+1}; at t = T, the gradient reaching c_T from outside
        with torch.inference_mode():  # as in forward
            for t in reversed(range(steps)):
                dh = grad_h_[t] if t == steps - 1 else torch.addmm(grad_h_[t], da_[t + 1], W_h)  # dh_t
                torch.mul(dh, da_o_by_dh_[t], out=da_o_[t])  # da_o
                dc = torch.addcmul(dc_carried, dh, dc_by_dh_[t])  # dc_t
                torch.mul(dc.unsqueeze(1), da_ifg_by_dc_[t], out=da_ifg_[t])  # da_i, da_f, da_g
                dc_carried = dc * f_[t]
        grad_h_0 = grad_gates[0] @ W_h
        h_previous = torch.cat((h_0.unsqueeze(0), hs[:-1]))
        grad_W_h = grad_gates.flatten(0, 1).T @ h_previous.flatten(0, 1)
        return grad_gates, grad_h_0, dc_carried, grad_W_h, None


def local_derivatives(gates: Tensor, cs: Tensor, tanh_cs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """What dh_t and dc_t are multiplied by in the backward loop, for every step at once.

    da_o_by_dh = tanh(c_t) ⊙ σ'(o_t) and dc_by_dh = o_t ⊙ tanh'(c_t), each (T, batch, hidden):
    times dh_t, da_o and dh_t's share of dc_t. da_ifg_by_dc (T, batch, 3, hidden) =
    [g_t ⊙ σ'(i_t), c_{t-1} ⊙ σ'(f_t), i_t ⊙ tanh'(g_t)]: times dc_t, da_i, da_f and da_g.
    """
    o, i, f, g = gates.chunk(4, dim=2)
    da_o_by_dh = tanh_cs * o * (1 - o)
    dc_by_dh = o * (1 - tanh_cs * tanh_cs)
    da_ifg_by_dc = torch.stack((g * i * (1 - i), cs[:-1] * f * (1 - f), i * (1 - g * g)), dim=2)
    return da_o_by_dh, dc_by_dh, da_ifg_by_dc
