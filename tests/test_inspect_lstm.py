"""Tests of inspect_lstm.py on tiny models: a shipped variant and a cell of one's own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

import inspect_lstm
from lstm_cell import LSTM, LSTMCell


class HardSigmoidInputCell(LSTMCell):
    """A cell of one's own: a hard sigmoid for the input gate."""

    def input_gate(self, a, c):
        return nn.functional.hardsigmoid(a["i"])


@pytest.fixture(params=["cifg", HardSigmoidInputCell], ids=["cifg", "own cell"])
def lstm(request) -> LSTM:
    torch.manual_seed(0)
    return LSTM(1, 3, batch_first=True, variant=request.param)


def bits(batch: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 2, (batch, seq_len, 1), generator=torch.Generator().manual_seed(seed)).float()


def test_plot_gates_draws_every_gate_and_state_of_one_sequence(lstm: LSTM) -> None:
    figure = inspect_lstm.plot_gates(lstm, bits(1, 7)[0], title="seven bits")
    assert isinstance(figure, Figure)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[0] == "seven bits"
    assert [title.split()[0] for title in titles[1:7]] == [
        "input",
        "forget",
        "cell",
        "output",
        "cell",
        "hidden",
    ]
    # Each heat map is units × steps of the trace.
    trace = lstm.trace(bits(1, 7))[0]
    image = figure.axes[1].images[0].get_array()
    assert image.shape == (3, 7)
    np.testing.assert_allclose(image, trace["i"][0].T.detach().numpy(), rtol=1e-6)


def test_plot_gates_refuses_what_it_cannot_draw(lstm: LSTM) -> None:
    with pytest.raises(ValueError, match="one sequence"):
        inspect_lstm.plot_gates(lstm, bits(2, 5))
    with pytest.raises(TypeError, match="hand-written"):
        inspect_lstm.plot_gates(nn.LSTM(1, 3), bits(1, 5)[0])


def test_saturation_shares_are_per_step_and_see_a_saturated_forget_gate() -> None:
    torch.manual_seed(0)
    lstm = LSTM(1, 4, batch_first=True, forget_bias=20.0)
    shares = inspect_lstm.saturation_shares(lstm, bits(8, 6))
    assert set(shares) == {"i", "f", "o", "tanh c"}
    assert all(share.shape == (6,) and ((share >= 0) & (share <= 1)).all() for share in shares.values())
    assert torch.all(shares["f"] == 1.0)  # σ(20 + small) > 0.95 everywhere


def exact_counter() -> LSTM:
    """One noaf unit whose gates are saturated open and whose candidate is tanh(40 x): c counts the ones."""
    lstm = LSTM(1, 1, batch_first=True, variant="noaf")
    cell = lstm.cells[0]
    with torch.no_grad():
        for parameter in lstm.parameters():
            parameter.zero_()
        for bias in (cell.b_i, cell.b_f, cell.b_o):
            bias.fill_(40.0)
        cell.W_ig.fill_(40.0)
    return lstm


def test_unit_fits_name_what_a_unit_follows_only_when_it_alone_explains_it() -> None:
    x = bits(50, 12)
    ones = x[..., 0].cumsum(dim=1)
    steps = torch.arange(1, 13.0).expand_as(ones)
    (fit,) = inspect_lstm.unit_fits(exact_counter(), x, {"ones": ones, "steps": steps})
    assert fit.follows == "ones" and fit.r_squared == pytest.approx(1.0)
    assert fit.coefficients["ones"] == pytest.approx(1.0, abs=1e-6)
    assert fit.coefficients["steps"] == pytest.approx(0.0, abs=1e-6)
    # A feature that is noise explains nothing: nothing is followed.
    noise = torch.randn(ones.shape, generator=torch.Generator().manual_seed(1))
    (fit,) = inspect_lstm.unit_fits(exact_counter(), x, {"noise": noise})
    assert fit.follows is None and fit.r_squared < 0.1
    with pytest.raises(ValueError, match="shape"):
        inspect_lstm.unit_fits(exact_counter(), x, {"ones": ones[:, :5]})


def test_unit_fits_cover_every_unit(lstm: LSTM) -> None:
    x = bits(20, 10)
    fits = inspect_lstm.unit_fits(lstm, x, {"ones": x[..., 0].cumsum(dim=1)}, state="h")
    assert [fit.unit for fit in fits] == [0, 1, 2]
    assert all(0 <= fit.r_squared <= 1 for fit in fits)


