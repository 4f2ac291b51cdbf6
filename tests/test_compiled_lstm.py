"""torch.compile of the hand-written LSTM computes what torch.nn.LSTM computes, gradients included.

Most cases compile with the aot_eager backend: it traces the forward and backward passes as Inductor
would, then runs the traced graphs with PyTorch's own kernels, so it needs no C++ compiler and takes
about a second. One case compiles with Inductor through `experiment_utils.compile_model`, as the
scripts do with --compile (tens of seconds on a 2-core CPU without a warm cache).
"""

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from experiment_utils import compile_model
from lstm_cell import LSTM

GATES = "ifgo"  # PyTorch's order of the gates inside its stacked weights
TOLERANCE = 1e-5  # float32
SIZES = {"seq_len": 4, "batch": 3, "input_size": 2, "hidden_size": 5}
# Compiled, the layer steps the cell itself and autograd differentiates the traced graph; the
# hand-derived backward pass is eager-only and says so.
COMPILABLE_BACKWARDS = ("auto", "autograd")


def compile_failure(backend: str) -> str | None:
    """Why this platform cannot compile a small function with `backend`, or None when it can."""
    if not hasattr(torch, "compile"):
        return f"torch.compile needs PyTorch ≥ 2.0, this is {torch.__version__}"
    try:
        torch.compile(lambda x: torch.tanh(x) * 2, backend=backend, fullgraph=True)(torch.ones(3))
    except Exception as error:  # whatever stops a trivial function from compiling is the platform's
        return f"torch.compile with {backend} does not work here: {type(error).__name__}: {error}"[:300]
    finally:
        torch._dynamo.reset()
    return None


@pytest.fixture(scope="module")
def aot_eager():
    reason = compile_failure("aot_eager")
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def inductor():
    reason = compile_failure("inductor")  # Inductor needs a working C++ compiler on a CPU
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(autouse=True)
def fresh_compiler():
    """Each test compiles anew, so that none runs on another's compiled code or recompile budget."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def results_and_gradients(model, x, state):
    """output, h_n, c_n, the gradients of the inputs and those of the parameters, for a loss that
    weighs every result differently."""
    output, (h_n, c_n) = model(x, state)
    loss = 0
    for tensor in (output, h_n, c_n):
        weights = torch.linspace(-1, 1, tensor.numel()).view_as(tensor)
        loss = loss + (weights * tensor).sum() + (tensor**2).sum()
    inputs = [x, *(state or ())]
    gradients = torch.autograd.grad(loss, inputs + list(model.parameters()))
    return (output, h_n, c_n), gradients[: len(inputs)], gradients[len(inputs) :]


def assert_close(actual, expected, what):
    torch.testing.assert_close(actual, expected, rtol=TOLERANCE, atol=TOLERANCE, msg=lambda m: f"{what}: {m}")


def assert_matches_torch_lstm(compiled, ours: LSTM, reference: nn.LSTM, x, state) -> None:
    results, input_gradients, our_gradients = results_and_gradients(compiled, x, state)
    expected, expected_input_gradients, torch_gradients = results_and_gradients(reference, x, state)
    for what, actual, wanted in zip(("output", "h_n", "c_n"), results, expected, strict=True):
        assert_close(actual, wanted, what)
    names = ("x", "h_0", "c_0")[: len(input_gradients)]
    for what, actual, wanted in zip(names, input_gradients, expected_input_gradients, strict=True):
        assert_close(actual, wanted, f"gradient of {what}")

    # Every gate matrix of ours against its slice of PyTorch's stacked [i; f; g; o] weights.
    ours_by_name = dict(zip([name for name, _ in ours.named_parameters()], our_gradients, strict=True))
    torch_by_name = dict(
        zip([name for name, _ in reference.named_parameters()], torch_gradients, strict=True)
    )
    for layer in range(reference.num_layers):
        for torch_name, prefix in (("weight_ih", "W_i"), ("weight_hh", "W_h"), ("bias_ih", "b_")):
            stacked = torch_by_name[f"{torch_name}_l{layer}"]
            for gate, wanted in zip(GATES, stacked.chunk(4), strict=True):
                name = f"cells.{layer}.{prefix}{gate}"
                assert_close(ours_by_name[name], wanted, f"gradient of {name}")


def lstms_and_inputs(num_layers: int, batch_first: bool, with_state: bool, backward: str = "auto"):
    torch.manual_seed(0)
    seq_len, batch, input_size, hidden_size = SIZES.values()
    reference = nn.LSTM(input_size, hidden_size, num_layers, batch_first=batch_first)
    ours = LSTM.from_torch(reference)
    ours.backward = backward
    shape = (batch, seq_len, input_size) if batch_first else (seq_len, batch, input_size)
    x = torch.randn(shape, requires_grad=True)
    state = None
    if with_state:
        state = tuple(torch.randn(num_layers, batch, hidden_size, requires_grad=True) for _ in range(2))
    return ours, reference, x, state


@pytest.mark.usefixtures("aot_eager")
@pytest.mark.parametrize("backward", COMPILABLE_BACKWARDS)
@pytest.mark.parametrize(("num_layers", "batch_first", "with_state"), [(1, False, False), (2, True, True)])
def test_compiled_lstm_matches_torch_lstm(backward, num_layers, batch_first, with_state):
    ours, reference, x, state = lstms_and_inputs(num_layers, batch_first, with_state, backward)
    # fullgraph: a graph break would be an error, so the whole forward and backward pass is traced.
    compiled = torch.compile(ours, backend="aot_eager", fullgraph=True)
    assert_matches_torch_lstm(compiled, ours, reference, x, state)


@pytest.mark.usefixtures("inductor")
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_lstm_compiled_as_the_scripts_compile_it_matches_torch_lstm():
    ours, reference, x, state = lstms_and_inputs(num_layers=1, batch_first=True, with_state=True)
    counters.clear()
    assert_matches_torch_lstm(compile_model(ours), ours, reference, x, state)
    assert not counters["graph_break"], "the whole forward and backward pass runs compiled"


@pytest.mark.usefixtures("aot_eager")
@pytest.mark.parametrize("backward", COMPILABLE_BACKWARDS)
def test_compiled_lstm_passes_gradcheck(backward):
    torch.manual_seed(0)
    lstm = LSTM(2, 3, num_layers=2, backward=backward, dtype=torch.float64)
    compiled = torch.compile(lstm, backend="aot_eager", fullgraph=True, dynamic=False)

    def run(x, h_0, c_0):
        output, (h_n, c_n) = compiled(x, (h_0, c_0))
        return output, h_n, c_n

    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    h_0, c_0 = (torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(run, (x, h_0, c_0))


@pytest.mark.usefixtures("aot_eager")
def test_compiling_the_hand_derived_backward_pass_is_refused_clearly():
    ours, _, x, state = lstms_and_inputs(num_layers=1, batch_first=False, with_state=False, backward="bptt")
    with pytest.raises(RuntimeError, match=r"cannot run under torch\.compile.*backward='auto' or 'autograd'"):
        torch.compile(ours, backend="aot_eager")(x, state)
