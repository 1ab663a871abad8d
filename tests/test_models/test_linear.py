"""vitzoo.models.linear: every product on each kernel against float64 ATen, the modes, which kernel ran
(counted, and seen by the profiler), the ATen fallbacks, and the operators torch.compile calls."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vitzoo.models import linear as linear_module
from vitzoo.models.linear import (
    Linear,
    kernel_counts,
    linear,
    linear_mode,
    mlp,
    onednn_available,
    onednn_linear,
    reset_kernel_counts,
    set_onednn_linear,
)

needs_onednn = pytest.mark.skipif(not onednn_available(), reason='PyTorch built without oneDNN')

# every test here depends on which kernels run: make test repeats them on other kernel paths
pytestmark = pytest.mark.kernel_path


def onednn_calls(fn) -> int:
    """How many times ``fn()`` called oneDNN's linear kernel (seen by the profiler)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(event.count for event in prof.key_averages() if event.key == 'mkldnn::_linear_pointwise')


def linear_reference(x, weight, bias, gelu):
    """float64 ATen linear (and exact GELU) with its gradients."""
    leaves = [t.detach().double().requires_grad_() for t in (x, weight, bias) if t is not None]
    out = F.linear(*leaves)
    return F.gelu(out) if gelu else out, leaves


# (tokens, in, out): both operand orders of oneDNN's weight gradient (out >= in, out < in), odd widths
LINEAR_SHAPES = [((2, 50), 128, 256), ((2, 50), 256, 128), ((30, ), 96, 192), ((3, 7, 9), 12, 5), ((60, ), 96, 96)]


@needs_onednn
@pytest.mark.parametrize('lead,fan_in,fan_out', LINEAR_SHAPES)
@pytest.mark.parametrize('with_bias', [True, False])
@pytest.mark.parametrize('gelu', [False, True])
@pytest.mark.parametrize('contiguous', [True, False])
def test_onednn_values_and_gradients_match_float64_aten(lead, fan_in, fan_out, with_bias, gelu, contiguous):
    """Mode ``onednn``: the forward (with and without the fused GELU), the input and the weight gradient
    all run on oneDNN, and each equals float64 ATen."""
    torch.manual_seed(0)
    x = torch.randn(*lead, fan_in) if contiguous else torch.randn(fan_in, *lead).movedim(0, -1)
    weight, bias = torch.randn(fan_out, fan_in) / fan_in**0.5, torch.randn(fan_out) if with_bias else None
    # a zero-stride gradient (what out.sum().backward() sends) when not contiguous
    grad_out = torch.randn(*lead, fan_out) if contiguous else torch.randn(fan_out).expand(*lead, fan_out)
    expected, leaves = linear_reference(x, weight, bias, gelu)
    expected.backward(grad_out.double())

    with onednn_linear(True):
        with torch.no_grad():
            assert onednn_calls(lambda: linear(x, weight, bias, gelu=gelu)) == 1
            out = linear(x, weight, bias, gelu=gelu)
        torch.testing.assert_close(out.double(), expected.detach(), rtol=1e-5, atol=1e-5)

        params = [t.detach().clone().requires_grad_() for t in (x, weight, bias) if t is not None]
        out = linear(*params[:2], params[2] if with_bias else None, gelu=gelu)
        reset_kernel_counts()
        assert onednn_calls(lambda: out.backward(grad_out)) == 2
    assert kernel_counts() == {('input_grad', 'onednn'): 1,
                               ('weight_grad', 'onednn-nk' if fan_out >= fan_in else 'onednn-kn'): 1}
    torch.testing.assert_close(out.detach().double(), expected.detach(), rtol=1e-5, atol=1e-5)
    for param, leaf in zip(params, leaves, strict=True):
        torch.testing.assert_close(param.grad.double(), leaf.grad, rtol=1e-5, atol=1e-5)


