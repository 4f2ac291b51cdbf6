"""The hand-written LSTM is torch.nn.LSTM's function, its variants are what their names say, and the
layer runs the cell it is given: shapes, gradients (first and second order), parity, bad input."""

import inspect

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lstm_bptt
import lstm_cell
from lstm_cell import LSTM, PATHS, VARIANTS, LSTMCell, run_layer

GATES = "ifgo"  # PyTorch's order of the gates inside its stacked weights
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}
BACKWARDS = LSTM.BACKWARDS
LOCAL = "bptt, local derivatives by autograd"  # the training path of a variant, or of an edited step
F64 = torch.float64


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


def functional(lstm: nn.Module):
    """(run, parameters): run(x, h_0, c_0, *parameters) -> (output, h_n, c_n), for gradcheck."""
    names, parameters = zip(*lstm.named_parameters(), strict=True)

    def run(x, h_0, c_0, *parameter_values):
        values = dict(zip(names, parameter_values, strict=True))
        output, (h_n, c_n) = torch.func.functional_call(lstm, values, (x, (h_0, c_0)))
        return output, h_n, c_n

    return run, parameters


def small_inputs(num_layers=2, seq_len=4, batch=2, input_size=3, hidden_size=4, dtype=F64):
    x = torch.randn(seq_len, batch, input_size, dtype=dtype, requires_grad=True)
    h_0, c_0 = (torch.randn(num_layers, batch, hidden_size, dtype=dtype, requires_grad=True) for _ in "hc")
    return x, h_0, c_0


# ---------------------------------------------------------------------------------------------------
# Shapes, names and the signature


@pytest.mark.parametrize(("input_size", "hidden_size"), [(1, 1), (1, 20), (3, 5), (32, 7)])
@pytest.mark.parametrize("bias", [True, False])
def test_cell_has_one_named_matrix_per_gate(input_size, hidden_size, bias):
    cell = LSTMCell(input_size, hidden_size, bias)
    shapes = {name: tuple(parameter.shape) for name, parameter in cell.named_parameters()}
    expected = {f"W_i{gate}": (hidden_size, input_size) for gate in GATES}
    expected |= {f"W_h{gate}": (hidden_size, hidden_size) for gate in GATES}
    expected |= {f"b_{gate}": (hidden_size,) for gate in GATES} if bias else {}
    assert shapes == expected


@pytest.mark.parametrize(
    ("name", "gates", "extra"),
    [
        ("standard", "ifgo", ""),
        ("peephole", "ifgo", "ifo"),
        ("nig", "fgo", ""),
        ("nfg", "igo", ""),
        ("nog", "ifg", ""),
        ("niaf", "ifgo", ""),
        ("noaf", "ifgo", ""),
        ("cifg", "igo", ""),
    ],
)
def test_every_variant_keeps_the_standard_names_for_the_matrices_it_has(name, gates, extra):
    cell = VARIANTS[name](3, 5)
    expected = {f"W_i{gate}" for gate in gates} | {f"W_h{gate}" for gate in gates}
    expected |= {f"b_{gate}" for gate in gates} | {f"p_{gate}" for gate in extra}
    assert {parameter_name for parameter_name, _ in cell.named_parameters()} == expected
    assert all(p.shape == (5,) for n, p in cell.named_parameters() if n.startswith("p_"))
    assert type(LSTM(3, 5, variant=name).cells[0]) is VARIANTS[name]


def test_every_variant_documents_its_equations_and_source():
    for name, cell_class in VARIANTS.items():
        doc = inspect.getdoc(cell_class)
        assert "=" in doc or "≡" in doc, name
        assert "Greff" in doc or "Gers" in doc or name == "standard", name


def test_initialization_is_uniform_within_one_over_sqrt_hidden():
    torch.manual_seed(0)
    hidden_size = 64
    bound = hidden_size**-0.5
    values = torch.cat([p.flatten() for p in LSTMCell(8, hidden_size).parameters()])
    assert values.abs().max() <= bound
    assert values.min() < -0.9 * bound and values.max() > 0.9 * bound
    assert abs(values.mean()) < 0.1 * bound


def test_forget_bias_sets_the_initial_forget_gate_bias_only():
    torch.manual_seed(0)
    default = LSTM(2, 3, num_layers=2)
    torch.manual_seed(0)
    biased = LSTM(2, 3, num_layers=2, forget_bias=1.0)
    for ours, theirs in zip(biased.cells, default.cells, strict=True):
        assert torch.equal(ours.b_f, torch.ones(3))
        for name, parameter in ours.named_parameters():
            if name != "b_f":
                assert torch.equal(parameter, getattr(theirs, name)), name
    cifg = LSTM(2, 3, variant="cifg", forget_bias=2.0).cells[0]
    assert torch.equal(cifg.b_i, torch.full((3,), -2.0))  # f = 1 - σ(b_i) starts at σ(2)
    with pytest.raises(ValueError, match="nfg variant has no forget gate"):
        LSTM(2, 3, variant="nfg", forget_bias=1.0)
    with pytest.raises(ValueError, match="bias=False"):
        LSTM(2, 3, bias=False, forget_bias=1.0)
    assert LSTM(2, 3, forget_bias=1e39, dtype=F64).cells[0].b_f[0] == 1e39  # float64 holds it


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


