"""The linear layer of every vitzoo backbone, with its matrix products on the faster of two kernels.

PyTorch sends fp32 ``F.linear`` on CPU to MKL's sgemm. oneDNN's fp32 GEMM ships in the same
PyTorch and is about twice as fast on the AVX-512 AMD EPYC of vitzoo's benchmarks, but slower on
other processors (an AVX2-only EPYC). Which one runs each product (the forward, the input
gradient, the weight gradient) is therefore measured on the machine (:mod:`.kernel_choice`).

Three modes, from ``VITZOO_ONEDNN_LINEAR`` or :func:`set_onednn_linear`:

* ``auto`` (default): per product kind and shape, the kernel measured faster here (ATen unless
  oneDNN wins clearly), chosen once and cached per processor and torch version;
* ``onednn`` (``VITZOO_ONEDNN_LINEAR=1``): oneDNN for every product;
* ``aten`` (``VITZOO_ONEDNN_LINEAR=0``): ``F.linear`` everywhere, as timm runs.

All are fp32 with fp32 accumulation. ATen keeps everything else: other devices and dtypes,
autocast, ``torch.export``/tracing (an exported file must hold the standard op), tensor subclasses
and dispatch modes (the FLOP counter must see an ``aten`` op). Under ``torch.compile`` the products
are the operators ``vitzoo::linear``, ``vitzoo::linear_input_grad`` and ``vitzoo::linear_weight_grad``,
which inductor calls as external kernels (it would otherwise lower ``F.linear`` to MKL again).
:func:`kernel_counts` counts which kernel ran each product, from the calls themselves.
"""
import collections
import contextlib
import os
from typing import Callable, Counter, Dict, Iterator, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from . import kernel_choice
from .kernel_choice import ATEN

__all__ = ['linear', 'mlp', 'Linear', 'MODES', 'linear_mode', 'use_onednn_linear', 'set_onednn_linear',
           'onednn_linear', 'onednn_available', 'kernel_counts', 'reset_kernel_counts']

MODES = ('auto', 'onednn', 'aten')
ONEDNN = 'onednn'
_ENV_MODES = {'': 'auto', 'auto': 'auto', '1': 'onednn', 'onednn': 'onednn', '0': 'aten', 'aten': 'aten'}


