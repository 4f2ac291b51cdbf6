"""Tests of inspect_lstm.py on tiny models: a shipped variant and a cell of one's own."""

from __future__ import annotations

import base64
import struct

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


def test_unit_fits_with_features_that_add_up_still_fit_and_say_each_alone() -> None:
    # ones + zeros = steps: the design is singular, and the fit must still be the least-squares one.
    x = bits(40, 10)
    ones = x[..., 0].cumsum(dim=1)
    steps = torch.arange(1, 11.0).expand_as(ones)
    features = {"ones": ones, "zeros": steps - ones, "steps": steps}
    (fit,) = inspect_lstm.unit_fits(exact_counter(), x, features)
    assert fit.r_squared == pytest.approx(1.0) and fit.follows == "ones"
    assert fit.alone["ones"] == pytest.approx(1.0) and fit.alone["zeros"] < 0.9 and fit.alone["steps"] < 0.9
    # The smallest coefficients that fit: a·ones + b·zeros + d·steps = ones has a = 2/3, b = −1/3, d = 1/3.
    coefficients = [fit.coefficients[name] for name in ("ones", "zeros", "steps")]
    assert coefficients == pytest.approx([2 / 3, -1 / 3, 1 / 3], abs=1e-6)


def test_torch_parity_compares_every_output_and_gradient_within_rounding() -> None:
    state = torch.random.get_rng_state()
    for dtype in (torch.float32, torch.float64):
        differences = inspect_lstm.torch_parity(dtype)
        # 6 outputs and input gradients, 2 layers × 4 gates × 3 parameters, one cell step's h' and c'.
        assert len(differences) == 6 + 2 * 4 * 3 + 2
        assert {"output", "dL/dh_0", "layer 1: dL/dW_hf", "LSTMCell c'"} <= set(differences)
        assert max(differences.values()) < 64 * torch.finfo(dtype).eps
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is left alone


def test_torch_parity_sees_a_wrong_gate_order(monkeypatch) -> None:
    # A proof that cannot fail proves nothing: load PyTorch's f rows into our g and the parity breaks.
    import lstm_cell

    original = lstm_cell.load_torch_weights

    def swapped(cell, weight_ih, weight_hh, biases):
        order = [0, 2, 1, 3]  # i, g, f, o

        def swap(w):
            return torch.cat([w.chunk(4)[k] for k in order])

        original(cell, swap(weight_ih), swap(weight_hh), biases and tuple(swap(b) for b in biases))

    monkeypatch.setattr(lstm_cell, "load_torch_weights", swapped)
    assert max(inspect_lstm.torch_parity(torch.float64).values()) > 1e-3


def test_plot_parity_draws_one_bar_per_quantity_and_dtype() -> None:
    parity = {dtype: {"a": 0.0, "b": 1e-9} for dtype in (torch.float32, torch.float64)}
    figure = inspect_lstm.plot_parity(parity)
    bars = [patch for patch in figure.axes[0].patches]
    assert len(bars) == 4 and min(bar.get_width() for bar in bars) == 1e-18  # an exact 0 at the floor


def test_variants_table_has_a_whole_row_for_every_variant() -> None:
    from lstm_cell import VARIANTS

    rows = inspect_lstm.variants_table().splitlines()[2:]
    assert [row.split("|")[1].strip(" `") for row in rows] == list(VARIANTS)
    for row in rows:
        assert row.count("|") == 5 and not row.rstrip(" |").endswith(":")
        assert "this module" not in row


def test_bits_tensor_reads_bits_and_refuses_anything_else() -> None:
    assert inspect_lstm.bits_tensor("01 1").flatten().tolist() == [0.0, 1.0, 1.0]
    for bad in ("", "012", "  "):
        with pytest.raises(ValueError, match="0s and 1s"):
            inspect_lstm.bits_tensor(bad)
    for bad in (None, 101, b"01"):
        with pytest.raises(TypeError, match="string"):
            inspect_lstm.bits_tensor(bad)


def counting_model(cell=LSTMCell):
    from experiment_utils import LastStepRegressor

    torch.manual_seed(0)
    return LastStepRegressor(LSTM(1, 3, batch_first=True, variant=cell))