def test_positional_signature_is_torch_lstms():
    ours = list(inspect.signature(LSTM.__init__).parameters.values())[1:]
    theirs = list(inspect.signature(nn.modules.rnn.RNNBase.__init__).parameters.values())[2:]
    positional = [(p.name, p.default) for p in ours if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == [(p.name, p.default) for p in theirs if p.kind is p.POSITIONAL_OR_KEYWORD][:8]
    # The same positional call builds the same model: bias, not batch_first, is the fourth argument.
    for args in [(3, 5, 1, True), (3, 5, 2, False, True, 0.25)]:
        ours_lstm, reference = LSTM(*args), nn.LSTM(*args)
        for setting in ("num_layers", "bias", "batch_first", "dropout"):
            assert getattr(ours_lstm, setting) == getattr(reference, setting), (args, setting)


def test_state_may_be_passed_as_hx():
    torch.manual_seed(0)
    lstm, x = LSTM(3, 4), torch.randn(5, 2, 3)
    state = (torch.randn(1, 2, 4), torch.randn(1, 2, 4))
    assert torch.equal(lstm(x, hx=state)[0], lstm(x, state)[0])


# ---------------------------------------------------------------------------------------------------
# Gradients against finite differences, first and second order


def test_cell_passes_gradcheck():
    torch.manual_seed(0)
    cell = LSTMCell(3, 4, dtype=F64)
    names, parameters = zip(*cell.named_parameters(), strict=True)

    def step(x, h, c, *parameter_values):
        return torch.func.functional_call(cell, dict(zip(names, parameter_values, strict=True)), (x, (h, c)))

    inputs = [torch.randn(2, size, dtype=F64, requires_grad=True) for size in (3, 4, 4)]
    assert torch.autograd.gradcheck(step, (*inputs, *parameters))


@pytest.mark.parametrize("backward", BACKWARDS)
def test_two_layer_lstm_passes_gradcheck(backward):
    torch.manual_seed(0)
    run, parameters = functional(LSTM(3, 4, num_layers=2, backward=backward, dtype=F64))
    assert torch.autograd.gradcheck(run, (*small_inputs(), *parameters))


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_passes_gradcheck(variant):
    torch.manual_seed(0)
    run, parameters = functional(LSTM(3, 4, num_layers=2, variant=variant, dtype=F64))
    assert torch.autograd.gradcheck(run, (*small_inputs(), *parameters))


@pytest.mark.parametrize("variant", ["standard", "peephole", "cifg"])
def test_autograd_backward_passes_gradgradcheck(variant):
    torch.manual_seed(0)
    run, parameters = functional(LSTM(2, 3, variant=variant, backward="autograd", dtype=F64))
    inputs = small_inputs(num_layers=1, seq_len=3, input_size=2, hidden_size=3)
    assert torch.autograd.gradgradcheck(run, (*inputs, *parameters))


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


@settings(max_examples=30, deadline=None)
@given(
    input_size=st.integers(1, 6),
    hidden_size=st.integers(1, 6),
    batch=st.integers(1, 4),
    bias=st.booleans(),
    with_state=st.booleans(),
    dtype=st.sampled_from([torch.float32, F64]),
    seed=st.integers(0, 2**16),
)
def test_cell_matches_torch_lstm_cell(input_size, hidden_size, batch, bias, with_state, dtype, seed):
    torch.manual_seed(seed)
    reference = nn.LSTMCell(input_size, hidden_size, bias, dtype=dtype)
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


@settings(max_examples=50, deadline=None)
@given(
    input_size=st.integers(1, 6),
    hidden_size=st.integers(1, 6),
    num_layers=st.integers(1, 3),
    seq_len=st.integers(1, 7),
    batch=st.integers(1, 4),
    bias=st.booleans(),
    batch_first=st.booleans(),
    with_state=st.booleans(),
    dtype=st.sampled_from([torch.float32, F64]),
    backward=st.sampled_from(BACKWARDS),
    seed=st.integers(0, 2**16),
)
def test_lstm_matches_torch_lstm(
    input_size, hidden_size, num_layers, seq_len, batch, bias, batch_first, with_state, dtype, backward, seed
):
    torch.manual_seed(seed)
    reference = nn.LSTM(input_size, hidden_size, num_layers, bias, batch_first=batch_first, dtype=dtype)
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


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("bias", [True, False])
def test_every_way_of_running_a_layer_matches_torch_lstm(path, bias):
    torch.manual_seed(0)
    reference = nn.LSTM(3, 4, 1, bias, dtype=F64)
    cell = LSTM.from_torch(reference).cells[0]
    x, h_0, c_0 = small_inputs(num_layers=1, seq_len=5)
    output, (h_n, c_n) = run_layer(cell, x, h_0[0], c_0[0], path)
    expected_output, (expected_h, expected_c) = reference(x, (h_0, c_0))
    assert_close(output, expected_output, F64, "output")
    assert_close(h_n, expected_h[0], F64, "h_n")
    assert_close(c_n, expected_c[0], F64, "c_n")
    gradients = torch.autograd.grad(weighted_loss(output, h_n, c_n), (x, h_0, c_0))
    expected = torch.autograd.grad(
        weighted_loss(expected_output, expected_h[0], expected_c[0]), (x, h_0, c_0)
    )
    for what, actual, wanted in zip(("x", "h_0", "c_0"), gradients, expected, strict=True):
        assert_close(actual, wanted, F64, f"gradient of {what}")


@pytest.mark.parametrize("backward", BACKWARDS)
@pytest.mark.parametrize("used", ["output", "h_n", "c_n"])
def test_lstm_gradients_match_when_only_one_result_is_used(backward, used):
    torch.manual_seed(0)
    reference = nn.LSTM(2, 3, num_layers=2, dtype=F64)
    ours = LSTM.from_torch(reference)
    ours.backward = backward
    x = torch.randn(4, 2, 2, dtype=F64, requires_grad=True)
    gradients = []
    for lstm in (ours, reference):
        output, (h_n, c_n) = lstm(x)
        chosen = {"output": output, "h_n": h_n, "c_n": c_n}[used]
        gradients.append(torch.autograd.grad((chosen**2).sum(), x))
    assert_close(gradients[0], gradients[1], F64, f"gradient through {used} alone")


def test_dropout_between_layers_acts_like_torch_lstms():
    torch.manual_seed(0)
    reference = nn.LSTM(3, 4, num_layers=3, dropout=0.5, dtype=F64)
    ours = LSTM.from_torch(reference)
    assert ours.dropout == 0.5 and ours.to_torch().dropout == 0.5
    x = torch.randn(5, 2, 3, dtype=F64)
    ours.eval(), reference.eval()
    assert_close(ours(x)[0], reference(x)[0], F64, "in eval mode dropout does nothing")
    ours.train()
    torch.manual_seed(1)
    first = ours(x)[0]
    torch.manual_seed(1)
    assert torch.equal(first, ours(x)[0]), "the same seed, the same masks"
    assert not torch.allclose(first, ours(x)[0]), "another draw, other masks"
    with pytest.warns(UserWarning, match="num_layers=1"):
        LSTM(3, 4, 1, dropout=0.5)


def test_cell_stepped_over_a_sequence_equals_the_layer():
    torch.manual_seed(0)
    lstm = LSTM(3, 4, dtype=F64)
    x = torch.randn(6, 2, 3, dtype=F64)
    output, (h_n, c_n) = lstm(x)
    state = None
    for t, x_t in enumerate(x):
        state = lstm.cells[0](x_t, state)
        assert_close(state[0], output[t], F64, f"h at step {t}")
    assert_close(state[0], h_n[0], F64, "h_n")
    assert_close(state[1], c_n[0], F64, "c_n")


# ---------------------------------------------------------------------------------------------------
# The trace: every gate, from the step code that trains


def traced(variant: str, c_scale: float = 1.0):
    torch.manual_seed(0)
    lstm = LSTM(3, 4, num_layers=2, variant=variant, dtype=F64)
    x = torch.randn(5, 2, 3, dtype=F64)
    state = (torch.zeros(2, 2, 4, dtype=F64), c_scale * torch.randn(2, 2, 4, dtype=F64))
    return lstm, x, state, lstm.trace(x, state)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_trace_is_laid_out_like_output_and_agrees_with_it(variant, batch_first):
    torch.manual_seed(0)
    lstm = LSTM(3, 4, num_layers=2, variant=variant, batch_first=batch_first, dtype=F64)
    x = torch.randn(2, 5, 3, dtype=F64) if batch_first else torch.randn(5, 2, 3, dtype=F64)
    output, (_, c_n) = lstm(x)
    layers = lstm.trace(x)
    assert len(layers) == 2
    for layer in layers:
        assert set(layer) == set("ifgoch") and all(v.shape == output.shape for v in layer.values())
    assert_close(layers[-1]["h"], output, F64, "h of the last layer is the output")
    last = (slice(None), -1) if batch_first else (-1,)
    for index, layer in enumerate(layers):
        assert_close(layer["c"][last], c_n[index], F64, "the last c is c_n")
    assert lstm.trace(x[0] if batch_first else x[:, 0])[0]["f"].shape == (5, 4)  # unbatched


@pytest.mark.parametrize("variant", VARIANTS)
def test_trace_satisfies_the_variants_equations(variant):
    lstm, x, (h_0, c_0), layers = traced(variant)
    first = layers[0]
    c_previous = torch.cat((c_0[0].unsqueeze(0), first["c"][:-1]))
    ones = torch.ones_like(first["c"])
    assert_close(first["c"], first["f"] * c_previous + first["i"] * first["g"], F64, "c' = f ⊙ c + i ⊙ g")
    expected_h = first["o"] * (first["c"] if variant == "noaf" else torch.tanh(first["c"]))
    assert_close(first["h"], expected_h, F64, "h'")
    assert torch.equal(first["i"], ones) == (variant == "nig")
    assert torch.equal(first["f"], ones) == (variant == "nfg")
    assert torch.equal(first["o"], ones) == (variant == "nog")
    if variant == "cifg":
        assert_close(first["f"], 1 - first["i"], F64, "CIFG: f = 1 - i")
    if variant == "niaf":  # the candidate is the affine pre-activation itself
        cell, h_previous = lstm.cells[0], torch.cat((h_0[0].unsqueeze(0), first["h"][:-1]))
        expected_g = x @ cell.W_ig.T + h_previous @ cell.W_hg.T + cell.b_g
        assert_close(first["g"], expected_g, F64, "NIAF: g without tanh")
    else:
        assert first["g"].abs().max() < 1


@pytest.mark.parametrize("variant", ["standard", "peephole"])
def test_only_peephole_gates_look_at_the_cell_state(variant):
    *_, small = traced(variant, c_scale=0.0)
    *_, large = traced(variant, c_scale=3.0)
    for gate in "ifo":
        first_step_differs = not torch.allclose(small[0][gate][0], large[0][gate][0])
        assert first_step_differs == (variant == "peephole"), gate


def test_trace_gradients_flow_back_to_the_input():
    lstm, x, state, _ = traced("standard")
    x.requires_grad_(True)
    (gradient,) = torch.autograd.grad(lstm.trace(x, state)[0]["c"][-1].sum(), x)
    assert gradient.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------
# The layer runs the cell's own code: edited, subclassed, replaced, hooked, with settings of its own


class HalvedOutputCell(LSTMCell):
    """An edit of forward itself: h' is halved after the step."""

    def forward(self, x, state=None):
        h, c = super().forward(x, state)
        return 0.5 * h, c


class LeakyForgetCell(LSTMCell):
    """An edit of one line of the step."""

    def forget_gate(self, a, c, i):
        return 0.9 * torch.sigmoid(a["f"])


def step_by_step_reference(lstm: LSTM, x: torch.Tensor):
    """What stepping each layer's cell by hand gives, `cell(x_t, state)`: the definition."""
    layer_input, finals = x, []
    for cell in lstm.cells:
        state, outputs = None, []
        for x_t in layer_input:
            state = cell(x_t, state)
            outputs.append(state[0])
        layer_input = torch.stack(outputs)
        finals.append(state)
    return layer_input, finals


def gradients_match_step_by_step(lstm: LSTM, x: torch.Tensor, seed: int | None = None) -> None:
    """The layer's output, last c_n and gradients (of the input and of all that trains) equal those of
    stepping its cells, and its output without gradients too. `seed`: set before each run, for a cell
    that draws random numbers."""

    def seeded(run):
        if seed is not None:
            torch.manual_seed(seed)
        return run()

    x = x.detach().requires_grad_()
    output, (_, c_n) = seeded(lambda: lstm(x))
    expected, finals = seeded(lambda: step_by_step_reference(lstm, x))
    c_n, expected_c = c_n[-1], finals[-1][1]
    assert_close(output, expected, F64, "output")
    assert_close(c_n, expected_c, F64, "c_n")
    weights = torch.linspace(-1, 1, output.numel(), dtype=F64).view_as(output)
    inputs = [x, *(parameter for parameter in lstm.parameters() if parameter.requires_grad)]
    losses = [(out * weights).sum() + c.square().sum() for out, c in ((output, c_n), (expected, expected_c))]
    actual, wanted = (torch.autograd.grad(loss, inputs, allow_unused=True) for loss in losses)
    for gradient, wanted_gradient in zip(actual, wanted, strict=True):
        if wanted_gradient is not None:
            assert_close(gradient, wanted_gradient, F64, "gradient")
    with torch.no_grad():
        without = seeded(lambda: lstm(x)[0])
        assert_close(without, seeded(lambda: step_by_step_reference(lstm, x)[0]), F64, "without gradients")


@pytest.mark.parametrize(
    ("cell_class", "paths"),
    [
        (HalvedOutputCell, ("autograd", "autograd")),
        (LeakyForgetCell, ("autograd", "autograd")),
        (LSTMCell, ("bptt", "autograd")),
    ],
)
@pytest.mark.parametrize("backward", ["auto", "autograd"])
def test_a_subclassed_cell_is_what_the_layer_computes(cell_class, paths, backward):
    torch.manual_seed(0)
    lstm = LSTM(3, 4, num_layers=2, variant=cell_class, backward=backward, dtype=F64)
    gradients_match_step_by_step(lstm, torch.randn(5, 2, 3, dtype=F64))
    assert lstm.training_path() == paths[backward == "autograd"]


@pytest.mark.parametrize("cell_class", [HalvedOutputCell, LeakyForgetCell, *list(VARIANTS.values())[1:]])
def test_bptt_refuses_a_cell_that_is_not_the_standard_one(cell_class):
    lstm = LSTM(3, 4, variant=cell_class, backward="bptt")
    with pytest.raises(
        ValueError, match=rf"{cell_class.__name__} is not lstm_cell.LSTMCell as shipped.*'auto'"
    ):
        lstm(torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match=r"torch\.nn\.LSTM cannot express"):
        lstm.to_torch()
    with torch.no_grad():  # nothing to differentiate, so nothing to refuse
        assert lstm(torch.randn(5, 2, 3))[0].shape == (5, 2, 4)


def test_a_method_replaced_on_one_cell_or_a_hook_is_what_the_layer_computes():
    torch.manual_seed(0)
    lstm = LSTM(3, 4, dtype=F64)
    x = torch.randn(5, 2, 3, dtype=F64)
    before = lstm(x)[0]
    cell = lstm.cells[0]
    cell.output_activation = lambda c_next: torch.sigmoid(c_next)
    assert lstm.training_path() == "autograd"
    gradients_match_step_by_step(lstm, x)
    assert not torch.allclose(lstm(x)[0], before)
    del cell.output_activation
    assert lstm.training_path() == "bptt"
    handle = cell.register_forward_hook(lambda module, inputs, output: (output[0] * 2, output[1]))
    assert lstm.training_path() == "autograd"
    gradients_match_step_by_step(lstm, x)
    handle.remove()
    handle = cell.register_full_backward_hook(lambda module, grad_input, grad_output: None)
    assert lstm.training_path() == "autograd"
    handle.remove()
    # A global hook runs inside every module's call: the cell is called whole while it is registered.
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda module, inputs, output: (output[0] + 1, output[1]) if module is cell else None
    )
    try:
        assert lstm.training_path() == "autograd"
        gradients_match_step_by_step(lstm, x)
    finally:
        handle.remove()
    assert lstm.training_path() == "bptt"


