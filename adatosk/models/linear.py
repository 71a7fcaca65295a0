"""Linear layers whose fp32 matrix products run on oneDNN on a CPU.

PyTorch multiplies fp32 matrices on a CPU with MKL's sgemm, which on this project's AMD EPYC (Zen 5) reaches about
100 GFLOPS on one core at the tiny demo ViT's sizes, where oneDNN (PyTorch's built-in ``mkldnn``) reaches about 205.
A demo training step is two-thirds such products, so routing them through oneDNN makes it about 1.4x faster
(README, 'The demo, measured'). Both compute in fp32, with no reduced precision; only the order of the additions
inside a product may differ, as between two machines.

:func:`linear` is ``F.linear`` with that fast path on a CPU for fp32 tensors outside autocast and tracing (fvcore
counts FLOPs by tracing ``aten`` ops), with a backward of the same two products; elsewhere (GPU, bf16/fp16, a
build without oneDNN) it is ``F.linear``. :class:`Linear` is ``nn.Linear`` calling it: same parameters, same
state-dict keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _onednn_linear_op():
    """oneDNN's dense-tensor linear (the op torch.compile's CPU backend emits), or None in a build without it."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise.default
    except (AttributeError, RuntimeError):
        return None


_ONEDNN_LINEAR = _onednn_linear_op()


def _onednn_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T + bias`` on oneDNN (``x [..., K]``, ``weight [N, K]``; either may be a transposed view)."""
    return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn_product(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_2d = grad.reshape(-1, grad.shape[-1])  # [M, N]
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn_product(grad_2d, weight.t()).view(x.shape)  # [M, N] @ [N, K]
        if ctx.needs_input_grad[1]:
            grad_weight = _onednn_product(grad_2d.t(), x.reshape(-1, x.shape[-1]).t())  # [N, M] @ [M, K]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_2d.sum(dim=0)
        return grad_x, grad_weight, grad_bias


def uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`linear` takes the oneDNN path for these operands."""
    return (_ONEDNN_LINEAR is not None and x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and not torch.jit.is_tracing() and x.dim() >= 2)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, on oneDNN for fp32 CPU tensors (see the module docstring)."""
    if uses_onednn(x, weight):
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` whose product is :func:`linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
