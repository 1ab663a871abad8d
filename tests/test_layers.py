"""The shared layers: the oneDNN linear, attention paths, window partitioning and padding masks, drop path."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vitzoo.models import layers
from vitzoo.models.layers import (
    Attention,
    DropPath,
    Mlp,
    PosConv,
    WindowAttention,
    scaled_dot_product_attention,
    window_partition,
    window_reverse,
)

from helpers import randomize_, window_attention_reference


@pytest.mark.parametrize('mask_kind', [None, 'bool', 'float'])
def test_sdpa_fused_equals_eager(mask_kind):
    q, k, v = (torch.randn(2, 3, 10, 8) for _ in range(3))
    mask = None
    if mask_kind == 'bool':
        mask = torch.rand(2, 1, 10, 10) > 0.3
        mask[..., 0] = True
    elif mask_kind == 'float':
        mask = torch.randn(2, 1, 10, 10)
    fused = scaled_dot_product_attention(q, k, v, mask, fused=True)
    eager = scaled_dot_product_attention(q, k, v, mask, fused=False)
    assert torch.allclose(fused, eager, atol=1e-6)


def test_window_partition_roundtrip():
    x = torch.randn(2, 14, 21, 5)
    windows = window_partition(x, 7)
    assert windows.shape == (2 * 2 * 3, 49, 5)
    assert torch.equal(windows[1], x[0, :7, 7:14].reshape(49, 5))
    assert torch.equal(window_reverse(windows, 7, 14, 21), x)


# (map size, what is padded) with 7x7 windows: one-sided padding is where the official
# segmentation code's mask (``mask[:, -pad_b:, :]``, everything when pad_b == 0) goes wrong.
PADDINGS = [((14, 10), 'right only'), ((10, 14), 'bottom only'), ((9, 12), 'both'), ((14, 7), 'none'),
            ((5, 6), 'one window')]


@pytest.mark.parametrize('fused', [True, False], ids=['fused', 'eager'])
@pytest.mark.parametrize('mask_padding', [False, True], ids=['zero_padding', 'mask_padding'])
@pytest.mark.parametrize('size,padded', PADDINGS, ids=[p[1] for p in PADDINGS])
def test_window_attention_matches_written_out_reference(size, padded, mask_padding, fused):
    attn = randomize_(WindowAttention(16, 2, window_size=7, mask_padding=mask_padding)).eval()
    attn.fused_attn = fused
    x = torch.randn(2, size[0] * size[1], 16)
    with torch.no_grad():
        ours = attn(x, size)
        assert (ours - window_attention_reference(attn, x, size, mask_padding)).abs().max() <= 1e-6
        other = window_attention_reference(attn, x, size, not mask_padding)
    if padded == 'none':  # nothing to mask: both settings are the same attention
        assert (ours - other).abs().max() <= 1e-6
    else:
        assert (ours - other).abs().max() > 1e-3


def test_window_attention_masked_padding_equals_attention_on_real_tokens():
    attn = randomize_(WindowAttention(16, 2, window_size=7, mask_padding=True)).eval()
    plain = Attention(16, 2).eval()
    plain.load_state_dict(attn.state_dict())
    x = torch.randn(1, 5 * 6, 16)  # a 5x6 map: one window, 19 padded positions
    with torch.no_grad():
        assert torch.allclose(attn(x, (5, 6)), plain(x), atol=1e-6)
        attn.mask_padding = False
        assert not torch.allclose(attn(x, (5, 6)), plain(x), atol=1e-4)


def test_window_attention_without_padding_is_per_window_attention():
    attn = randomize_(WindowAttention(8, 2, window_size=2)).eval()
    x = torch.randn(1, 4 * 4, 8)
    with torch.no_grad():
        out = attn(x, (4, 4)).view(1, 4, 4, 8)
        top_left = x.view(1, 4, 4, 8)[:, :2, :2].reshape(1, 4, 8)
        assert torch.allclose(out[:, :2, :2].reshape(1, 4, 8), Attention.forward(attn, top_left), atol=1e-6)


def test_drop_path_scales_kept_samples():
    layer = DropPath(0.5).train()
    x = torch.ones(1000, 4)
    out = layer(x)
    assert set(out[:, 0].unique().tolist()) <= {0.0, 2.0}
    assert 0.4 < (out[:, 0] > 0).float().mean() < 0.6
    assert torch.equal(layer.eval()(x), x)


def test_pos_conv_is_residual_depthwise_conv():
    layer = randomize_(PosConv(4))
    x = torch.randn(2, 12, 4)
    grid = x.transpose(1, 2).reshape(2, 4, 3, 4)
    expected = grid + torch.nn.functional.conv2d(grid, layer.proj.weight, layer.proj.bias, padding=1, groups=4)
    with torch.no_grad():
        assert torch.allclose(layer(x, (3, 4)), expected.flatten(2).transpose(1, 2), atol=1e-6)


# ----------------------------------------------------------------------------- oneDNN linear

needs_onednn = pytest.mark.skipif(not layers._ONEDNN_LINEAR_AVAILABLE, reason='PyTorch built without oneDNN')


def ran_onednn(fn) -> bool:
    """Whether ``fn()`` called oneDNN's linear kernel."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return any(event.key == 'mkldnn::_linear_pointwise' for event in prof.key_averages())