class ScaledPreactivationsCell(LSTMCell):
    """An edit of how a_t is computed: every pre-activation halved."""

    def preactivations(self, x, h):
        return {gate: 0.5 * a for gate, a in super().preactivations(x, h).items()}


@pytest.mark.parametrize("cell_class", [LeakyForgetCell, ScaledPreactivationsCell])
def test_trace_of_a_cell_of_ones_own_records_what_the_layer_computes(cell_class):
    torch.manual_seed(0)
    lstm = LSTM(3, 4, num_layers=2, variant=cell_class, dtype=F64)
    x = torch.randn(5, 2, 3, dtype=F64)
    output, (_, c_n) = lstm(x)
    layers = lstm.trace(x)
    assert_close(layers[-1]["h"], output, F64, "h of the last layer is the output")
    assert_close(torch.stack([layer["c"][-1] for layer in layers]), c_n, F64, "the last c is c_n")


def test_trace_of_a_shipped_cell_is_its_training_path_and_raises_after_an_in_place_change():
    torch.manual_seed(0)
    lstm, x = LSTM(3, 4, num_layers=2, dtype=F64), torch.randn(5, 2, 3, dtype=F64)
    assert torch.equal(lstm.trace(x)[-1]["h"], lstm(x)[0])  # the same stacked matrices, to the bit
    c = lstm.trace(x)[0]["c"]
    with torch.no_grad():
        lstm.cells[0].W_hf.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        c.sum().backward()


def test_trace_refuses_a_cell_whose_call_runs_more_than_its_step():
    x = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match=r"HalvedOutputCell\.step.*own forward or a hook"):
        LSTM(3, 4, variant=HalvedOutputCell).trace(x)
    lstm = LSTM(3, 4)
    lstm.cells[0].register_forward_hook(lambda module, inputs, output: (2 * output[0], output[1]))
    with pytest.raises(ValueError, match=r"LSTMCell\.step.*own forward or a hook"):
        lstm.trace(x)

    class OwnCall(LSTMCell):
        def __call__(self, *args):
            h, c = super().__call__(*args)
            return h.clamp(-0.1, 0.1), c

    with pytest.raises(ValueError, match=r"OwnCall\.step.*own forward or a hook"):
        LSTM(3, 4, variant=OwnCall).trace(x)

    class OwnCallImpl(LSTMCell):
        def _call_impl(self, *args, **kwargs):
            h, c = super()._call_impl(*args, **kwargs)
            return 0.5 * h, c

    with pytest.raises(ValueError, match=r"OwnCallImpl\.step.*own forward or a hook"):
        LSTM(3, 4, variant=OwnCallImpl).trace(x)
    lstm = LSTM(3, 4)
    lstm.cells[0].forward = lambda x, state=None: tuple(
        0.5 * s for s in LSTMCell.forward(lstm.cells[0], x, state)
    )
    with pytest.raises(ValueError, match=r"LSTMCell\.step.*own forward or a hook"):
        lstm.trace(x)

    def zero_c(module, inputs, output) -> None:  # the step's c, changed in place after it
        output[1].mul_(0)

    lstm = LSTM(3, 4)
    lstm.cells[0].register_forward_hook(zero_c)
    with pytest.raises(ValueError, match=r"LSTMCell\.step.*own forward or a hook"):
        lstm.trace(x)


class MixingCell(LSTMCell):
    """An edit that lets each unit's cell state see its neighbour's: the step is no longer unit-wise."""

    def forget_gate(self, a, c, i):
        return torch.sigmoid(a["f"] + c.roll(1, dims=1))


def test_a_step_that_mixes_units_trains_by_autograd():
    torch.manual_seed(0)
    lstm = LSTM(3, 4, variant=MixingCell, dtype=F64)
    assert lstm.training_path() == "autograd"
    gradients_match_step_by_step(lstm, torch.randn(5, 2, 3, dtype=F64))


@pytest.mark.parametrize("variant", ["peephole", "cifg"])
def test_unit_wise_bptt_over_many_derivative_chunks_equals_autograd(variant):
    # More steps than lstm_bptt.DERIVATIVE_STEPS, so the step is differentiated in several chunks.
    torch.manual_seed(0)
    lstm = LSTM(2, 3, variant=variant, dtype=F64)
    x = torch.randn(lstm_bptt.DERIVATIVE_STEPS + 7, 2, 2, dtype=F64, requires_grad=True)
    gradients = []
    for backward in ("auto", "autograd"):
        lstm.backward = backward
        output, (h_n, c_n) = lstm(x)
        gradients.append(torch.autograd.grad(weighted_loss(output, h_n, c_n), [x, *lstm.parameters()]))
    for name, actual, expected in zip(["x", *dict(lstm.named_parameters())], *gradients, strict=True):
        assert_close(actual, expected, F64, f"gradient of {name}")


def test_the_textbook_derivatives_are_those_of_the_cells_own_step():
    # lstm_bptt's written-out derivatives against autograd's of LSTMCell.step, on values of every size.
    torch.manual_seed(0)
    cell = LSTMCell(2, 5, dtype=F64)

    def step(a, c):
        steps = cell.step(dict(zip("ifgo", a.chunk(4, dim=-1), strict=True)), c)
        return steps["c"], steps["h"]

    a, c_previous = 3 * torch.randn(7, 3, 20, dtype=F64), 3 * torch.randn(7, 3, 5, dtype=F64)
    c, h = step(a, c_previous)
    by_dh, by_dc = lstm_bptt.textbook_derivatives(a, c_previous, c)
    expected_dh, expected_dc, _ = lstm_bptt.step_derivatives(step, 4, a, c_previous, c, h)
    assert_close(by_dh, expected_dh, F64, "∂h")
    assert_close(by_dc, expected_dc, F64, "∂c")


def test_only_cells_as_shipped_get_the_hand_written_backward():
    class Empty(LSTMCell):
        pass

    def changed(change, variant="standard"):
        lstm = LSTM(3, 4, variant=variant)
        assert lstm.training_path() == ("bptt" if variant == "standard" else LOCAL)
        change(lstm.cells[0])
        return lstm.training_path()

    assert LSTM(3, 4, variant=Empty).training_path() == "autograd"
    assert all(LSTM(3, 4, variant=variant).training_path() == LOCAL for variant in list(VARIANTS)[1:])
    assert changed(lambda cell: setattr(cell, "scale", 2.0)) == "autograd"
    assert changed(lambda cell: setattr(cell, "scale", 2.0), "peephole") == "autograd"
    assert changed(lambda cell: cell.register_buffer("mask", torch.ones(4))) == "autograd"
    assert changed(lambda cell: cell.add_module("norm", nn.LayerNorm(4))) == "autograd"
    assert changed(lambda cell: setattr(cell, "candidate", lambda a: a["g"])) == "autograd"
    assert changed(lambda cell: setattr(cell, "GATES", ("i", "f", "g", "o"))) == "autograd"
    assert changed(lambda cell: setattr(cell, "W_hf", cell.W_hi)) == "autograd"  # a shared parameter
    assert changed(lambda cell: setattr(cell, "p_f", cell.p_i), "peephole") == "autograd"
    assert changed(lambda cell: setattr(cell, "preactivations", cell.preactivations)) == "autograd"
    assert changed(lambda cell: cell.register_forward_pre_hook(lambda module, inputs: None)) == ("autograd")


def test_a_class_changed_after_import_loses_the_hand_written_backward():
    lstm = LSTM(3, 4, variant="nig", dtype=F64)
    cell_class = type(lstm.cells[0])
    original = cell_class.input_gate
    cell_class.input_gate = lambda self, a, c: 0.5 * torch.ones_like(c)
    try:
        assert lstm.training_path() == "autograd"
        gradients_match_step_by_step(lstm, torch.randn(5, 2, 3, dtype=F64))
    finally:
        cell_class.input_gate = original
    assert lstm.training_path() == LOCAL


