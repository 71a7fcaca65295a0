"""fvcore FLOP counting of one model: per clip, for one inference view and one training step forward.

Conventions (the DFER papers' and fvcore's): one fused multiply-add is one FLOP; counts are per clip (the traced
batch divided by its size), for

* one inference view: eval mode, the tube mask drawn at the model's ``eval_mask_ratio``, logits out;
* one training step forward: train mode with a target (AdaTosk: encoder + decoder + soft mask + both losses).

fvcore 0.1.5 has no handle for ``aten::scaled_dot_product_attention``; :func:`sdpa_flop_jit` counts it like the
explicit ``q @ k^T`` and ``attn @ v`` matmuls it replaces. Every op that fvcore would skip is an error
(:class:`UncountedOpError`) unless it is on the allow-list below: ops that are O(size of their operands) and that
fvcore's convention leaves out (elementwise arithmetic, reductions, softmax) or that do no arithmetic at all
(indexing, gathers, sorting, shapes). The work of the first group is tallied separately (``elementwise``: the
sum of the sizes of their largest operands) so that a report can show how small the left-out part is.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
import torch.utils._pytree as pytree
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import bmm_flop_jit, get_shape
from torch import nn
from torch.overrides import TorchFunctionMode

from adatosk.models.masking import tube_mask

PATCH_SIZE = 16

# --------------------------------------------------------------------------------------------------- op handles


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> Counter[str]:
    """``aten::scaled_dot_product_attention(q [*, Lq, d], k [*, Lk, d], v [*, Lk, dv], ...)``.

    MACs of ``q @ k^T`` (``* Lq Lk d``) plus ``softmax(.) @ v`` (``* Lq Lk dv``), as fvcore's matmul handle
    would count the two explicit matmuls; the scaling, masking and softmax are elementwise.
    """
    q, k, v = (get_shape(value) for value in inputs[:3])
    batch = math.prod(torch.broadcast_shapes(tuple(q[:-2]), tuple(k[:-2]), tuple(v[:-2])))
    lq, d = q[-2:]
    lk, dv = k[-2], v[-1]
    return Counter({"scaled_dot_product_attention": batch * lq * lk * (d + dv)})


def _operand_size(inputs: list[Any], outputs: list[Any]) -> Counter[str]:
    """The size of the largest operand or result: the work of an O(numel) op up to a small constant."""
    shapes = [get_shape(value) for value in (*inputs, *outputs)]
    return Counter({"elementwise": max((math.prod(s) for s in shapes if s is not None), default=1)})


# Contractions fvcore 0.1.5 misses. baddbmm(bias, a, b) = bias + a @ b: the bmm MACs.
_EXTRA_HANDLES: dict[str, Callable[[list[Any], list[Any]], Any]] = {
    "aten::scaled_dot_product_attention": sdpa_flop_jit,
    "aten::baddbmm": lambda inputs, outputs: bmm_flop_jit(inputs[1:3], outputs),
}

# O(numel) ops fvcore's convention does not count as FLOPs (it counts matmuls, convolutions and norm layers):
# elementwise arithmetic and activations, reductions (sum/mean/var: one add per input value), softmax, the losses.
# The size of their largest operand is tallied as ``elementwise``.
ELEMENTWISE_OPS = frozenset(
    f"aten::{name}" for name in (
        "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "neg", "abs", "sign", "pow", "sqrt",
        "rsqrt", "reciprocal", "square", "exp", "log", "log1p", "sigmoid", "sigmoid_", "tanh", "gelu", "silu",
        "erf", "maximum", "minimum", "clamp_min", "clamp_max", "where", "lerp", "addcmul",
        "sum", "mean", "var", "var_mean", "std", "amax", "amin", "min", "cumsum", "norm", "linalg_vector_norm",
        "softmax", "log_softmax", "mse_loss", "cross_entropy_loss", "nll_loss", "scatter_add", "scatter_add_",
        "cosine_similarity",
    )
)
# Ops that do no arithmetic: indexing, gathers and scatters, sorting and top-k, comparisons and logic, random
# draws, tensor creation, shapes and copies. (fvcore already ignores many more of this kind, e.g. gather, cat.)
NO_ARITHMETIC_OPS = frozenset(
    f"aten::{name}" for name in (
        "index_select", "masked_select", "take_along_dim", "scatter", "scatter_", "masked_fill_", "index_put",
        "topk", "sort", "argsort", "argmax", "argmin", "lt", "le", "ne", "logical_not", "logical_and",
        "logical_or", "__or__", "any", "all", "rand", "randn", "rand_like", "randn_like", "bernoulli",
        "bernoulli_", "uniform_", "normal_", "empty_like", "ones_like", "new_ones", "fill_", "zero_", "clone",
        "repeat", "repeat_interleave", "expand_as", "view_as", "flip", "alias", "lift_fresh", "_unsafe_view",
        "movedim", "unflatten", "broadcast_tensors", "one_hot", "detach_",
    )
)


class UncountedOpError(RuntimeError):
    """fvcore met an op it cannot count and that is not known to do no multiply-adds."""


def _configured_analysis(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> FlopCountAnalysis:
    analysis = FlopCountAnalysis(module, inputs)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    analysis.set_op_handle(**_EXTRA_HANDLES, **{op: _operand_size for op in ELEMENTWISE_OPS})
    analysis.set_op_handle(**{op: None for op in NO_ARITHMETIC_OPS})
    return analysis


# ------------------------------------------------------------------------------------------------------ counting


@dataclasses.dataclass
class FlopCount:
    """One traced forward, per clip."""

    flops: int                    # multiply-adds per clip
    elementwise: int              # sizes of the allow-listed O(numel) ops' largest operands per clip (not FLOPs)
    by_module: dict[str, int]     # FLOPs per clip of each top-level submodule
    by_operator: dict[str, int]   # FLOPs per clip of each counted op
    used_parameters: set[str]     # names of the parameters the forward touched


class _TracedCalls(TorchFunctionMode):
    """Records the ids of every tensor passed to a torch function (finds the parameters a forward uses)."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[int] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ids.update(id(leaf) for leaf in pytree.tree_leaves((args, kwargs)) if isinstance(leaf, torch.Tensor))
        return func(*args, **kwargs)


