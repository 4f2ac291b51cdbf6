"""The hand-written LSTM is the same function as PyTorch's: shapes, gradients, parity, bad input."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lstm_cell import LSTM, LSTMCell

GATES = "ifgo"  # PyTorch's order of the gates inside its stacked weights
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}
BACKWARDS = LSTM.BACKWARDS


def torch_gate_slices(name: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """PyTorch's stacked (4*hidden, ...) tensor split into the gate matrices, named as ours are."""
    prefix = {"weight_ih": "W_i", "weight_hh": "W_h", "bias_ih": "b_", "bias_hh": "b_"}[name]
    return {prefix + gate: chunk for gate, chunk in zip(GATES, tensor.chunk(4), strict=True)}


def assert_close(actual, expected, dtype, what=""):
    tolerance = TOLERANCE[dtype]
    torch.testing.assert_close(actual, expected, rtol=tolerance, atol=tolerance, msg=lambda m: f"{what}: {m}")


def random_state(shape, dtype, with_state):
    if not with_state:
        return None
    return tuple(torch.randn(shape, dtype=dtype, requires_grad=True) for _ in range(2))


def weighted_loss(output, h_n, c_n):
    """A loss that gives every output a different gradient, so that no path can hide."""
    loss = 0
    for tensor in (output, h_n, c_n):
        weights = torch.linspace(-1, 1, tensor.numel(), dtype=tensor.dtype).view_as(tensor)
        loss = loss + (weights * tensor).sum() + (tensor**2).sum()
    return loss


# ---------------------------------------------------------------------------------------------------
# Shapes


@pytest.mark.parametrize(("input_size", "hidden_size"), [(1, 1), (1, 20), (3, 5), (32, 7)])
def test_cell_has_one_named_matrix_per_gate(input_size, hidden_size):
    cell = LSTMCell(input_size, hidden_size)
    shapes = {name: tuple(parameter.shape) for name, parameter in cell.named_parameters()}
    expected = {f"W_i{gate}": (hidden_size, input_size) for gate in GATES}
    expected |= {f"W_h{gate}": (hidden_size, hidden_size) for gate in GATES}
    expected |= {f"b_{gate}": (hidden_size,) for gate in GATES}
    assert shapes == expected


def test_initialization_is_uniform_within_one_over_sqrt_hidden():
    torch.manual_seed(0)
    hidden_size = 64
    bound = hidden_size**-0.5
    values = torch.cat([p.flatten() for p in LSTMCell(8, hidden_size).parameters()])
    assert values.abs().max() <= bound
    assert values.min() < -0.9 * bound and values.max() > 0.9 * bound
    assert abs(values.mean()) < 0.1 * bound


@pytest.mark.parametrize("with_state", [False, True])
def test_cell_returns_next_hidden_and_cell_state(with_state):
    cell = LSTMCell(3, 5)
    state = (torch.randn(4, 5), torch.randn(4, 5)) if with_state else None
    h_next, c_next = cell(torch.randn(4, 3), state)
    assert h_next.shape == c_next.shape == (4, 5)


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("batch_first", [False, True])
def test_layer_shapes_mirror_torch_lstm(num_layers, batch_first):
    seq_len, batch, input_size, hidden_size = 6, 4, 3, 5
    ours = LSTM(input_size, hidden_size, num_layers, batch_first=batch_first)
    reference = nn.LSTM(input_size, hidden_size, num_layers, batch_first=batch_first)
    shape = (batch, seq_len, input_size) if batch_first else (seq_len, batch, input_size)
    for x in (torch.randn(shape), torch.randn(seq_len, input_size)):  # batched and unbatched
        output, (h_n, c_n) = ours(x)
        expected_output, (expected_h, expected_c) = reference(x)
        assert output.shape == expected_output.shape
        assert h_n.shape == expected_h.shape and c_n.shape == expected_c.shape


# ---------------------------------------------------------------------------------------------------
# Gradients against finite differences


def test_cell_passes_gradcheck():
    torch.manual_seed(0)
    cell = LSTMCell(3, 4, dtype=torch.float64)
    names, parameters = zip(*cell.named_parameters(), strict=True)

    def step(x, h, c, *parameter_values):
        return torch.func.functional_call(cell, dict(zip(names, parameter_values, strict=True)), (x, (h, c)))

    inputs = [torch.randn(2, size, dtype=torch.float64, requires_grad=True) for size in (3, 4, 4)]
    assert torch.autograd.gradcheck(step, (*inputs, *parameters))