def test_the_shipped_source_is_what_the_digest_describes():
    assert lstm_cell.source_digest() == lstm_cell.SHIPPED_SOURCE, (
        "lstm_cell.py changed: if intended, and every test passes (test_the_textbook_derivatives_are_those_of"
        f"_the_cells_own_step among them), set SHIPPED_SOURCE to {lstm_cell.source_digest()!r}"
    )
    assert lstm_cell.AS_SHIPPED


def test_what_the_fast_path_takes_as_known_is_checked_at_every_call(monkeypatch):
    # Each change below leaves the shipped classes as they are, yet changes what calling a cell computes:
    # the layer must then call it, as stepping it does.
    def relu_activation(self, c_next):
        return torch.relu(c_next)

    def halving_check_state(state, shape, like):
        h, c = check_state(state, shape, like)
        return h, 0.5 * c

    check_state, input_projections = lstm_cell.check_state, lstm_bptt.input_projections
    changes = [
        lambda patch: patch.setattr(LSTMCell.output_activation, "__code__", relu_activation.__code__),
        lambda patch: patch.setattr(lstm_cell, "check_state", halving_check_state),
        lambda patch: patch.setattr(torch.Tensor, "__matmul__", lambda a, b: torch.matmul(a, b) * 2),
        lambda patch: patch.setattr(
            nn.Parameter, "__radd__", lambda b, a: torch.add(a, b) * 2, raising=False
        ),
        lambda patch: patch.setattr(
            lstm_bptt, "input_projections", lambda *args: input_projections(*args) * 2
        ),
        lambda patch: patch.setattr(lstm_cell, "getattr", getattr, raising=False),  # a name it did not have
    ]
    torch.manual_seed(0)
    x = torch.randn(5, 2, 3, dtype=F64)
    for change in changes:
        lstm = LSTM(3, 4, dtype=F64)
        assert lstm.training_path() == "bptt"
        with monkeypatch.context() as patch:
            change(patch)
            assert lstm.training_path() == "autograd"
            gradients_match_step_by_step(lstm, x)
        assert lstm.training_path() == "bptt"


class DoubledMatmul(torch.Tensor):
    """A tensor subclass whose matrix products are doubled: its own code for the ops it sees."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        out = super().__torch_function__(func, types, args, kwargs or {})
        return out * 2 if getattr(func, "__name__", "") in ("matmul", "__matmul__") else out


def test_tensor_subclasses_as_parameters_or_input_are_what_trains():
    torch.manual_seed(0)
    x = torch.randn(5, 2, 3, dtype=F64)
    lstm = LSTM(3, 4, dtype=F64)
    cell = lstm.cells[0]
    for name, parameter in list(cell.named_parameters()):
        setattr(cell, name, nn.Parameter(parameter.detach().as_subclass(DoubledMatmul)))
    assert lstm.training_path() == "autograd"
    gradients_match_step_by_step(lstm, x)
    plain = LSTM(3, 4, dtype=F64)
    subclassed = x.as_subclass(DoubledMatmul)
    with torch.no_grad():
        expected = step_by_step_reference(plain, subclassed)[0]
        assert_close(
            plain(subclassed)[0].as_subclass(torch.Tensor), expected.as_subclass(torch.Tensor), F64, "x"
        )


def test_a_torch_dispatch_mode_is_followed_by_the_layer():
    from torch.utils._python_dispatch import TorchDispatchMode

    class RoundedProducts(TorchDispatchMode):  # matrix products rounded to bfloat16, as a low-precision mode
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default):
                return out.bfloat16().to(out.dtype)
            return out

    torch.manual_seed(0)
    lstm, x = LSTM(3, 4, dtype=F64), torch.randn(5, 2, 3, dtype=F64)
    with RoundedProducts():
        assert lstm.training_path() == "autograd"
        gradients_match_step_by_step(lstm, x)


def test_a_peephole_replaced_between_forward_and_backward_is_refused():
    torch.manual_seed(0)
    lstm = LSTM(3, 4, variant="peephole", dtype=F64)
    output, _ = lstm(torch.randn(5, 2, 3, dtype=F64))
    lstm.cells[0].p_i = nn.Parameter(torch.full((4,), 3.0, dtype=F64))
    with pytest.raises(RuntimeError, match=r"changed after the forward pass \(its own parameters replaced"):
        output.square().sum().backward()


def test_auto_trains_large_states_with_autograd():
    # At large sizes autograd is as fast as the hand-written backward pass (benchmarks/README.md).
    for variant, path in (("standard", "bptt"), ("peephole", LOCAL)):
        lstm = LSTM(3, 64, variant=variant)
        largest = lstm_cell.BPTT_LARGEST_STATE[path] // 64
        assert lstm.training_path(largest) == path
        assert lstm.training_path(largest + 1) == "autograd"
        lstm.backward = "bptt" if variant == "standard" else "auto"
        assert lstm.training_path(largest + 1) == ("bptt" if variant == "standard" else "autograd")


EDITED = """
import json, torch
from lstm_cell import LSTM
torch.manual_seed(0)
lstm = LSTM(3, 4, dtype=torch.float64)
x = torch.randn(40, 2, 3, dtype=torch.float64, requires_grad=True)
with torch.no_grad():
    lstm.cells[0].b_f.fill_(5.0)
    lstm.cells[0].b_i.fill_(5.0)
    lstm.cells[0].b_g.fill_(5.0)
output, (_, c_n) = lstm(x)
state, outputs = None, []
for x_t in x:
    state = lstm.cells[0](x_t, state)
    outputs.append(state[0])
expected = torch.stack(outputs)
pairs = ((output, c_n), (expected, state[1]))
gradients = [torch.autograd.grad((out ** 2).sum() + c.sum(), x)[0] for out, c in pairs]
try:
    LSTM(3, 4, backward="bptt")(torch.randn(5, 2, 3))
    refused = ""
except ValueError as error:
    refused = str(error)
print(json.dumps({"path": lstm.training_path(), "equal": torch.allclose(output, expected),
                  "gradients equal": torch.allclose(*gradients), "largest c": c_n.abs().max().item(),
                  "refused": refused}))
