"""The shared layers: attention paths, window partitioning and padding masks, drop path."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

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
from vitzoo.models.linear import kernel_counts, onednn_available, onednn_linear, reset_kernel_counts

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


@pytest.mark.skipif(not onednn_available(), reason='PyTorch built without oneDNN')
def test_mlp_fuses_only_where_nothing_can_tell():
    torch.manual_seed(0)
    mlp = randomize_(Mlp(8, 16)).eval()
    x = torch.randn(2, 5, 8)
    expected = F.linear(F.gelu(F.linear(x, mlp.fc1.weight, mlp.fc1.bias)), mlp.fc2.weight, mlp.fc2.bias)
    with torch.no_grad(), onednn_linear(True):
        assert mlp.fused
        reset_kernel_counts()
        torch.testing.assert_close(mlp(x), expected, rtol=1e-5, atol=1e-6)
        assert kernel_counts() == {('forward_gelu', 'onednn'): 1, ('forward', 'onednn'): 1}
    mlp.train()
    assert type(mlp(x).grad_fn).__name__ == '_MlpFunctionBackward'  # one autograd node
    mlp.drop.p = 0.1  # active dropout: the modules run one by one
    assert not mlp.fused and type(mlp(x).grad_fn).__name__ != '_MlpFunctionBackward'
    mlp.drop.p = 0.
    seen = []
    mlp.fc2.register_forward_hook(lambda module, args, out: seen.append(out))
    assert not mlp.fused
    with torch.no_grad():
        torch.testing.assert_close(mlp(x), expected, rtol=1e-5, atol=1e-6)
    assert len(seen) == 1
    mlp.fc2._forward_hooks.clear()
    mlp.fc1 = nn.Sequential(mlp.fc1)  # a wrapped fc1 (an adapter) keeps its own call
    assert not mlp.fused
    mlp.fc1 = mlp.fc1[0]
    mlp.act = nn.GELU(approximate='tanh')
    assert not mlp.fused