@pytest.mark.parametrize("cell", ["cifg", HardSigmoidInputCell], ids=["cifg", "own cell"])
def test_step_figure_shows_the_step_of_the_trace_and_the_running_prediction(cell) -> None:
    import binary_counting

    model = counting_model(cell)
    figure = inspect_lstm.step_figure(model, "0110", 3)
    trace = model.lstm.trace(inspect_lstm.bits_tensor("0110"))[0]
    panels = {ax.get_title(): ax for ax in figure.axes[1:]}
    heights = [bar.get_height() for bar in panels["forget gate f"].patches]
    np.testing.assert_allclose(heights, trace["f"][0, 2].detach().numpy(), rtol=1e-6)
    with torch.no_grad():
        running = binary_counting.running_predictions(model, inspect_lstm.bits_tensor("0110"))[0]
    assert figure.axes[0].get_title() == f"step 3: read a 1, predicts {running[2]:.2f}"
    line = next(line for line in figure.axes[0].lines if line.get_label() == "running prediction")
    np.testing.assert_allclose(line.get_ydata(), running[:3].numpy(), rtol=1e-6)


def test_step_figure_takes_an_lstm_alone_and_refuses_what_it_cannot_show() -> None:
    torch.manual_seed(0)
    lstm = LSTM(1, 2, batch_first=True)
    figure = inspect_lstm.step_figure(lstm, "10", 1)
    assert figure.axes[0].get_title() == "step 1: read a 1"
    for step in (0, 3, True, 1.0):
        with pytest.raises(ValueError, match="step"):
            inspect_lstm.step_figure(lstm, "10", step)
    with pytest.raises(ValueError, match="input_size 1"):
        inspect_lstm.step_figure(LSTM(2, 2, batch_first=True), "10", 1)
    with pytest.raises(TypeError, match="hand-written"):
        inspect_lstm.step_figure(nn.LSTM(1, 2, batch_first=True), "10", 1)


def test_step_through_updates_from_its_widgets_and_leaves_a_static_figure() -> None:
    pytest.importorskip("ipywidgets")
    view = inspect_lstm.StepThrough(counting_model(), "0110")
    assert view.slider.max == 4 and view.slider.value == 4
    figure = view.show("011011", 2)  # what the widgets call
    assert isinstance(figure, Figure) and figure.axes[0].get_title().startswith("step 2: read a 1")
    assert view.slider.max == 6
    view.text.value = "01"  # typing fewer bits keeps the slider within the sequence
    assert view.slider.max == 2 and view.slider.value <= 2
    assert "0s and 1s" in view.show("01x", 1)  # a message in the view, not an exception in a callback
    bundle = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and bundle["image/png"]
    header = base64.b64decode(bundle["image/png"][:64])
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">I", header[16:20])[0] <= 1000