"""


def edited_copy(tmp_path, name: str, original: str, edited: str):
    """A copy of the scripts with one line of lstm_cell.py changed, and a function running commands in it."""
    import shutil
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    (tmp_path / name).mkdir()
    for file in ("lstm_cell.py", "lstm_bptt.py", "experiment_utils.py", "binary_counting.py"):
        shutil.copy(root / file, tmp_path / name / file)
    source = (tmp_path / name / "lstm_cell.py").read_text()
    assert source.count(original) == 1, "the line this test edits has moved"
    (tmp_path / name / "lstm_cell.py").write_text(source.replace(original, edited))

    def run(*command: str) -> subprocess.CompletedProcess:
        done = subprocess.run(command, cwd=tmp_path / name, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done

    return run


def test_an_edit_of_the_cells_forward_in_its_source_is_what_the_layer_and_a_script_compute(tmp_path):
    import json
    import sys

    original = '        return steps["h"], steps["c"]\n'
    edited = edited_copy(tmp_path, "edited", original, '        return steps["h"] * 0.5, steps["c"]\n')
    unedited = edited_copy(tmp_path, "original", original, original)
    result = json.loads(edited(sys.executable, "-c", EDITED).stdout)
    assert result["equal"] and result["gradients equal"], "the layer computes the edited forward"
    assert result["path"] == "autograd"
    assert "is not lstm_cell.LSTMCell as shipped" in result["refused"]

    script = [sys.executable, "binary_counting.py", "--epochs", "1", "--train-samples", "64"]
    script += ["--valid-samples", "16", "--seq-len", "6", "--hidden-size", "3", "--lengths", "6"]
    script += ["--quiet", "--out-dir", "out"]
    printed = {"edited": edited(*script).stdout, "original": unedited(*script).stdout}
    results = {
        name: json.loads((tmp_path / name / "out" / "binary_counting.json").read_text()) for name in printed
    }
    assert "trained by autograd" in printed["edited"]
    assert results["edited"]["lstm_path"] == "autograd"
    assert results["original"]["lstm_path"] == "bptt"
    assert results["edited"]["epochs"][0]["train_loss"] != results["original"]["epochs"][0]["train_loss"]


def test_a_clip_written_into_lstmcell_step_in_its_source_is_what_trains(tmp_path):
    import json
    import sys

    original = "        c_next = f * c + i * g\n"
    run = edited_copy(tmp_path, "clipped", original, "        c_next = (f * c + i * g).clamp(-30, 30)\n")
    result = json.loads(run(sys.executable, "-c", EDITED).stdout)
    assert result["path"] == "autograd"  # LSTMCell is no longer as shipped: called whole
    assert result["largest c"] == 30, "the clip acts, in training"
    assert result["equal"] and result["gradients equal"]


def test_running_and_training_a_cell_draws_no_random_numbers_of_its_own():
    for variant in (LeakyForgetCell, MixingCell, "standard"):
        lstm = LSTM(2, 3, variant=variant)
        before = torch.random.get_rng_state()
        lstm(torch.zeros(4, 1, 2))[0].sum().backward()
        lstm.training_path()
        assert torch.equal(before, torch.random.get_rng_state()), variant


# Each kind of cell a check on sampled values once got wrong, compared with stepping the cell itself.


def test_a_clip_of_the_state_or_the_input_beyond_small_values_is_what_trains():
    class ClippedState(LSTMCell):  # TensorFlow's cell_clip: c is clipped to ±30, which it reaches here
        def step(self, a, c):
            steps = super().step(a, c)
            c_next = steps["c"].clamp(-30, 30)
            return {**steps, "c": c_next, "h": steps["o"] * torch.tanh(c_next)}

    class ClippedInput(LSTMCell):
        def forward(self, x, state=None):
            return super().forward(x.clamp(-3, 3), state)

    torch.manual_seed(0)
    for cell_class in (ClippedState, ClippedInput):
        lstm = LSTM(1, 3, variant=cell_class, dtype=F64)
        with torch.no_grad():
            for name in ("b_i", "b_g", "b_f"):
                getattr(lstm.cells[0], name).fill_(6)
        gradients_match_step_by_step(lstm, torch.full((60, 2, 1), 5.0, dtype=F64))
    with torch.no_grad():
        assert lstm(torch.full((60, 2, 1), 5.0, dtype=F64))[1][1].abs().max() > 30  # unclipped c grows


SETTINGS = {"scale": 1.0}  # a module-level setting a cell's step reads


def module_helper(c_next: torch.Tensor) -> torch.Tensor:
    return SETTINGS["scale"] * torch.tanh(c_next)


def test_a_setting_changed_after_a_first_model_ran_is_what_trains():
    import types

    class Tunable(LSTMCell):
        LIMIT = 50.0  # a class constant

        def __init__(self, *args, **options):
            super().__init__(*args, **options)
            self._clip = 50.0  # a private attribute
            self.settings = {"gain": 1.0}  # a dict
            self.options = types.SimpleNamespace(shift=0.0)  # a namespace
            self.register_buffer("mask", torch.ones(self.hidden_size, dtype=first_weight_dtype(self)))

        def output_activation(self, c_next):
            c_next = c_next.clamp(-self._clip, self._clip).clamp(-self.LIMIT, self.LIMIT)
            return self.settings["gain"] * module_helper(c_next + self.options.shift) * self.mask

    torch.manual_seed(0)
    lstm = LSTM(3, 4, variant=Tunable, dtype=F64)
    x = 3 * torch.randn(8, 2, 3, dtype=F64)
    gradients_match_step_by_step(lstm, x)
    cell = lstm.cells[0]
    for change in (
        lambda: setattr(cell, "_clip", 0.3),
        lambda: cell.settings.__setitem__("gain", 3.0),
        lambda: setattr(cell.options, "shift", 0.5),
        lambda: setattr(Tunable, "LIMIT", 0.2),
        lambda: SETTINGS.__setitem__("scale", -2.0),
        lambda: cell.mask.__setitem__(1, 0.0),
        lambda: lstm.eval(),
    ):
        change()
        gradients_match_step_by_step(lstm, x)
    SETTINGS["scale"] = 1.0


def first_weight_dtype(cell: LSTMCell) -> torch.dtype:
    return next(cell.parameters()).dtype


def test_a_recurrent_dropout_of_any_rate_is_what_trains():
    class RecurrentDropout(LSTMCell):  # dropout on the candidate (Semeniuta et al. 2016), a submodule
        def __init__(self, *args, **options):
            super().__init__(*args, **options)
            self.drop = nn.Dropout(0.0)

        def candidate(self, a):
            return self.drop(torch.tanh(a["g"]))

    torch.manual_seed(0)
    lstm = LSTM(3, 4, variant=RecurrentDropout, dtype=F64)
    x = torch.randn(6, 2, 3, dtype=F64)
    gradients_match_step_by_step(lstm, x, seed=1)
    lstm.cells[0].drop.p = 0.5
    gradients_match_step_by_step(lstm, x, seed=1)
    output = lstm(x)[0]
    assert not torch.allclose(output, lstm(x)[0]), "dropout draws new masks at every call"


def test_hooks_of_a_submodule_run_inside_the_step():
    class Normed(LSTMCell):
        def __init__(self, *args, **options):
            super().__init__(*args, **options)
            self.activation = nn.Tanh()

        def output_activation(self, c_next):
            return self.activation(c_next)

    torch.manual_seed(0)
    lstm = LSTM(3, 4, variant=Normed, dtype=F64)
    calls = []
    lstm.cells[0].activation.register_forward_hook(
        lambda module, inputs, output: calls.append(1) or 2 * output
    )
    gradients_match_step_by_step(lstm, torch.randn(5, 2, 3, dtype=F64))
    assert calls


def test_a_step_that_runs_into_nan_is_differentiated_whole():
    class RootGain(LSTMCell):  # mixes units, and the root of a negative gain is NaN
        def __init__(self, input_size, hidden_size, bias=True, **kwargs):
            super().__init__(input_size, hidden_size, bias, **kwargs)
            self.gain = nn.Parameter(torch.ones(hidden_size, dtype=first_weight_dtype(self)))

        def output_activation(self, c_next):
            return torch.tanh(c_next).roll(1, dims=1) * self.gain.sqrt()

    torch.manual_seed(0)
    lstm = LSTM(3, 4, variant=RootGain, dtype=F64)
    gradients_match_step_by_step(lstm, torch.randn(6, 2, 3, dtype=F64))
    with torch.no_grad():
        lstm.cells[0].gain[0] = -1.0
    x = torch.randn(6, 2, 3, dtype=F64, requires_grad=True)
    output = lstm(x)[0]
    expected = step_by_step_reference(lstm, x)[0]
    assert torch.equal(output.isnan(), expected.isnan())
    gradient, wanted = (torch.autograd.grad(out.nansum(), x)[0] for out in (output, expected))
    assert torch.equal(gradient.isnan(), wanted.isnan())


def test_code_in_a_gate_method_runs_at_every_step_of_a_training_forward():
    class Logged(LSTMCell):
        def __init__(self, *args, **options):
            super().__init__(*args, **options)
            self.log = []

        def forget_gate(self, a, c, i):
            self.log.append(c.shape)
            return torch.sigmoid(a["f"])

    lstm = LSTM(3, 4, num_layers=2, variant=Logged)
    lstm(torch.randn(7, 2, 3, requires_grad=True))
    assert [len(cell.log) for cell in lstm.cells] == [7, 7]


def test_a_cell_with_renamed_gates_runs():
    class Renamed(LSTMCell):
        GATES = ("i", "f", "u", "o")  # the candidate is u

        def candidate(self, a):
            return torch.tanh(a["u"])

    torch.manual_seed(0)
    lstm = LSTM(3, 4, num_layers=2, variant=Renamed, dtype=F64)
    assert {"W_iu", "W_hu", "b_u"} <= dict(lstm.cells[0].named_parameters()).keys()
    gradients_match_step_by_step(lstm, torch.randn(5, 2, 3, dtype=F64))
    lstm.backward = "autograd"
    gradients_match_step_by_step(lstm, torch.randn(5, 2, 3, dtype=F64))
    assert set(lstm.trace(torch.randn(5, 2, 3, dtype=F64))[0]) == {"i", "f", "g", "o", "c", "h"}


def test_a_subclass_s_own_parameters_survive_reset_parameters():
    class LayerNormGains(LSTMCell):
        def __init__(self, *args, **options):
            super().__init__(*args, **options)
            self.gain = nn.Parameter(torch.ones(self.hidden_size, dtype=first_weight_dtype(self)))

        def output_activation(self, c_next):
            return torch.tanh(self.gain * c_next)

    torch.manual_seed(0)
    cell = LayerNormGains(3, 4)
    weights = cell.W_hi.detach().clone()
    cell.reset_parameters()
    assert torch.equal(cell.gain, torch.ones(4))
    assert not torch.equal(cell.W_hi, weights)
    peephole = VARIANTS["peephole"](3, 4)
    peephole.reset_parameters()  # the peepholes are the subclass's: it initializes them
    assert peephole.p_i.abs().max() <= 0.5 and peephole.p_i.abs().max() > 0


def test_a_step_that_uses_any_tensor_gives_it_its_gradient():
    outside = torch.ones(4, dtype=F64, requires_grad=True)

    class Closure(LSTMCell):
        def output_activation(self, c_next):
            return outside * torch.tanh(c_next)

    torch.manual_seed(0)
    lstm = LSTM(3, 4, variant=Closure, dtype=F64)
    x = torch.randn(5, 2, 3, dtype=F64)
    gains = [
        torch.autograd.grad(run(x)[0].square().sum(), outside)[0]
        for run in (lstm, lambda x: step_by_step_reference(lstm, x))
    ]
    assert_close(gains[0], gains[1], F64, "gradient of a tensor from outside the cell")


# What stepping a cell by hand does and a re-run of its step would not: each trains exactly so.


class ClipGradient(torch.autograd.Function):
    """The identity forward, its gradient clipped to ±5 (Graves 2013's derivative clipping)."""

    @staticmethod
    def forward(ctx, tensor):
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, gradient):
        return gradient.clamp(-5, 5)


def test_steps_with_their_own_gradients_state_or_random_numbers_are_what_trains():
    class GradientClipped(LSTMCell):
        def step(self, a, c):
            steps = super().step(a, c)
            return {**steps, "c": ClipGradient.apply(steps["c"])}

    class GradModeBranch(LSTMCell):
        def step(self, a, c):
            steps = super().step(a, c)
            return {**steps, "h": 0.5 * steps["h"]} if torch.is_grad_enabled() else steps

    class OwnGenerator(LSTMCell):
        def __init__(self, *args, **options):
            super().__init__(*args, **options)
            self.generator = torch.Generator().manual_seed(7)

        def step(self, a, c):
            steps = super().step(a, c)
            noise = torch.randn(c.shape, generator=self.generator, dtype=c.dtype)
            c_next = steps["c"] + 0.1 * noise
            return {**steps, "c": c_next, "h": steps["o"] * torch.tanh(c_next)}

    class RecurrentBatchNorm(LSTMCell):  # Cooijmans et al. 2017: running statistics, updated per step
        def __init__(self, *args, **options):
            super().__init__(*args, **options)
            self.norm = nn.BatchNorm1d(self.hidden_size, dtype=first_weight_dtype(self))

        def step(self, a, c):
            steps = super().step(a, c)
            return {**steps, "h": steps["o"] * torch.tanh(self.norm(steps["c"]))}

    torch.manual_seed(0)
    x = torch.randn(5, 3, 3, dtype=F64)
    for cell_class in (GradientClipped, GradModeBranch, RecurrentBatchNorm):
        lstm = LSTM(3, 4, variant=cell_class, dtype=F64)
        with torch.no_grad():
            lstm.cells[0].b_g.fill_(3.0)  # large gradients, for the clip to act on
        assert lstm.training_path(3) == "autograd"
        if cell_class is GradModeBranch:
            x_ = x.clone().requires_grad_()
            assert_close(lstm(x_)[0], step_by_step_reference(lstm, x_)[0], F64, "a branch on grad mode")
            continue
        (lstm(x)[0] * 100).sum().backward()
        layer = [parameter.grad.clone() for parameter in lstm.parameters()]
        lstm.zero_grad()
        (step_by_step_reference(lstm, x)[0] * 100).sum().backward()
        for ours, wanted in zip(layer, [p.grad for p in lstm.parameters()], strict=True):
            assert_close(ours, wanted, F64, cell_class.__name__)
    norm = lstm.cells[0].norm
    assert norm.num_batches_tracked == 2 * len(x), "the statistics were updated once a step, in each run"
    lstm = LSTM(3, 4, variant=OwnGenerator, dtype=F64)
    lstm.cells[0].generator.manual_seed(7)
    first = torch.autograd.grad(lstm(x)[0].sum(), lstm.cells[0].W_hf)[0]
    lstm.cells[0].generator.manual_seed(7)
    second = torch.autograd.grad(step_by_step_reference(lstm, x)[0].sum(), lstm.cells[0].W_hf)[0]
    assert_close(first, second, F64, "noise from the cell's own generator")