@needs_onednn
@pytest.mark.parametrize('mode', ['onednn', 'auto', 'aten'])
def test_kernel_counts_are_what_ran(mode):
    """The counts come from the calls: a training step and an inference call, checked against the
    oneDNN calls the profiler sees, in every mode."""
    layer = Linear(64, 128)
    x = torch.randn(4, 33, 64, requires_grad=True)
    with onednn_linear(mode):
        reset_kernel_counts()

        def step():
            layer(x).square().sum().backward()
            with torch.no_grad():
                linear(x, layer.weight, layer.bias, gelu=True)

        step()  # in auto, the first step measures the products and writes the choices
        reset_kernel_counts()
        seen = onednn_calls(step)
    counts = kernel_counts()
    products = ['forward', 'forward_gelu'] + ([] if mode == 'aten' else ['input_grad', 'weight_grad'])
    assert sorted(product for product, _ in counts) == products  # ATen's autograd computes aten's gradients
    assert all(calls == 1 for calls in counts.values())
    assert seen == sum(calls for (_, kernel), calls in counts.items() if kernel != 'aten')
    if mode == 'aten':
        assert seen == 0
    elif mode == 'onednn':
        assert seen == 4


@pytest.mark.parametrize('mode', ['onednn', 'auto', 'aten'])
@pytest.mark.parametrize('trainable', ['all', 'input', 'weights'])
@pytest.mark.parametrize('contiguous', [True, False])
def test_mlp_values_and_gradients_match_float64_aten(mode, trainable, contiguous):
    """``mlp``: one autograd node (the GELU gradient written in place) with the gradients of float64
    ``fc2(gelu(fc1(x)))`` for every input asked for, in every mode, for any gradient layout."""
    if mode != 'aten' and not onednn_available():
        pytest.skip('PyTorch built without oneDNN')
    torch.manual_seed(0)
    x = torch.randn(3, 37, 96)
    params = [torch.randn(384, 96) / 96**0.5, torch.randn(384) * 0.1, torch.randn(96, 384) / 384**0.5,
              torch.randn(96) * 0.1]
    grad_out = torch.randn(3, 37, 96) if contiguous else torch.randn(96).expand(3, 37, 96)
    leaves = [t.double().requires_grad_() for t in (x, *params)]
    expected = F.linear(F.gelu(F.linear(*leaves[:3])), *leaves[3:])
    expected.backward(grad_out.double())
    inputs = [t.clone().requires_grad_(trainable == 'all' or (trainable == 'input') == (i == 0))
              for i, t in enumerate((x, *params))]
    with onednn_linear(mode):
        out = mlp(*inputs)
        assert type(out.grad_fn).__name__ == '_MlpFunctionBackward'
        out.backward(grad_out)
    torch.testing.assert_close(out.detach().double(), expected.detach(), rtol=1e-5, atol=1e-5)
    for tensor, leaf in zip(inputs, leaves, strict=True):
        assert (tensor.grad is not None) == tensor.requires_grad
        if tensor.requires_grad:
            torch.testing.assert_close(tensor.grad.double(), leaf.grad, rtol=1e-5, atol=1e-5)


@needs_onednn
@pytest.mark.parametrize('trainable', ['weight', 'input'])
def test_gives_only_the_gradients_asked_for(trainable):
    x, weight, bias = torch.randn(6, 8), torch.randn(4, 8), torch.randn(4)
    (x if trainable == 'input' else weight).requires_grad_()
    with onednn_linear(True):
        linear(x, weight, bias).square().sum().backward()
    assert (x.grad is not None) == (trainable == 'input') and (weight.grad is not None) == (trainable == 'weight')
    assert bias.grad is None


@needs_onednn
def test_left_to_aten_where_aten_must_see_it():
    x, weight = torch.randn(4, 8), torch.randn(3, 8)
    with onednn_linear(False):
        assert not onednn_calls(lambda: linear(x, weight))
        assert torch.equal(linear(x, weight, gelu=True), F.gelu(F.linear(x, weight)))
    with onednn_linear(True):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert linear(x, weight).dtype == torch.bfloat16
        assert not onednn_calls(lambda: linear(x.double(), weight.double()))
        with FlopCounterMode(display=False) as counter:  # dispatch modes must see an aten op
            linear(x, weight)
        assert counter.get_total_flops() == 2 * 4 * 8 * 3
        assert torch.jit.trace(nn.Sequential(Linear(8, 3)), x).inlined_graph.findNode('aten::linear') is not None