def linear_reference(x, weight, bias, gelu):
    """float64 ATen linear (and exact GELU) with its gradients."""
    leaves = [t.detach().double().requires_grad_() for t in (x, weight, bias) if t is not None]
    out = F.linear(*leaves)
    return F.gelu(out) if gelu else out, leaves


# (tokens, in, out): the weight gradient takes oneDNN's two operand orders (out >= in, out < in)
# and ATen's mm (narrow products)
LINEAR_SHAPES = [((2, 50), 128, 256), ((2, 50), 256, 128), ((30, ), 96, 192), ((3, 7, 9), 12, 5), ((60, ), 96, 96)]


@needs_onednn
@pytest.mark.parametrize('lead,fan_in,fan_out', LINEAR_SHAPES)
@pytest.mark.parametrize('with_bias', [True, False])
@pytest.mark.parametrize('gelu', [False, True])
@pytest.mark.parametrize('contiguous', [True, False])
def test_onednn_linear_values_and_gradients_match_float64_aten(lead, fan_in, fan_out, with_bias, gelu, contiguous):
    torch.manual_seed(0)
    x = torch.randn(*lead, fan_in) if contiguous else torch.randn(fan_in, *lead).movedim(0, -1)
    weight, bias = torch.randn(fan_out, fan_in) / fan_in**0.5, torch.randn(fan_out) if with_bias else None
    # a zero-stride gradient (what out.sum().backward() sends) when not contiguous
    grad_out = torch.randn(*lead, fan_out) if contiguous else torch.randn(fan_out).expand(*lead, fan_out)
    expected, leaves = linear_reference(x, weight, bias, gelu)
    expected.backward(grad_out.double())

    with torch.no_grad():
        assert ran_onednn(lambda: layers.linear(x, weight, bias, gelu=gelu))
        out = layers.linear(x, weight, bias, gelu=gelu)
    torch.testing.assert_close(out.double(), expected.detach(), rtol=1e-5, atol=1e-5)

    params = [t.detach().clone().requires_grad_() for t in (x, weight, bias) if t is not None]
    out = layers.linear(*params[:2], params[2] if with_bias else None, gelu=gelu)
    assert ran_onednn(lambda: out.backward(grad_out))
    torch.testing.assert_close(out.detach().double(), expected.detach(), rtol=1e-5, atol=1e-5)
    for param, leaf in zip(params, leaves, strict=True):
        torch.testing.assert_close(param.grad.double(), leaf.grad, rtol=1e-5, atol=1e-5)