def test_tensors_a_step_keeps_carry_their_gradient():
    class Kept(LSTMCell):
        def __init__(self, *args, **options):
            super().__init__(*args, **options)
            self.forget = []

        def step(self, a, c):
            steps = super().step(a, c)
            self.forget.append(steps["f"])  # for an auxiliary loss on the forget gate
            return steps

    torch.manual_seed(0)
    lstm = LSTM(3, 4, variant=Kept, dtype=F64)
    x = torch.randn(5, 2, 3, dtype=F64)
    gradients = []
    for run in (lstm, lambda x: step_by_step_reference(lstm, x)):
        lstm.cells[0].forget = []
        loss = run(x)[0].sum() + torch.stack(lstm.cells[0].forget).sum()
        assert len(lstm.cells[0].forget) == len(x)
        gradients.append(torch.autograd.grad(loss, lstm.cells[0].b_f)[0])
    assert_close(gradients[0], gradients[1], F64, "an auxiliary loss on kept gates")


def test_shared_parameters_and_gate_matrices_computed_on_access_are_what_trains():
    class DropConnect(LSTMCell):  # Merity et al. 2018: W_hf dropped anew at each access
        def __init__(self, *args, **options):
            super().__init__(*args, **options)
            self.W_hf_raw = self._parameters.pop("W_hf")

        @property
        def W_hf(self):
            return nn.functional.dropout(self.W_hf_raw, 0.5, self.training)

    torch.manual_seed(0)
    lstm = LSTM(3, 4, variant=DropConnect, dtype=F64)
    assert lstm.training_path() == "autograd"
    gradients_match_step_by_step(lstm, torch.randn(5, 2, 3, dtype=F64), seed=3)
    for variant, tie in (("standard", ("W_hf", "W_hi")), ("peephole", ("p_f", "p_i"))):
        lstm = LSTM(3, 4, variant=variant, dtype=F64)
        setattr(lstm.cells[0], tie[0], getattr(lstm.cells[0], tie[1]))
        gradients_match_step_by_step(lstm, torch.randn(5, 2, 3, dtype=F64))


def test_a_torch_function_mode_is_followed_by_the_gradients_too():
    from torch.overrides import TorchFunctionMode

    class SlowerTanh(TorchFunctionMode):
        def __torch_function__(self, function, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if function in (torch.tanh, torch.Tensor.tanh):
                return function(*args, **kwargs) * 0.9
            return function(*args, **kwargs)

    torch.manual_seed(0)
    lstm = LSTM(3, 4, dtype=F64)
    with SlowerTanh():
        assert lstm.training_path() == "autograd"
        gradients_match_step_by_step(lstm, torch.randn(5, 2, 3, dtype=F64))


def test_a_torch_function_patched_since_import_is_what_trains(monkeypatch):
    sigmoid, call = torch.sigmoid, nn.Module._call_impl
    torch.manual_seed(0)
    for variant in ("standard", "peephole"):
        lstm = LSTM(3, 4, num_layers=2, variant=variant, dtype=F64)
        with monkeypatch.context() as patch:
            patch.setattr(torch, "sigmoid", lambda a: sigmoid(2 * a + 0.3 * a.mean(-1, keepdim=True)))
            assert lstm.training_path() == "autograd"  # the layer no longer knows a_t's code
            gradients_match_step_by_step(lstm, torch.randn(5, 2, 3, dtype=F64))
        with monkeypatch.context() as patch:
            patch.setattr(nn.Module, "_call_impl", lambda self, *args, **kwargs: call(self, *args, **kwargs))
            assert lstm.training_path() == "autograd"
        assert lstm.training_path() == ("bptt" if variant == "standard" else LOCAL)


def test_a_step_that_changes_a_gate_matrix_in_place_is_what_stepping_it_does():
    import copy

    class Decaying(LSTMCell):
        def step(self, a, c):
            with torch.no_grad():
                self.W_hf.mul_(0.8)
            return super().step(a, c)

    torch.manual_seed(0)
    lstm, x = LSTM(3, 4, variant=Decaying, dtype=F64), torch.randn(5, 2, 3, dtype=F64)
    stepped = copy.deepcopy(lstm)
    with torch.no_grad():
        assert_close(lstm(x)[0], step_by_step_reference(stepped, x)[0], F64, "output")
        assert_close(lstm.cells[0].W_hf, stepped.cells[0].W_hf, F64, "the matrix after its changes")
    for model in (lstm, lambda x: step_by_step_reference(stepped, x)):  # autograd refuses both alike
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            model(x)[0].sum().backward()


def test_a_shipped_variant_under_a_non_reentrant_checkpoint_trains_its_peepholes():
    torch.manual_seed(0)
    lstm = LSTM(3, 4, variant="peephole", dtype=F64)
    x = torch.randn(5, 2, 3, dtype=F64)
    wanted = torch.autograd.grad(lstm(x)[0].sum(), lstm.cells[0].p_i)[0]
    output = torch.utils.checkpoint.checkpoint(lambda x: lstm(x)[0], x, use_reentrant=False)
    assert_close(torch.autograd.grad(output.sum(), lstm.cells[0].p_i)[0], wanted, F64, "p_i")


# ---------------------------------------------------------------------------------------------------
# Where the hand-derived backward pass cannot follow nn.LSTM, it says so; elsewhere it does as nn.LSTM


def gradient_penalty_gradients(lstm: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    output, _ = lstm(x)
    (g,) = torch.autograd.grad(output.sum(), x, create_graph=True)
    return torch.autograd.grad((g.norm() - 1) ** 2, list(lstm.parameters()))


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "standard"])
def test_a_variants_unit_wise_bptt_raises_for_second_order_and_autograd_gives_it(variant):
    torch.manual_seed(0)
    lstm = LSTM(3, 4, variant=variant, dtype=F64)
    x = torch.randn(5, 2, 3, dtype=F64, requires_grad=True)
    assert lstm.training_path() == LOCAL
    with pytest.raises(RuntimeError, match=r"first-order only.*backward='autograd'"):
        gradient_penalty_gradients(lstm, x)
    lstm.backward = "autograd"
    assert all(torch.isfinite(g).all() for g in gradient_penalty_gradients(lstm, x))


def test_second_order_gradients_match_torch_lstm_or_raise():
    torch.manual_seed(0)
    reference = nn.LSTM(3, 4, dtype=F64)
    ours = LSTM.from_torch(reference)
    x = torch.randn(5, 2, 3, dtype=F64, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"first-order only.*backward='autograd'"):
        gradient_penalty_gradients(ours, x)
    ours.backward = "autograd"
    names = [name for name, _ in ours.named_parameters()]
    ours_gradients = dict(zip(names, gradient_penalty_gradients(ours, x), strict=True))
    reference_gradients = gradient_penalty_gradients(reference, x)
    for name, gradient in zip(("weight_ih", "weight_hh", "bias_ih"), reference_gradients, strict=False):
        for gate_name, expected in torch_gate_slices(name, gradient).items():
            assert_close(ours_gradients[f"cells.0.{gate_name}"], expected, F64, gate_name)

    def output_sum(lstm):
        return lambda inputs: lstm(inputs)[0].sum()

    vector = torch.randn_like(x)
    _, ours_hvp = torch.autograd.functional.hvp(output_sum(ours), x.detach(), vector)
    _, reference_hvp = torch.autograd.functional.hvp(output_sum(reference), x.detach(), vector)
    assert reference_hvp.abs().max() > 0.01
    assert_close(ours_hvp, reference_hvp, F64, "Hessian-vector product")


@pytest.mark.parametrize("backward", BACKWARDS)
def test_h_n_and_c_n_are_tensors_of_their_own(backward):
    torch.manual_seed(0)
    reference = nn.LSTM(3, 4, dtype=F64)
    ours = LSTM.from_torch(reference)
    ours.backward = backward
    x = torch.randn(5, 2, 3, dtype=F64, requires_grad=True)
    output, (h_n, c_n) = ours(x)
    h_n.detach_()  # truncated BPTT cuts the graph this way
    gradients = []
    for lstm in (ours, reference):
        output, (h_n, c_n) = lstm(x)
        h_n.mul_(2)
        c_n.mul_(3)
        gradients.append(torch.autograd.grad(output.sum() + h_n.sum() + c_n.sum(), x)[0])
    assert_close(gradients[0], gradients[1], F64, "gradient after in-place changes of h_n and c_n")
    with torch.no_grad():
        output, (h_n, c_n) = ours(x)
        h_n.zero_()
        c_n.zero_()
        assert output[-1].abs().sum() > 0