def test_gradient_reach_is_that_of_stepping_the_cell_by_hand(lstm: LSTM) -> None:
    x = bits(6, 9)
    head = nn.Linear(3, 1)
    counts = x.sum(dim=(1, 2))

    def loss_of(h, c):
        return nn.functional.mse_loss(head(h[:, -1]).squeeze(-1), counts)

    reach = inspect_lstm.gradient_reach(lstm, x, loss_of)
    # By hand: the cell's own forward at every step, each state kept for its gradient.
    cell, h = lstm.cells[0], torch.zeros(6, 3)
    c, states = torch.zeros(6, 3), []
    for t in range(9):
        h, c = cell(x[:, t], (h, c))
        states += [h, c]
    gradients = torch.autograd.grad(loss_of(h.unsqueeze(1), None), states)
    expected_h = [g.norm(dim=-1).mean().item() for g in gradients[0::2]]
    expected_c = [g.norm(dim=-1).mean().item() for g in gradients[1::2]]
    np.testing.assert_allclose(reach["h"], expected_h, rtol=1e-5)
    np.testing.assert_allclose(reach["c"], expected_c, rtol=1e-5)
    assert all(parameter.grad is None for parameter in lstm.parameters())  # nothing accumulated


def test_force_gate_holds_the_gate_in_a_copy_and_leaves_the_model(lstm: LSTM) -> None:
    x = bits(4, 6)
    before = lstm(x)[0].detach()
    forced = inspect_lstm.force_gate(lstm, "f", 0.0)
    trace = forced.trace(x)[0]
    assert torch.all(trace["f"] == 0.0)
    # With f = 0 the cell state is what this step writes: c_t = i_t ⊙ g_t.
    torch.testing.assert_close(trace["c"], trace["i"] * trace["g"])
    assert torch.equal(lstm(x)[0], before)
    assert forced.training_path() == "autograd"  # an edited cell trains by autograd
    with pytest.raises(ValueError, match="gate"):
        inspect_lstm.force_gate(lstm, "z", 1.0)


def test_a_sequence_first_layer_takes_its_own_layout_and_gives_per_step_results() -> None:
    torch.manual_seed(0)
    first = LSTM(1, 3, batch_first=True)
    seq_first = LSTM(1, 3)
    seq_first.load_state_dict(first.state_dict())
    x = bits(5, 8)
    shares = inspect_lstm.saturation_shares(first, x)
    shares_seq = inspect_lstm.saturation_shares(seq_first, x.transpose(0, 1))
    assert all(torch.equal(shares[key], shares_seq[key]) and shares[key].shape == (8,) for key in shares)
    ones = x[..., 0].cumsum(dim=1)  # features stay (batch, seq_len)
    fits = inspect_lstm.unit_fits(first, x, {"ones": ones})
    fits_seq = inspect_lstm.unit_fits(seq_first, x.transpose(0, 1), {"ones": ones})
    assert [f.r_squared for f in fits] == pytest.approx([f.r_squared for f in fits_seq])
    head = nn.Linear(3, 1)
    reach = inspect_lstm.gradient_reach(seq_first, x.transpose(0, 1), lambda h, c: head(h[-1]).sum())
    assert reach["h"].shape == (8,)
    with pytest.raises(ValueError, match="layer"):
        inspect_lstm.saturation_shares(first, x, layer=3)


def test_a_unit_that_never_changes_follows_nothing() -> None:
    torch.manual_seed(0)
    dead = inspect_lstm.force_gate(LSTM(1, 2, batch_first=True), "i", 0.0)  # c stays 0
    x = bits(10, 6)
    fits = inspect_lstm.unit_fits(dead, x, {"ones": x[..., 0].cumsum(dim=1)})
    assert all(np.isnan(fit.r_squared) and fit.follows is None for fit in fits)


class OwnStepCell(LSTMCell):
    """A step of one's own that never calls the gate methods."""

    def step(self, a, c):
        i, f, o = (torch.sigmoid(a[k]) for k in "ifo")
        c_next = f * c + i * torch.tanh(a["g"])
        return {"i": i, "f": f, "g": torch.tanh(a["g"]), "o": o, "c": c_next, "h": o * torch.tanh(c_next)}


def test_force_gate_refuses_a_step_that_may_not_call_the_gate_and_values_that_are_not_numbers() -> None:
    with pytest.raises(ValueError, match="own step"):
        inspect_lstm.force_gate(LSTM(1, 2, variant=OwnStepCell), "f", 0.0)
    for value in ("a", None, float("nan")):
        with pytest.raises(TypeError, match="finite number"):
            inspect_lstm.force_gate(LSTM(1, 2), "f", value)