@pytest.mark.parametrize("backward", BACKWARDS)
def test_two_layer_lstm_passes_gradcheck(backward):
    torch.manual_seed(0)
    lstm = LSTM(3, 4, num_layers=2, backward=backward, dtype=torch.float64)
    names, parameters = zip(*lstm.named_parameters(), strict=True)

    def run(x, h_0, c_0, *parameter_values):
        values = dict(zip(names, parameter_values, strict=True))
        output, (h_n, c_n) = torch.func.functional_call(lstm, values, (x, (h_0, c_0)))
        return output, h_n, c_n

    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    h_0, c_0 = (torch.randn(2, 2, 4, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(run, (x, h_0, c_0, *parameters))


# ---------------------------------------------------------------------------------------------------
# Parity with PyTorch, given the same weights


def assert_gate_gradients_match(ours: nn.Module, reference: nn.Module, layer_of, dtype):
    """Every gate matrix's gradient equals the matching slice of PyTorch's stacked gradient."""
    ours_gradients = dict(ours.named_parameters())
    for name, parameter in reference.named_parameters():
        stacked_name, _, layer = name.partition("_l")
        for gate_name, expected in torch_gate_slices(stacked_name, parameter.grad).items():
            actual = ours_gradients[layer_of(layer) + gate_name].grad
            assert_close(actual, expected, dtype, f"gradient of {layer_of(layer)}{gate_name}")


@settings(max_examples=40, deadline=None)
@given(
    input_size=st.integers(1, 6),
    hidden_size=st.integers(1, 6),
    batch=st.integers(1, 4),
    with_state=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_cell_matches_torch_lstm_cell(input_size, hidden_size, batch, with_state, dtype, seed):
    torch.manual_seed(seed)
    reference = nn.LSTMCell(input_size, hidden_size, dtype=dtype)
    ours = LSTMCell.from_torch(reference)
    x = torch.randn(batch, input_size, dtype=dtype, requires_grad=True)
    state = random_state((batch, hidden_size), dtype, with_state)

    results = []
    for cell in (ours, reference):
        h_next, c_next = cell(x, state)
        inputs = [x, *(state or ())]
        loss = weighted_loss(h_next, c_next, h_next[:, :1])
        results.append((h_next, c_next, torch.autograd.grad(loss, inputs, retain_graph=True)))
        loss.backward()
    (h, c, input_gradients), (expected_h, expected_c, expected_input_gradients) = results
    assert_close(h, expected_h, dtype, "h'")
    assert_close(c, expected_c, dtype, "c'")
    for actual, expected in zip(input_gradients, expected_input_gradients, strict=True):
        assert_close(actual, expected, dtype, "gradient of an input")
    assert_gate_gradients_match(ours, reference, lambda layer: "", dtype)


@settings(max_examples=60, deadline=None)
@given(
    input_size=st.integers(1, 6),
    hidden_size=st.integers(1, 6),
    num_layers=st.integers(1, 3),
    seq_len=st.integers(1, 7),
    batch=st.integers(1, 4),
    batch_first=st.booleans(),
    with_state=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    backward=st.sampled_from(BACKWARDS),
    seed=st.integers(0, 2**16),
)
def test_lstm_matches_torch_lstm(
    input_size, hidden_size, num_layers, seq_len, batch, batch_first, with_state, dtype, backward, seed
):
    torch.manual_seed(seed)
    reference = nn.LSTM(input_size, hidden_size, num_layers, batch_first=batch_first, dtype=dtype)
    ours = LSTM.from_torch(reference)
    ours.backward = backward
    shape = (batch, seq_len, input_size) if batch_first else (seq_len, batch, input_size)
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    state = random_state((num_layers, batch, hidden_size), dtype, with_state)

    results = []
    for lstm in (ours, reference):
        output, (h_n, c_n) = lstm(x, state)
        loss = weighted_loss(output, h_n, c_n)
        inputs = [x, *(state or ())]
        results.append((output, h_n, c_n, torch.autograd.grad(loss, inputs, retain_graph=True)))
        loss.backward()
    *values, input_gradients = results[0]
    *expected_values, expected_input_gradients = results[1]
    for what, actual, expected in zip(("output", "h_n", "c_n"), values, expected_values, strict=True):
        assert_close(actual, expected, dtype, what)
    for actual, expected in zip(input_gradients, expected_input_gradients, strict=True):
        assert_close(actual, expected, dtype, "gradient of the input or the initial state")
    assert_gate_gradients_match(ours, reference, lambda layer: f"cells.{layer}.", dtype)


@pytest.mark.parametrize("backward", BACKWARDS)
@pytest.mark.parametrize("used", ["output", "h_n", "c_n"])
def test_lstm_gradients_match_when_only_one_result_is_used(backward, used):
    torch.manual_seed(0)
    reference = nn.LSTM(2, 3, num_layers=2, dtype=torch.float64)
    ours = LSTM.from_torch(reference)
    ours.backward = backward
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    gradients = []
    for lstm in (ours, reference):
        output, (h_n, c_n) = lstm(x)
        chosen = {"output": output, "h_n": h_n, "c_n": c_n}[used]
        gradients.append(torch.autograd.grad((chosen**2).sum(), x))
    assert_close(gradients[0], gradients[1], torch.float64, f"gradient through {used} alone")


def test_cell_stepped_over_a_sequence_equals_the_layer():
    torch.manual_seed(0)
    lstm = LSTM(3, 4, dtype=torch.float64)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    output, (h_n, c_n) = lstm(x)
    state = None
    for t, x_t in enumerate(x):
        state = lstm.cells[0](x_t, state)
        assert_close(state[0], output[t], torch.float64, f"h at step {t}")
    assert_close(state[0], h_n[0], torch.float64, "h_n")
    assert_close(state[1], c_n[0], torch.float64, "c_n")


# ---------------------------------------------------------------------------------------------------
# Conversions


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_through_ours_gives_back_the_same_torch_lstm(dtype):
    torch.manual_seed(0)
    original = nn.LSTM(3, 5, num_layers=2, batch_first=True, dtype=dtype)
    round_trip = LSTM.from_torch(original).to_torch()
    assert round_trip.batch_first and round_trip.num_layers == 2
    assert round_trip.weight_ih_l0.dtype == dtype
    x = torch.randn(4, 6, 3, dtype=dtype)
    output, (h_n, c_n) = round_trip(x)
    expected_output, (expected_h, expected_c) = original(x)
    for what, actual, expected in [
        ("output", output, expected_output),
        ("h_n", h_n, expected_h),
        ("c_n", c_n, expected_c),
    ]:
        assert_close(actual, expected, dtype, f"round trip {what}")
    for layer in range(2):
        for name in ("weight_ih", "weight_hh"):
            assert torch.equal(getattr(round_trip, f"{name}_l{layer}"), getattr(original, f"{name}_l{layer}"))


def test_round_trip_through_torch_gives_back_the_same_cell():
    torch.manual_seed(0)
    ours = LSTMCell(3, 5, dtype=torch.float64)
    again = LSTMCell.from_torch(ours.to_torch())
    for name, parameter in ours.named_parameters():
        assert torch.equal(parameter, dict(again.named_parameters())[name]), name
    x = torch.randn(2, 3, dtype=torch.float64)
    assert_close(ours.to_torch()(x)[0], ours(x)[0], torch.float64, "to_torch")


def test_conversions_draw_no_random_numbers():
    lstm = LSTM(2, 3)
    before = torch.random.get_rng_state()
    lstm.to_torch()
    lstm.cells[0].to_torch()
    assert torch.equal(before, torch.random.get_rng_state())


def test_conversion_keeps_dtype_and_device():
    reference = nn.LSTMCell(2, 3, dtype=torch.float64)
    ours = LSTMCell.from_torch(reference)
    assert all(p.dtype == torch.float64 and p.device == reference.weight_ih.device for p in ours.parameters())
    assert ours.to_torch().weight_hh.dtype == torch.float64


# ---------------------------------------------------------------------------------------------------
# Bad input: a clear error naming what was expected and what came


def bad_call(callable_, *args):
    """The exception `callable_(*args)` raises, which must not come from deep inside a matmul."""
    with pytest.raises((TypeError, ValueError)) as raised:
        callable_(*args)
    message = str(raised.value)
    assert "mat1" not in message and "size mismatch" not in message, message
    return raised


@pytest.mark.parametrize(
    ("x", "state", "error", "words"),
    [
        (torch.randn(4), None, ValueError, ["(batch, input_size=3)", "(4,)"]),
        (torch.randn(2, 4, 3), None, ValueError, ["(batch, input_size=3)", "(2, 4, 3)"]),
        (torch.randn(4, 2), None, ValueError, ["input_size=3", "(4, 2)"]),
        (torch.ones(4, 3, dtype=torch.long), None, TypeError, ["floating", "torch.int64"]),
        (torch.randn(4, 3, dtype=torch.float64), None, TypeError, ["torch.float32", "torch.float64"]),
        ([[1.0, 2.0, 3.0]], None, TypeError, ["torch.Tensor", "list"]),
        (torch.randn(4, 3), (torch.randn(4, 6), torch.randn(4, 5)), ValueError, ["(4, 5)", "(4, 6)"]),
        (torch.randn(4, 3), (torch.randn(2, 5), torch.randn(2, 5)), ValueError, ["(4, 5)", "(2, 5)"]),
        (torch.randn(4, 3), torch.randn(4, 5), TypeError, ["pair (h, c)", "Tensor"]),
    ],
)
def test_cell_rejects_bad_input_clearly(x, state, error, words):
    raised = bad_call(LSTMCell(3, 5), x, state)
    assert raised.type is error
    for word in words:
        assert word in str(raised.value)


@pytest.mark.parametrize(
    ("x", "state", "error", "words"),
    [
        (torch.randn(2, 3, 4, 1), None, ValueError, ["(seq_len, batch, input_size=3)", "(2, 3, 4, 1)"]),
        (torch.randn(5, 2, 4), None, ValueError, ["input_size=3", "(5, 2, 4)"]),
        (torch.randn(0, 2, 3), None, ValueError, ["non-empty", "(0, 2, 3)"]),
        (torch.randn(5, 0, 3), None, ValueError, ["non-empty", "(5, 0, 3)"]),
        (torch.ones(5, 2, 3, dtype=torch.int32), None, TypeError, ["floating", "torch.int32"]),
        (torch.randn(5, 2, 3), (torch.randn(1, 2, 4),) * 2, ValueError, ["(2, 2, 4)", "(1, 2, 4)"]),
        (torch.randn(5, 2, 3), (torch.randn(2, 3, 4),) * 2, ValueError, ["(2, 2, 4)", "(2, 3, 4)"]),
        (torch.randn(5, 2, 3), (torch.randn(2, 2, 4),), TypeError, ["pair (h, c)"]),
        (torch.randn(5, 3), (torch.randn(2, 5),) * 2, ValueError, ["(2, 1, 4)", "(2, 1, 5)"]),
    ],
)
def test_lstm_rejects_bad_input_clearly(x, state, error, words):
    raised = bad_call(LSTM(3, 4, num_layers=2), x, state)
    assert raised.type is error
    for word in words:
        assert word in str(raised.value)


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda: LSTMCell(0, 4), ValueError, ["input_size", "positive", "0"]),
        (lambda: LSTMCell(3, -2), ValueError, ["hidden_size", "positive", "-2"]),
        (lambda: LSTMCell(3.0, 4), TypeError, ["input_size", "int", "float"]),
        (lambda: LSTM(3, 4, num_layers=0), ValueError, ["num_layers", "positive", "0"]),
        (lambda: LSTM(3, 4, batch_first="yes"), TypeError, ["batch_first", "bool", "str"]),
        (lambda: LSTM(3, 4, backward="numeric"), ValueError, ["bptt", "numeric"]),
    ],
)
def test_constructors_reject_bad_sizes(make, error, words):
    raised = bad_call(make)
    assert raised.type is error
    for word in words:
        assert word in str(raised.value)