def torch_lstm_under_autocast(reference: nn.LSTM, x: torch.Tensor) -> torch.Tensor:
    """nn.LSTM's output under CPU autocast (bfloat16), or where this PyTorch cannot run nn.LSTM there.

    Some releases (2.15 among them) fail inside oneDNN ("could not create a primitive descriptor for the
    LSTM forward propagation primitive"). A reference that cannot run must not decide the test, so the
    same LSTM then runs in float32 on the input and weights rounded to bfloat16, as autocast rounds what
    it feeds the matrix products; the test's tolerance covers the rest of bfloat16's rounding.
    """
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return reference(x)[0]
    except RuntimeError as error:
        if "primitive descriptor" not in str(error):
            raise
    rounded = nn.LSTM(reference.input_size, reference.hidden_size, reference.num_layers)
    weights = reference.state_dict()
    rounded.load_state_dict({name: value.bfloat16().float() for name, value in weights.items()})
    with torch.no_grad():
        return rounded(x.bfloat16().float())[0]


@pytest.mark.parametrize("backward", ["auto", "autograd"])
def test_autocast_runs_like_torch_lstm(backward):
    torch.manual_seed(0)
    reference = nn.LSTM(3, 8)
    ours = LSTM.from_torch(reference)
    ours.backward = backward
    x = torch.randn(6, 2, 3, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, _ = ours(x)
    expected = torch_lstm_under_autocast(reference, x.detach())
    torch.testing.assert_close(output.float(), expected.float(), atol=0.05, rtol=0.05)
    output.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_bptt_refuses_autocast_clearly():
    with (
        torch.autocast("cpu", dtype=torch.bfloat16),
        pytest.raises(RuntimeError, match=r"cannot run under autocast.*'autograd'"),
    ):
        LSTM(3, 4, backward="bptt")(torch.randn(5, 2, 3))


def test_torch_func_transforms_match_torch_lstm():
    torch.manual_seed(0)
    reference = nn.LSTM(3, 4, dtype=F64)
    ours = LSTM.from_torch(reference)
    x = torch.randn(5, 2, 3, dtype=F64)

    def loss_of(lstm):
        return lambda inputs: (lstm(inputs)[0] ** 2).sum()

    assert_close(torch.func.grad(loss_of(ours))(x), torch.func.grad(loss_of(reference))(x), F64, "func.grad")
    jacobian = torch.func.jacrev(lambda inputs: ours(inputs)[0])(x)
    assert_close(jacobian, torch.func.jacrev(lambda inputs: reference(inputs)[0])(x), F64, "jacrev")
    batched = torch.randn(3, 5, 2, 3, dtype=F64)
    mapped = torch.func.vmap(lambda inputs: ours(inputs)[0])(batched)
    assert_close(mapped, torch.stack([reference(b)[0] for b in batched]), F64, "vmap")


def test_torch_export_matches_torch_lstm():
    torch.manual_seed(0)
    reference = nn.LSTM(3, 4)
    ours = LSTM.from_torch(reference)
    x = torch.randn(5, 2, 3)
    exported = torch.export.export(ours, (x,))
    assert_close(exported.module()(x)[0], reference(x)[0], torch.float32, "exported")


@pytest.mark.parametrize(
    ("variant", "backward", "parameter"),
    [
        *(("standard", backward, parameter) for backward in BACKWARDS for parameter in ("W_hf", "b_i")),
        *(
            ("peephole", backward, parameter)
            for backward in ("auto", "autograd")
            for parameter in ("W_hf", "p_f")
        ),
    ],
)
def test_changing_a_parameter_in_place_before_backward_raises_like_torch_lstm(variant, backward, parameter):
    lstm = LSTM(3, 4, variant=variant, backward=backward)
    x = torch.randn(5, 2, 3)
    output, _ = lstm(x)
    with torch.no_grad():
        getattr(lstm.cells[0], parameter).mul_(2)
    if lstm.training_path() == "autograd" and parameter.startswith("b_"):
        # Called step by step, a bias is only added: its gradient needs no saved value, and autograd
        # gives the one stepping the cell gives, changed in place alike; nothing is differentiated at a
        # value that is gone.
        with torch.no_grad():
            getattr(lstm.cells[0], parameter).div_(2)
        expected = torch.autograd.grad(step_by_step_reference(lstm, x)[0].sum(), lstm.cells[0].b_i)[0]
        assert torch.equal(torch.autograd.grad(output.sum(), lstm.cells[0].b_i)[0], expected)
        return
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        output.sum().backward()


@pytest.mark.parametrize("variant", ["standard", "noaf"])
def test_a_forward_without_gradients_over_many_projection_chunks_is_the_step_by_step_one(variant):
    # Longer than lstm_cell.PROJECTION_STEPS, so the chunks go into the output one after another.
    torch.manual_seed(0)
    cell = LSTM(2, 3, variant=variant, dtype=F64).cells[0]
    x = torch.randn(2 * lstm_cell.PROJECTION_STEPS + 3, 2, 2, dtype=F64)
    h, c = torch.randn(2, 2, 3, dtype=F64)
    with torch.no_grad():
        output, state = run_layer(cell, x, h, c, lstm_cell.WITHOUT_GRADIENTS)
        expected_state, outputs = (h, c), []
        for x_t in x:
            expected_state = cell(x_t, expected_state)
            outputs.append(expected_state[0])
        expected_output = torch.stack(outputs)
    assert_close(output, expected_output, F64, "output")
    assert_close(torch.stack(state), torch.stack(expected_state), F64, "state")


def test_a_long_forward_without_gradients_keeps_nothing_for_a_backward():
    # A 20 000-step forward of the published model without gradients holds its output, not every step's gates.
    lstm = LSTM(1, 8)
    x = torch.randn(20_000, 2, 1)
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t.numel()) or t, lambda t: t):
        with torch.no_grad():
            lstm(x)
        assert kept == []
        lstm(x[:50].requires_grad_())
    # In training, what is kept for backward grows with the steps, about 4 gates plus c and h.
    assert 0 < sum(kept) <= 50 * 2 * 8 * 10


# ---------------------------------------------------------------------------------------------------
# Conversions


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("bias", [True, False])
def test_round_trip_through_ours_gives_back_the_same_torch_lstm(dtype, bias):
    torch.manual_seed(0)
    original = nn.LSTM(3, 5, num_layers=2, bias=bias, batch_first=True, dtype=dtype)
    round_trip = LSTM.from_torch(original).to_torch()
    assert round_trip.batch_first and round_trip.num_layers == 2 and round_trip.bias == bias
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
    ours = LSTMCell(3, 5, dtype=F64)
    again = LSTMCell.from_torch(ours.to_torch())
    for name, parameter in ours.named_parameters():
        assert torch.equal(parameter, dict(again.named_parameters())[name]), name
    x = torch.randn(2, 3, dtype=F64)
    assert_close(ours.to_torch()(x)[0], ours(x)[0], F64, "to_torch")


def test_conversions_draw_no_random_numbers():
    lstm = LSTM(2, 3)
    before = torch.random.get_rng_state()
    lstm.to_torch()
    lstm.cells[0].to_torch()
    assert torch.equal(before, torch.random.get_rng_state())


def test_conversion_keeps_dtype_and_device():
    reference = nn.LSTMCell(2, 3, dtype=F64)
    ours = LSTMCell.from_torch(reference)
    assert all(p.dtype == F64 and p.device == reference.weight_ih.device for p in ours.parameters())
    assert ours.to_torch().weight_hh.dtype == F64


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
        (torch.randn(4, 3, dtype=F64), None, TypeError, ["torch.float32", "torch.float64"]),
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
        # Unbatched: the shapes the caller passed, and the unbatched layout.
        (torch.randn(5, 2), None, ValueError, ["(seq_len, input_size=3)", "(5, 2)"]),
        (torch.randn(5, 3), (torch.randn(2, 5),) * 2, ValueError, ["(2, 4)", "(2, 5)"]),
        (torch.randn(5, 3), (torch.randn(1, 1, 4),) * 2, ValueError, ["unbatched 2-D", "2-D", "(1, 1, 4)"]),
        (torch.randn(0, 3), None, ValueError, ["non-empty", "(0, 3)"]),
    ],
)
def test_lstm_rejects_bad_input_clearly(x, state, error, words):
    raised = bad_call(LSTM(3, 4, num_layers=2), x, state)
    assert raised.type is error
    for word in words:
        assert word in str(raised.value)


def test_unbatched_errors_name_what_the_caller_passed_with_batch_first():
    raised = bad_call(LSTM(13, 4, 2, batch_first=True), torch.rand(5, 2))
    assert "(5, 2)" in str(raised.value) and "(1, 5, 2)" not in str(raised.value)


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda: LSTMCell(0, 4), ValueError, ["input_size", "positive", "0"]),
        (lambda: LSTMCell(3, -2), ValueError, ["hidden_size", "positive", "-2"]),
        (lambda: LSTMCell(3.0, 4), TypeError, ["input_size", "int", "float"]),
        (lambda: LSTM(3, 4, num_layers=0), ValueError, ["num_layers", "positive", "0"]),
        (lambda: LSTM(3, 4, batch_first="yes"), TypeError, ["batch_first", "bool", "str"]),
        (lambda: LSTM(3, 4, 1, "yes"), TypeError, ["bias", "bool", "str"]),
        (lambda: LSTM(3, 4, backward="numeric"), ValueError, ["bptt", "numeric"]),
        (lambda: LSTM(3, 4, variant="gru"), ValueError, ["standard", "cifg", "'gru'"]),
        (lambda: LSTM(3, 4, 2, dropout=1.5), ValueError, ["dropout", "[0, 1]", "1.5"]),
        (lambda: LSTM(3, 4, bidirectional=True), ValueError, ["bidirectional=True", "not supported"]),
        (lambda: LSTM(3, 4, proj_size=2), ValueError, ["proj_size=2", "not supported"]),
        (lambda: LSTM(3, 4, forget_bias="1"), TypeError, ["forget_bias", "str"]),
        (lambda: LSTM(3, 4, forget_bias=float("nan")), ValueError, ["forget_bias", "finite"]),
        (lambda: LSTM(3, 4, forget_bias=1e39), ValueError, ["forget_bias", "torch.float32", "1e+39"]),
        (lambda: LSTM(3, 4, forget_bias=10**400), ValueError, ["forget_bias", "torch.float32"]),
    ],
)
def test_constructors_reject_bad_settings(make, error, words):
    raised = bad_call(make)
    assert raised.type is error
    for word in words:
        assert word in str(raised.value)