def test_modes_and_their_errors(monkeypatch):
    assert linear_mode() == linear_module._mode_from_environment()
    with onednn_linear(True):
        assert linear_mode() == 'onednn'
        with onednn_linear('aten'):
            assert linear_mode() == 'aten'
        assert linear_mode() == 'onednn'
    with pytest.raises(ValueError, match="'fast'.*auto"):
        set_onednn_linear('fast')
    for value, mode in [('', 'auto'), ('auto', 'auto'), ('1', 'onednn'), ('0', 'aten'), (' ATEN ', 'aten')]:
        monkeypatch.setenv('VITZOO_ONEDNN_LINEAR', value)
        assert linear_module._mode_from_environment() == mode
    monkeypatch.setenv('VITZOO_ONEDNN_LINEAR', 'yes')
    with pytest.raises(ValueError, match="VITZOO_ONEDNN_LINEAR='yes': use auto"):
        linear_module._mode_from_environment()


def test_refuses_onednn_in_a_build_without_it(monkeypatch):
    monkeypatch.setattr(linear_module, 'onednn_available', lambda: False)
    for mode in (True, 'auto'):
        with pytest.raises(RuntimeError, match='no oneDNN'):
            set_onednn_linear(mode)
    monkeypatch.setenv('VITZOO_ONEDNN_LINEAR', '1')
    assert linear_module._mode_from_environment() == 'aten'


@needs_onednn
def test_operators_pass_opcheck():
    """Schema, fake (meta) implementation and autograd of the operators torch.compile calls."""
    x, weight, bias = torch.randn(3, 5, 96, requires_grad=True), torch.randn(192, 96, requires_grad=True), \
        torch.randn(192, requires_grad=True)
    with onednn_linear(True):
        torch.library.opcheck(torch.ops.vitzoo.linear.default, (x, weight, bias))
        torch.library.opcheck(torch.ops.vitzoo.linear.default, (x, weight, None))
        torch.library.opcheck(torch.ops.vitzoo.linear_input_grad.default, (torch.randn(15, 192), torch.randn(192, 96)))
        torch.library.opcheck(torch.ops.vitzoo.linear_weight_grad.default, (torch.randn(15, 192), torch.randn(15, 96)))


@needs_onednn
def test_compiled_linear_runs_the_operators_with_aten_gradients():
    torch.manual_seed(0)
    x, weight, bias = torch.randn(2, 40, 128), torch.randn(256, 128) / 128**0.5, torch.randn(256)
    grad_out = torch.randn(2, 40, 256)
    expected, leaves = linear_reference(x, weight, bias, gelu=True)
    expected.backward(grad_out.double())
    graphs = []

    def backend(gm, example_inputs):  # aot_eager, keeping the captured graphs
        graphs.append(gm)
        return torch._dynamo.backends.debugging.aot_eager(gm, example_inputs)

    params = [t.clone().requires_grad_() for t in (x, weight, bias)]
    torch._dynamo.reset()
    with onednn_linear(True):
        out = torch.compile(lambda *a: linear(*a, gelu=True), fullgraph=True, backend=backend)(*params)
        reset_kernel_counts()
        out.backward(grad_out)
    assert kernel_counts() == {('input_grad', 'onednn'): 1, ('weight_grad', 'onednn-nk'): 1}
    assert any(node.target is torch.ops.vitzoo.linear.default for g in graphs for node in g.graph.nodes)
    torch.testing.assert_close(out.detach().double(), expected.detach(), rtol=1e-5, atol=1e-5)
    for param, leaf in zip(params, leaves, strict=True):
        torch.testing.assert_close(param.grad.double(), leaf.grad, rtol=1e-5, atol=1e-5)