class _TensorOutputs(nn.Module):
    """The model's forward with tensor inputs and outputs only, so that the jit tracer can follow it."""

    def __init__(self, model: nn.Module, target: torch.Tensor | None, visible: torch.Tensor | None) -> None:
        super().__init__()
        self.model = model
        self.target = target
        self.visible = visible

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        kwargs = {} if self.visible is None else {"visible": self.visible}
        if self.target is None:
            return self.model(x, **kwargs)
        out = self.model(x, self.target, **kwargs)
        return out.loss, out.logits


def count_flops(module: nn.Module, inputs: tuple[torch.Tensor, ...], batch_size: int) -> FlopCount:
    """Trace ``module(*inputs)`` with fvcore; raise :class:`UncountedOpError` if an op was skipped."""
    analysis = _configured_analysis(module, inputs)
    use = _TracedCalls()
    with use, torch.no_grad():
        by_module_op = analysis.by_module_and_operator()
    unsupported = analysis.unsupported_ops()
    if unsupported:
        raise UncountedOpError(
            f"fvcore cannot count {dict(unsupported)} in {type(module).__name__}: register a FLOP handle in "
            "adatosk/flops.py (_EXTRA_HANDLES), or, if the op does no multiply-adds, allow-list it there"
        )
    totals = by_module_op[""]
    prefix = "model." if isinstance(module, _TensorOutputs) else ""
    top = {
        name[len(prefix):]: sum(v for op, v in ops.items() if op != "elementwise")
        for name, ops in by_module_op.items()
        if name.startswith(prefix) and name and name.count(".") == prefix.count(".")
    }
    named = module.model if isinstance(module, _TensorOutputs) else module
    return FlopCount(
        flops=int(sum(v for op, v in totals.items() if op != "elementwise")) // batch_size,
        elementwise=int(totals.get("elementwise", 0)) // batch_size,
        by_module={name: int(v) // batch_size for name, v in top.items() if v},
        by_operator={op: int(v) // batch_size for op, v in totals.items() if op != "elementwise"},
        used_parameters={name for name, p in named.named_parameters() if id(p) in use.ids},
    )


def clip_inputs(model: nn.Module, batch_size: int, num_frames: int, img_size: int, *, train: bool,
                seed: int = 0, device: str | torch.device = "cpu") -> dict[str, torch.Tensor | None]:
    """Seeded inputs of one forward: ``x`` [B, 3, T, H, W], ``target`` [B] (train) and the tube mask at the
    model's ``mask_ratio`` (train) or ``eval_mask_ratio``; ``None`` (all tokens) for a model that never masks."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, 3, num_frames, img_size, img_size, generator=generator).to(device)
    target = torch.randint(model.num_classes, (batch_size,), generator=generator).to(device) if train else None
    visible = None
    if model.mask_ratio > 0 or model.eval_mask_ratio > 0:
        ratio = model.mask_ratio if train else model.eval_mask_ratio
        visible = tube_mask(batch_size, model.num_patches, ratio, generator=generator).to(device)
    return {"x": x, "target": target, "visible": visible}


def model_flops(model: nn.Module, num_frames: int, img_size: int) -> dict[str, Any]:
    """Parameters and per-clip FLOPs of one inference view and one training step forward."""
    was_training = model.training
    model.eval()
    inputs = clip_inputs(model, 1, num_frames, img_size, train=False)
    infer = count_flops(_TensorOutputs(model, None, inputs["visible"]), (inputs["x"],), 1)
    model.train()
    # 2 clips: BatchNorm in train mode needs more than one value per channel.
    inputs = clip_inputs(model, 2, num_frames, img_size, train=True)
    train = count_flops(_TensorOutputs(model, inputs["target"], inputs["visible"]), (inputs["x"],), 2)
    model.train(was_training)
    params = dict(model.named_parameters())
    return {
        "params_inference": sum(params[n].numel() for n in infer.used_parameters),
        "params_train": sum(p.numel() for p in params.values()),
        "flops_inference": infer.flops,
        "flops_train": train.flops,
        "elementwise_inference": infer.elementwise,
        "elementwise_train": train.elementwise,
        "flops_inference_by_module": infer.by_module,
        "flops_train_by_module": train.by_module,
        "flops_inference_by_operator": infer.by_operator,
        "params_unused_at_inference": sorted({n.split(".")[0] for n in params} - {
            n.split(".")[0] for n in infer.used_parameters}),
    }