@needs_onednn
@pytest.mark.parametrize('trainable', ['weight', 'input'])
def test_onednn_linear_gives_only_the_gradients_asked_for(trainable):
    x, weight, bias = torch.randn(6, 8), torch.randn(4, 8), torch.randn(4)
    (x if trainable == 'input' else weight).requires_grad_()
    layers.linear(x, weight, bias).square().sum().backward()
    assert (x.grad is not None) == (trainable == 'input') and (weight.grad is not None) == (trainable == 'weight')
    assert bias.grad is None


@needs_onednn
def test_onednn_linear_is_left_to_aten_where_aten_must_see_it():
    x, weight = torch.randn(4, 8), torch.randn(3, 8)
    with layers.onednn_linear(False):
        assert not ran_onednn(lambda: layers.linear(x, weight))
        assert torch.equal(layers.linear(x, weight, gelu=True), F.gelu(F.linear(x, weight)))
    assert layers.use_onednn_linear()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert layers.linear(x, weight).dtype == torch.bfloat16
    assert not ran_onednn(lambda: layers.linear(x.double(), weight.double()))
    with FlopCounterMode(display=False) as counter:  # dispatch modes must see an aten op
        layers.linear(x, weight)
    assert counter.get_total_flops() == 2 * 4 * 8 * 3
    assert torch.jit.trace(nn.Sequential(layers.Linear(8, 3)), x).inlined_graph.findNode('aten::linear') is not None


def test_set_onednn_linear_refuses_a_build_without_onednn(monkeypatch):
    monkeypatch.setattr(layers, '_ONEDNN_LINEAR_AVAILABLE', False)
    with pytest.raises(RuntimeError, match='no oneDNN'):
        layers.set_onednn_linear(True)


@needs_onednn
def test_mlp_fuses_gelu_only_where_nothing_can_tell():
    torch.manual_seed(0)
    mlp = randomize_(Mlp(8, 16)).eval()
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        expected = F.linear(F.gelu(F.linear(x, mlp.fc1.weight, mlp.fc1.bias)), mlp.fc2.weight, mlp.fc2.bias)
        assert mlp.fuse_gelu
        torch.testing.assert_close(mlp(x), expected, rtol=1e-5, atol=1e-6)
        seen = []
        mlp.fc1.register_forward_hook(lambda module, args, out: seen.append(out))
        assert not mlp.fuse_gelu
        mlp(x)
        assert len(seen) == 1
        mlp.fc1 = nn.Sequential(mlp.fc1)  # a wrapped fc1 (an adapter) keeps its own call
        assert not mlp.fuse_gelu
        mlp.act = nn.GELU(approximate='tanh')
        assert not mlp.fuse_gelu


@needs_onednn
def test_onednn_operators_pass_opcheck():
    """Schema, fake (meta) implementation and autograd of the operators torch.compile calls."""
    x, weight, bias = torch.randn(3, 5, 96, requires_grad=True), torch.randn(192, 96, requires_grad=True), \
        torch.randn(192, requires_grad=True)
    torch.library.opcheck(torch.ops.vitzoo.onednn_linear.default, (x, weight, bias))
    torch.library.opcheck(torch.ops.vitzoo.onednn_linear.default, (x, weight, None))
    torch.library.opcheck(torch.ops.vitzoo.onednn_weight_grad.default, (torch.randn(15, 192), torch.randn(15, 96)))


@needs_onednn
def test_compiled_linear_runs_the_onednn_operator_with_aten_gradients():
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
    out = torch.compile(lambda *a: layers.linear(*a, gelu=True), fullgraph=True, backend=backend)(*params)
    out.backward(grad_out)
    assert any(node.target is torch.ops.vitzoo.onednn_linear.default for g in graphs for node in g.graph.nodes)
    torch.testing.assert_close(out.detach().double(), expected.detach(), rtol=1e-5, atol=1e-5)
    for param, leaf in zip(params, leaves, strict=True):
        torch.testing.assert_close(param.grad.double(), leaf.grad, rtol=1e-5, atol=1e-5)