def onednn_available() -> bool:
    """Whether this PyTorch build has oneDNN's linear kernel."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, '_linear_pointwise')


def _mode_from_environment() -> str:
    value = os.environ.get('VITZOO_ONEDNN_LINEAR', '').strip().lower()
    if value not in _ENV_MODES:
        raise ValueError(f'VITZOO_ONEDNN_LINEAR={value!r}: use auto (the default: the kernel measured faster '
                         'for each product), 1 or onednn (oneDNN everywhere), 0 or aten (ATen everywhere)')
    return _ENV_MODES[value] if onednn_available() else 'aten'


_mode = _mode_from_environment()
_counts: Counter[Tuple[str, str]] = collections.Counter()


def linear_mode() -> str:
    """``'auto'``, ``'onednn'`` or ``'aten'``: how :func:`linear` picks its kernels now."""
    return _mode


def use_onednn_linear() -> bool:
    """Whether :func:`linear` may run products on oneDNN (modes ``auto`` and ``onednn``)."""
    return _mode != 'aten'


def set_onednn_linear(enabled: Union[bool, str]) -> str:
    """Set the mode for the whole process: ``True``/``'onednn'``, ``False``/``'aten'`` or ``'auto'``.

    Returns the previous mode (which this function accepts back).

    Raises:
        ValueError: an unknown mode.
        RuntimeError: a mode that uses oneDNN, but this PyTorch build has no oneDNN linear kernel.
    """
    global _mode
    mode = {True: 'onednn', False: 'aten'}.get(enabled, enabled) if isinstance(enabled, bool) else enabled
    if mode not in MODES:
        raise ValueError(f'linear kernel mode {enabled!r}: use one of {MODES} (or True / False)')
    if mode != 'aten' and not onednn_available():
        raise RuntimeError('this PyTorch build has no oneDNN (mkldnn) linear kernel; '
                           "only set_onednn_linear(False) ('aten') is possible")
    previous, _mode = _mode, mode
    return previous


@contextlib.contextmanager
def onednn_linear(enabled: Union[bool, str]) -> Iterator[None]:
    """:func:`set_onednn_linear` for a ``with`` block, restored afterwards."""
    previous = set_onednn_linear(enabled)
    try:
        yield
    finally:
        set_onednn_linear(previous)


def kernel_counts() -> Dict[Tuple[str, str], int]:
    """``{(product, kernel): calls}`` since the last :func:`reset_kernel_counts`.

    Products: ``forward``, ``forward_gelu`` (inference with the GELU fused), ``input_grad``,
    ``weight_grad``; kernels: ``aten``, ``onednn`` (and the two operand orders of oneDNN's weight
    gradient, ``onednn-nk`` and ``onednn-kn``). Every forward product is counted; the gradients of a
    product that ran on ATen's ``F.linear`` (mode ``aten``, other dtypes, tracing) are PyTorch's own
    and are not.
    """
    return dict(_counts)


def reset_kernel_counts() -> None:
    _counts.clear()


# ------------------------------------------------------------------------------------- the products

def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], gelu: bool = False):
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, 'gelu' if gelu else 'none', [], 'none' if gelu else '')


def _aten_forward(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], gelu: bool = False):
    """``F.linear``, then (without autograd: the product is a fresh tensor) the exact GELU in place."""
    out = F.linear(x, weight, bias)
    return torch.ops.aten.gelu_(out) if gelu else out


_FORWARD = {ATEN: _aten_forward, ONEDNN: _onednn}
_INPUT_GRAD = {ATEN: lambda grad, weight: grad.matmul(weight),
               ONEDNN: lambda grad, weight: _onednn(grad, weight.t(), None)}
# grad_2d^T @ x_2d: (M, N), (M, K) -> (N, K); oneDNN takes one operand as its "weight" (two orders)
_WEIGHT_GRAD = {ATEN: lambda grad, x: grad.t().mm(x),
                'onednn-nk': lambda grad, x: _onednn(grad.t(), x.t(), None),
                'onednn-kn': lambda grad, x: _onednn(x.t(), grad.t(), None).t().contiguous()}


def _kernel(product: str, kernels: Dict[str, Callable], tokens: int, widths: Tuple[int, int], operands) -> str:
    """The kernel of this product under the current mode (measured on ``operands`` in ``auto``)."""
    if _mode == 'aten':
        kernel = ATEN
    elif _mode == 'onednn':
        kernel = ONEDNN if ONEDNN in kernels else ('onednn-nk' if widths[0] >= widths[1] else 'onednn-kn')
    else:
        kernel = kernel_choice.choose(product, tokens, widths, lambda: {
            name: (lambda fn=fn: fn(*operands)) for name, fn in kernels.items()})
    _counts[product, kernel] += 1
    return kernel


def _forward_product(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                     gelu: bool = False) -> torch.Tensor:
    product = 'forward_gelu' if gelu else 'forward'
    kernel = _kernel(product, _FORWARD, x.numel() // x.shape[-1], tuple(weight.shape[::-1]), (x, weight, bias, gelu))
    return _FORWARD[kernel](x, weight, bias, gelu)


def _input_grad_product(grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    kernel = _kernel('input_grad', _INPUT_GRAD, grad.numel() // grad.shape[-1], tuple(weight.shape), (grad, weight))
    return _INPUT_GRAD[kernel](grad, weight)


def _weight_grad_product(grad_2d: torch.Tensor, x_2d: torch.Tensor) -> torch.Tensor:
    """``grad_2d^T @ x_2d``: (M, N) and (M, K) -> (N, K), a reduction over the M tokens.

    Operands are made contiguous first: a zero-stride gradient (``out.sum().backward()``) made
    oneDNN's kernel 500x slower.
    """
    grad_2d, x_2d = grad_2d.contiguous(), x_2d.contiguous()
    widths = (grad_2d.shape[1], x_2d.shape[1])
    kernel = _kernel('weight_grad', _WEIGHT_GRAD, grad_2d.shape[0], widths, (grad_2d, x_2d))
    return _WEIGHT_GRAD[kernel](grad_2d, x_2d)


def _setup(ctx, inputs, output) -> None:
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _gradients(ctx, grad_out: torch.Tensor, input_grad: Callable, weight_grad: Callable):
    """The gradients of ``x @ weight^T + bias`` for the inputs that need one."""
    x, weight = ctx.saved_tensors
    grad_out = grad_out.contiguous()  # once, not in each product that reshapes it
    grad_x = grad_weight = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_x = input_grad(grad_out, weight)
    grad_2d = grad_out.reshape(-1, grad_out.shape[-1])
    if ctx.needs_input_grad[1]:
        grad_weight = weight_grad(grad_2d, x.reshape(-1, x.shape[-1]))
    if ctx.has_bias and ctx.needs_input_grad[2]:
        grad_bias = grad_2d.sum(0)
    return grad_x, grad_weight, grad_bias


class _LinearFunction(torch.autograd.Function):
    """``x @ weight^T + bias`` (eager) whose forward and gradient products each run on their own kernel.

    oneDNN's op has no autograd formula of its own (PyTorch would silently return no gradient),
    so the gradients are written here.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        _setup(ctx, (x, weight, bias), None)
        return _forward_product(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        return _gradients(ctx, grad_out, _input_grad_product, _weight_grad_product)


# The same products as PyTorch operators, for torch.compile: inductor calls them as external kernels and
# fuses the element-wise work around them.
@torch.library.custom_op('vitzoo::linear', mutates_args=())
def _linear_op(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return _forward_product(x, weight, bias)


@_linear_op.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


@torch.library.custom_op('vitzoo::linear_input_grad', mutates_args=())
def _input_grad_op(grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return _input_grad_product(grad, weight)


@_input_grad_op.register_fake
def _(grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return grad.new_empty((*grad.shape[:-1], weight.shape[1]))


@torch.library.custom_op('vitzoo::linear_weight_grad', mutates_args=())
def _weight_grad_op(grad_2d: torch.Tensor, x_2d: torch.Tensor) -> torch.Tensor:
    return _weight_grad_product(grad_2d, x_2d)


@_weight_grad_op.register_fake
def _(grad_2d: torch.Tensor, x_2d: torch.Tensor) -> torch.Tensor:
    return grad_2d.new_empty((grad_2d.shape[1], x_2d.shape[1]))


_linear_op.register_autograd(lambda ctx, grad_out: _gradients(ctx, grad_out, _input_grad_op, _weight_grad_op),
                             setup_context=_setup)

_PLAIN_TENSORS = (torch.Tensor, nn.Parameter)


def _cpu_fp32(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether these are CPU fp32 tensors (``None`` allowed) whose products vitzoo runs itself."""
    return (all(t is None or (t.device.type == 'cpu' and t.dtype == torch.float32) for t in tensors)
            and tensors[0].dim() >= 2 and tensors[0].numel() > 0 and not torch.is_autocast_enabled('cpu'))


def _eager(*tensors: Optional[torch.Tensor]) -> bool:
    """Eager CPU fp32 plain tensors, no tracing and no dispatch mode (which must see ``aten`` ops)."""
    return (not torch.jit.is_tracing() and not torch.jit.is_scripting() and torch._C._len_torch_dispatch_stack() == 0
            and all(t is None or type(t) in _PLAIN_TENSORS for t in tensors) and _cpu_fp32(*tensors))


def _needs_grad(*tensors: Optional[torch.Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def linear(x: torch.Tensor,
           weight: torch.Tensor,
           bias: Optional[torch.Tensor] = None,
           gelu: bool = False) -> torch.Tensor:
    """``F.linear`` (then the exact ``F.gelu`` with ``gelu=True``), each product on the kernel the mode picks.

    Without autograd the GELU runs in place on the product (ATen) or inside oneDNN's kernel (product
    ``forward_gelu``), instead of as a second tensor of the MLP's widest size. With autograd,
    ``gelu=True`` keeps the pre-activation for the backward pass, as ``F.gelu`` does.
    """
    if torch.compiler.is_compiling():
        if not torch.compiler.is_exporting() and _mode != 'aten' and _cpu_fp32(x, weight, bias):
            out = _linear_op(x, weight, bias)
        else:
            out = F.linear(x, weight, bias)
        return F.gelu(out) if gelu else out
    if _eager(x, weight, bias):
        if not _needs_grad(x, weight, bias):
            return _forward_product(x, weight, bias, gelu)
        if _mode != 'aten':
            out = _LinearFunction.apply(x, weight, bias)
            return F.gelu(out) if gelu else out
    out = F.linear(x, weight, bias)
    _counts['forward', ATEN] += 1
    return F.gelu(out) if gelu else out


def _gelu_backward_(grad: torch.Tensor, pre_activation: torch.Tensor) -> torch.Tensor:
    """The gradient through the exact GELU, written over ``grad`` (a tensor the caller owns)."""
    return torch.ops.aten.gelu_backward.grad_input(grad, pre_activation, grad_input=grad)


class _MlpFunction(torch.autograd.Function):
    """``fc2(gelu(fc1(x)))`` (eager, CPU fp32) as one autograd node.

    The backward pass computes the gradient of the hidden activation itself, so it can run the GELU
    gradient in place on it: one tensor of the MLP's widest size (``tokens x hidden``) less per step
    than separate linear and GELU nodes allocate, the largest tensors of a training step.
    """

    @staticmethod
    def forward(ctx, x, fc1_weight, fc1_bias, fc2_weight, fc2_bias):
        hidden = _forward_product(x, fc1_weight, fc1_bias)
        activation = F.gelu(hidden)
        ctx.save_for_backward(x, fc1_weight, hidden, activation, fc2_weight)
        ctx.has_bias = fc1_bias is not None, fc2_bias is not None
        return _forward_product(activation, fc2_weight, fc2_bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, fc1_weight, hidden, activation, fc2_weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_out = grad_out.contiguous()  # once, not in each product that reshapes it
        grad_out_2d = grad_out.reshape(-1, grad_out.shape[-1])
        grad_fc2_weight = _weight_grad_product(grad_out_2d, activation.reshape(-1, activation.shape[-1])) \
            if needs[3] else None
        grad_fc2_bias = grad_out_2d.sum(0) if ctx.has_bias[1] and needs[4] else None
        grad_x = grad_fc1_weight = grad_fc1_bias = None
        if any(needs[:3]):
            grad_hidden = _gelu_backward_(_input_grad_product(grad_out, fc2_weight), hidden)
            grad_hidden_2d = grad_hidden.reshape(-1, grad_hidden.shape[-1])
            if needs[0]:
                grad_x = _input_grad_product(grad_hidden, fc1_weight)
            if needs[1]:
                grad_fc1_weight = _weight_grad_product(grad_hidden_2d, x.reshape(-1, x.shape[-1]))
            if ctx.has_bias[0] and needs[2]:
                grad_fc1_bias = grad_hidden_2d.sum(0)
        return grad_x, grad_fc1_weight, grad_fc1_bias, grad_fc2_weight, grad_fc2_bias


def mlp(x: torch.Tensor, fc1_weight: torch.Tensor, fc1_bias: Optional[torch.Tensor], fc2_weight: torch.Tensor,
        fc2_bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``linear(gelu(linear(x, fc1_weight, fc1_bias)), fc2_weight, fc2_bias)`` with the exact GELU.

    Eager CPU fp32 with autograd: one node (:class:`_MlpFunction`) whose products run on the kernels
    the mode picks, in every mode (``aten`` included); otherwise two :func:`linear` calls.
    """
    tensors = (x, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
    if not torch.compiler.is_compiling() and _eager(*tensors) and _needs_grad(*tensors):
        return _MlpFunction.apply(*tensors)
    return linear(linear(x, fc1_weight, fc1_bias, gelu=True), fc2_weight, fc2_bias)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, init and state-dict keys) whose forward is :func:`linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