def test_unit_fits_report_a_tie_as_a_tie_and_refuse_what_they_cannot_fit() -> None:
    x = bits(30, 8)
    ones = x[..., 0].cumsum(dim=1)
    (fit,) = inspect_lstm.unit_fits(exact_counter(), x, {"ones": ones, "ones, again": ones.clone()})
    assert fit.follows is None and sorted(fit.passing) == ["ones", "ones, again"]
    (fit,) = inspect_lstm.unit_fits(exact_counter(), x, {"ones": ones})
    assert fit.follows == "ones" and fit.passing == ["ones"]
    for threshold in (None, -0.1, 1.5, True):
        with pytest.raises(ValueError, match="threshold"):
            inspect_lstm.unit_fits(exact_counter(), x, {"ones": ones}, threshold=threshold)
    broken = ones.clone()
    broken[0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        inspect_lstm.unit_fits(exact_counter(), x, {"ones": broken})


def test_layers_are_checked_everywhere() -> None:
    torch.manual_seed(0)
    lstm = LSTM(1, 2, num_layers=2, batch_first=True)
    x = bits(3, 4)
    for layer in (2, -3, 0.0, "0", True):
        with pytest.raises(ValueError, match="layer"):
            inspect_lstm.saturation_shares(lstm, x, layer=layer)
        with pytest.raises(ValueError, match="layer"):
            inspect_lstm.gradient_reach(lstm, x, lambda h, c: h.sum(), layer=layer)


def test_every_view_is_of_the_model_itself_not_one_draw_of_its_dropout() -> None:
    torch.manual_seed(0)
    lstm = LSTM(1, 3, num_layers=2, dropout=0.5, batch_first=True)  # in training mode, as built
    x = bits(4, 6)
    first, second = (inspect_lstm.trace_batch_first(lstm, x)["h"] for _ in range(2))
    assert torch.equal(first, second) and lstm.training  # evaluated without dropout, mode restored
    reach = [inspect_lstm.gradient_reach(lstm, x, lambda h, c: h[:, -1].sum())["h"] for _ in range(2)]
    np.testing.assert_array_equal(reach[0], reach[1])


@pytest.mark.parametrize("variant, name", [("niaf", "g"), ("noaf", "h")])
def test_unbounded_gates_and_states_are_drawn_whole(variant: str, name: str) -> None:
    torch.manual_seed(0)
    lstm = LSTM(1, 3, batch_first=True, variant=variant)
    cell = lstm.cells[0]
    with torch.no_grad():
        cell.b_g.fill_(2.0)  # niaf: a candidate past ±1; noaf: open gates add it up in h = o ⊙ c
        for bias in (cell.b_i, cell.b_f, cell.b_o):
            bias.fill_(10.0)
    x = inspect_lstm.bits_tensor("111111")
    values = inspect_lstm.trace_batch_first(lstm, x)[name][0]  # (steps, units)
    assert values.abs().max() > 1.5
    figure = inspect_lstm.step_figure(lstm, "111111", 6)
    panel = next(ax for ax in figure.axes[1:] if ax.get_title().startswith(PANEL_TITLES[name]))
    low, high = panel.get_ylim()
    assert low < -values[5].abs().max() and high > values[5].abs().max()
    heat = inspect_lstm.plot_gates(lstm, x[0])
    image = next(ax for ax in heat.axes if ax.get_title().startswith(PANEL_TITLES[name])).images[0]
    assert image.get_clim()[1] >= values.abs().max().item() - 1e-6


PANEL_TITLES = {"g": "cell candidate g", "h": "hidden state h"}


def test_step_figure_takes_any_layout_dtype_and_a_model_in_float64() -> None:
    torch.manual_seed(0)
    first = LSTM(1, 2, batch_first=True, dtype=torch.float64)
    seq_first = LSTM(1, 2, dtype=torch.float64)
    seq_first.load_state_dict(first.state_dict())
    bars = []
    for lstm in (first, seq_first):
        figure = inspect_lstm.step_figure(lstm, "0110", 3)
        bars.append([bar.get_height() for ax in figure.axes[1:] for bar in ax.patches])
    assert bars[0] == bars[1]
    expected = first.trace(inspect_lstm.bits_tensor("0110").double())[0]["f"][0, 2]
    np.testing.assert_allclose(bars[0][2:4], expected.detach().numpy())


def test_torch_parity_counts_a_nan_as_infinite_and_refuses_bad_settings(monkeypatch) -> None:
    import lstm_cell

    original = lstm_cell.over_time  # the layer's loop over time, which every way of running it runs

    def poisoned(*args, **kwargs):
        output, (h, c) = original(*args, **kwargs)
        return output, (h, c * float("nan"))

    monkeypatch.setattr(lstm_cell, "over_time", poisoned)
    differences = inspect_lstm.torch_parity(torch.float64)
    assert max(differences.values()) == float("inf")
    monkeypatch.undo()
    for dtype in ("float32", torch.int32):
        with pytest.raises(TypeError, match="dtype"):
            inspect_lstm.torch_parity(dtype)
    with pytest.raises(TypeError, match="seed"):
        inspect_lstm.torch_parity(torch.float32, seed=1.5)
    with pytest.raises(ValueError, match="at least one"):
        inspect_lstm.plot_parity({})