class NegatedLSTM(nn.LSTM):
    """An nn.LSTM whose call computes more than its weights say."""

    def forward(self, *args):
        output, state = super().forward(*args)
        return -output, state


def hooked(module: nn.Module) -> nn.Module:
    module.register_forward_hook(lambda module, inputs, output: None)
    return module


@pytest.mark.parametrize(
    ("convert", "given", "error", "words"),
    [
        (LSTMCell.from_torch, nn.LSTM(2, 3), TypeError, ["torch.nn.LSTMCell", "LSTM"]),
        (LSTMCell.from_torch, nn.GRUCell(2, 3), TypeError, ["torch.nn.LSTMCell", "GRUCell"]),
        (LSTM.from_torch, nn.LSTMCell(2, 3), TypeError, ["torch.nn.LSTM", "LSTMCell"]),
        (LSTM.from_torch, "lstm", TypeError, ["torch.nn.LSTM", "str"]),
        (LSTM.from_torch, nn.LSTM(2, 3, bidirectional=True), ValueError, ["bidirectional=True"]),
        (LSTM.from_torch, nn.LSTM(2, 3, proj_size=2), ValueError, ["proj_size=2"]),
        (VARIANTS["cifg"].from_torch, nn.LSTMCell(2, 3), ValueError, ["CoupledGateLSTMCell", "variant"]),
        (LSTM.from_torch, NegatedLSTM(2, 3), ValueError, ["torch.nn.LSTM's own computation", "NegatedLSTM"]),
        (LSTM.from_torch, hooked(nn.LSTM(2, 3)), ValueError, ["LSTM with hooks", "would be lost"]),
        (LSTMCell.from_torch, hooked(nn.LSTMCell(2, 3)), ValueError, ["LSTMCell with hooks"]),
    ],
)
def test_from_torch_refuses_what_it_cannot_convert(convert, given, error, words):
    raised = bad_call(convert, given)
    assert raised.type is error
    for word in words:
        assert word in str(raised.value)


def test_from_torch_accepts_bias_false_and_dropout():
    assert not LSTMCell.from_torch(nn.LSTMCell(2, 3, bias=False)).bias
    assert not LSTM.from_torch(nn.LSTM(2, 3, bias=False)).bias
    assert LSTM.from_torch(nn.LSTM(2, 3, 2, dropout=0.5)).dropout == 0.5


def test_conversions_keep_the_training_mode_and_what_trains():
    torch.manual_seed(0)
    reference = nn.LSTM(3, 4, 2, dropout=0.5, dtype=F64).eval()
    reference.weight_hh_l0.requires_grad_(False)
    reference.bias_ih_l1.requires_grad_(False)  # bias_hh_l1 still trains, so the summed bias does
    ours = LSTM.from_torch(reference)
    assert not ours.training and not any(cell.training for cell in ours.cells)
    first, second = ours.cells
    assert not any(getattr(first, f"W_h{gate}").requires_grad for gate in first.GATES)
    assert all(getattr(first, f"W_i{gate}").requires_grad for gate in first.GATES)
    assert all(getattr(second, f"b_{gate}").requires_grad for gate in second.GATES)
    x = torch.randn(6, 2, 3, dtype=F64)
    assert_close(ours(x)[0], reference(x)[0], F64, "eval mode: no dropout on either side")
    back = ours.to_torch()
    assert not back.training and not back.weight_hh_l0.requires_grad and back.weight_ih_l0.requires_grad
    assert ours.train().to_torch().training
    cell = LSTMCell.from_torch(nn.LSTMCell(3, 4).eval().requires_grad_(False))
    assert not cell.training and not any(parameter.requires_grad for parameter in cell.parameters())
    assert not cell.to_torch().training and not cell.to_torch().weight_ih.requires_grad


def test_to_torch_refuses_a_gate_frozen_alone():
    lstm = LSTM(3, 4)
    lstm.cells[0].W_hf.requires_grad_(False)
    raised = bad_call(lstm.to_torch)
    assert raised.type is ValueError and "W_hf" in str(raised.value) and "weight_hh" in str(raised.value)


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_torch_utils_checkpoint_works_on_the_first_call(use_reentrant):
    class Fresh(LSTMCell):  # a class of its own: no check of it has run before this test's first call
        pass

    torch.manual_seed(0)
    lstm = LSTM(3, 4, 2, variant=Fresh, dtype=F64)
    x = torch.randn(5, 2, 3, dtype=F64, requires_grad=True)
    inputs = [x, *lstm.parameters()]

    def output(x):
        return lstm(x)[0]

    def checkpointed(x):
        return torch.utils.checkpoint.checkpoint(output, x, use_reentrant=use_reentrant)

    gradients = []
    for run in (checkpointed, output):
        run(x).sum().backward()  # the reentrant checkpoint supports .backward() only
        gradients.append([tensor.grad.clone() for tensor in inputs])
        for tensor in inputs:
            tensor.grad = None
    for actual, wanted in zip(*gradients, strict=True):
        assert_close(actual, wanted, F64, "gradient through torch.utils.checkpoint")


def test_torch_jit_trace_steps_the_cell_plainly():
    # A custom autograd Function under torch.jit.trace once crashed the process: run it in one of its own.
    import subprocess
    import sys
    from pathlib import Path

    script = """
import warnings, torch
from lstm_cell import LSTM
warnings.simplefilter("ignore", torch.jit.TracerWarning)
torch.manual_seed(0)
lstm = LSTM(3, 4, 2, dtype=torch.float64)
x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
traced = torch.jit.trace(lstm, x)
output = traced(x)[0]
torch.testing.assert_close(output, lstm(x)[0])
output.sum().backward()
assert x.grad is not None and torch.isfinite(x.grad).all()
print("traced")
"""
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "traced", done.stderr[-2000:]


def test_the_module_reads_in_the_promised_order():
    source = inspect.getsource(lstm_cell)
    assert source.index("c' = f ⊙ c + i ⊙ g") < source.index("class LSTMCell")
    assert (
        source.index("class LSTMCell") < source.index("class PeepholeLSTMCell") < source.index("class LSTM(")
    )


def test_a_forward_that_clips_beyond_the_check_s_reach_is_what_trains():
    class ClippedForward(LSTMCell):  # the clip acts only where |c| > 20, which small states never reach
        def forward(self, x, state=None):
            h, c = super().forward(x, state)
            return h, c.clamp(-20, 20)

    torch.manual_seed(0)
    lstm = LSTM(1, 3, variant=ClippedForward, dtype=F64)
    with torch.no_grad():
        lstm.cells[0].b_i.fill_(4)
        lstm.cells[0].b_g.fill_(1)
        lstm.cells[0].b_f.fill_(6)
    assert lstm.training_path() == "autograd"
    x = torch.ones(60, 2, 1, dtype=F64)
    gradients_match_step_by_step(lstm, x)
    with torch.no_grad():
        assert lstm(x)[1][1].abs().max() == 20  # the clip, in training and without gradients


def test_a_plain_tensor_the_step_trains_gets_its_gradient():
    class Scaled(LSTMCell):
        def __init__(self, *args, **options):
            super().__init__(*args, **options)
            self.gain = torch.ones(self.hidden_size, dtype=first_weight_dtype(self), requires_grad=True)

        def output_activation(self, c_next):
            return self.gain * torch.tanh(c_next)

    torch.manual_seed(0)
    lstm = LSTM(3, 4, variant=Scaled, dtype=F64)
    x = torch.randn(6, 2, 3, dtype=F64)
    gains = []
    for run in (lambda: lstm(x)[0], lambda: step_by_step_reference(lstm, x)[0]):
        gains.append(torch.autograd.grad(run().square().sum(), lstm.cells[0].gain)[0])
    assert_close(gains[0], gains[1], F64, "gradient of the plain tensor")


def test_frozen_parameters_of_a_variant_need_no_gradient():
    torch.manual_seed(0)
    lstm = LSTM(3, 4, variant="peephole", dtype=F64)
    lstm.cells[0].p_i.requires_grad_(False)
    gradients_match_step_by_step(lstm, torch.randn(6, 2, 3, dtype=F64))
    lstm.requires_grad_(False)  # input saliency: only x needs a gradient
    gradients_match_step_by_step(lstm, torch.randn(6, 2, 3, dtype=F64))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_a_pruned_cell_runs_like_stepping_it():
    import torch.nn.utils.prune  # here: importing it scripts functions, with a deprecation warning

    torch.manual_seed(0)
    lstm = LSTM(3, 4, dtype=F64)
    torch.nn.utils.prune.l1_unstructured(lstm.cells[0], "W_hg", 0.5)
    gradients_match_step_by_step(lstm, torch.randn(6, 2, 3, dtype=F64))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")  # forward_ad's own, any category
def test_forward_mode_ad_matches_torch_lstm():
    torch.manual_seed(0)
    reference = nn.LSTM(3, 4, dtype=F64)
    ours = LSTM.from_torch(reference)
    x, tangent = torch.randn(2, 5, 2, 3, dtype=F64)
    tangents = []
    for model in (ours, reference):
        with torch.autograd.forward_ad.dual_level():
            output, _ = model(torch.autograd.forward_ad.make_dual(x, tangent))
            tangents.append(torch.autograd.forward_ad.unpack_dual(output).tangent)
    assert_close(tangents[0], tangents[1], F64, "forward-mode derivative")