@pytest.mark.parametrize(
    ("convert", "given", "error", "words"),
    [
        (LSTMCell.from_torch, nn.LSTM(2, 3), TypeError, ["torch.nn.LSTMCell", "LSTM"]),
        (LSTMCell.from_torch, nn.GRUCell(2, 3), TypeError, ["torch.nn.LSTMCell", "GRUCell"]),
        (LSTMCell.from_torch, nn.LSTMCell(2, 3, bias=False), ValueError, ["bias=False"]),
        (LSTM.from_torch, nn.LSTMCell(2, 3), TypeError, ["torch.nn.LSTM", "LSTMCell"]),
        (LSTM.from_torch, "lstm", TypeError, ["torch.nn.LSTM", "str"]),
        (LSTM.from_torch, nn.LSTM(2, 3, bidirectional=True), ValueError, ["bidirectional=True"]),
        (LSTM.from_torch, nn.LSTM(2, 3, bias=False), ValueError, ["bias=False"]),
        (LSTM.from_torch, nn.LSTM(2, 3, proj_size=2), ValueError, ["proj_size=2"]),
        (LSTM.from_torch, nn.LSTM(2, 3, num_layers=2, dropout=0.5), ValueError, ["dropout=0.5"]),
    ],
)
def test_from_torch_refuses_what_it_cannot_convert(convert, given, error, words):
    raised = bad_call(convert, given)
    assert raised.type is error
    for word in words:
        assert word in str(raised.value)
