"""lstm_bptt's hand-derived BPTT written plainly, for bench_lstm to measure what its buffers save.

`lstm_bptt.LSTMLayerBPTT` computes each step into a scratch buffer whose views are made once, and its
backward loop writes into a row of seven blocks seen through strided views, so that a step takes four
calls. Here the same equations make a new tensor for every result and take every step's views where
they are used: the plain way to write them. bench_lstm times both ("LSTM standard, bptt" and
"LSTM standard, bptt with plain loops"); tests/test_bench_lstm.py checks that both compute the same.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lstm_bptt
from lstm_cell import LSTM, gate_parameters


class PlainLSTMLayerBPTT(torch.autograd.Function):
    """lstm_bptt.LSTMLayerBPTT's inputs, outputs and equations, with plainly written loops."""

    @staticmethod
    def forward(ctx, x: Tensor, h_0: Tensor, c_0: Tensor, *parameters: Tensor):
        W_x, W_h, b = ctx.weights = lstm_bptt.stack_weights(parameters, gates=4)
        hidden = W_h.shape[1]
        h, c = h_0, c_0
        every_gates, hs, cs = [], [], [c_0]
        with torch.inference_mode():
            for x_proj_t in lstm_bptt.input_projections(x, W_x, b):
                a = torch.addmm(x_proj_t, h, W_h.T)
                o, i, f = a[:, : 3 * hidden].sigmoid().chunk(3, dim=1)
                g = a[:, 3 * hidden :].tanh()
                c = f * c + i * g
                h = o * c.tanh()
                every_gates.append(torch.cat((o, i, f, g), dim=1))
                hs.append(h)
                cs.append(c)
        return lstm_bptt.keep_for_backward(ctx, x, h_0, every_gates, cs, hs, parameters)

    @staticmethod
    def backward(ctx, grad_hs: Tensor, grad_h_last: Tensor, grad_c_last: Tensor):
        x, h_0, gates, cs, hs, *_ = ctx.saved_tensors
        W_h = ctx.weights[1]
        by_dh, by_dc = lstm_bptt.local_derivatives(gates, cs)
        grad_h = list(grad_hs.unbind(0))
        grad_h[-1] = grad_h[-1] + grad_h_last
        da, dc_carried, every_da = None, grad_c_last, []
        with torch.inference_mode():
            for t in reversed(range(len(hs))):
                dh = grad_h[t] if da is None else torch.addmm(grad_h[t], da, W_h)
                da_o = dh * by_dh[t, :, 0]
                dc = dc_carried + dh * by_dh[t, :, 1]
                da_i, da_f, da_g, dc_carried = (dc.unsqueeze(1) * by_dc[t]).unbind(1)
                da = torch.cat((da_o, da_i, da_f, da_g), dim=1)
                every_da.append(da)
        grad_gates = torch.stack(every_da[::-1])
        return lstm_bptt.input_gradients(ctx, grad_gates, dc_carried, x, h_0, hs, ctx.needs_input_grad[0])


class PlainBPTTLayer(nn.Module):
    """A one-layer `LSTM` (standard cell, no batch_first) run by PlainLSTMLayerBPTT: (output, (h_n, c_n))."""

    def __init__(self, lstm: LSTM) -> None:
        super().__init__()
        if lstm.num_layers != 1 or lstm.batch_first or lstm.variant != "standard":
            raise ValueError("PlainBPTTLayer runs one layer of the standard cell, sequence first")
        self.lstm = lstm

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        cell = self.lstm.cells[0]
        h_0 = c_0 = x.new_zeros(x.shape[1], cell.hidden_size)
        hs, h_n, c_n = PlainLSTMLayerBPTT.apply(x, h_0, c_0, *gate_parameters(cell, "oifg"))
        return hs, (h_n.unsqueeze(0), c_n.unsqueeze(0))
