"""What the soft mask (method.md, Eq. 4-12) does on a test set: statistics of ``M_ca``, ``M_cs`` and ``M_s``, and the
soft mask switched off at test time.

Everything here works through forward hooks on the model's CA and CS modules (``model.ca``, ``model.cs``); nothing
in the model changes. :func:`soft_mask_hooks` registers them; :class:`SoftMaskRecorder` accumulates, over every
*view* it sees (one forward of one clip: one temporal clip under one tube mask), sums that add up across batches and
ranks; :func:`uniform_soft_mask` replaces ``M_ca`` and ``M_cs`` by 1 on the kept tokens, so that the pooling is the
plain mean over the tokens the CS mask keeps (the exclusion is unchanged).

:meth:`SoftMaskRecorder.summary` returns (mask values and shares in [0, 1]; ``T'`` slots)::

    {"views": int,                  # clip views recorded (forward passes x batch)
     "slots": T', "tokens_per_slot": N_v,
     "excluded_share": [T'],        # share of the slot's tokens the CS mask excludes (CS only)
     "activated_share": [T'],       # share of views in which the slot is one of CA's top-K (Eq. 5; CA only)
     "m_ca" | "m_cs" | "m_s": {     # m_ca: CA only; m_cs: CS only; m_s (Eq. 12) always (a single-mask
                                    # variant's m_s is its one mask)
         "mean": float,             # over every kept (not excluded) token of every view
         "per_slot": [T'],          # over the kept tokens of the slot
         "spread": float,           # per view std / mean over its kept tokens (coefficient of variation), averaged
         "effective_share": float}, # per view (sum M)^2 / (n sum M^2) over its n kept tokens, averaged: 1 = uniform
     "gate": {"s": float, "b": float}}   # the CA cosine gate's learned M_ca = sigmoid(s cos + b) (gate "cosine" only)

A spread near 0 and an effective share near 1 mean the weights are (nearly) the same on every kept token of a
view, so that the weighted pooling is the plain mean.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from adatosk.models.soft_mask import combine_masks

# hook(name, args, output): name "ca" or "cs"; a non-None return replaces the module's output
SoftMaskHook = Callable[[str, tuple, Any], Any]
EPS = 1e-12


def soft_mask_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``[("ca", model.ca), ("cs", model.cs)]``, the soft-mask modules ``model`` has, in the order the model calls
    them (``AdaTosk.temporal_soft_mask``)."""
    return [(name, module) for name in ("ca", "cs") if (module := getattr(model, name, None)) is not None]


@contextmanager
def soft_mask_hooks(model: nn.Module, hook: SoftMaskHook) -> Iterator[None]:
    """Forward hooks on the CA and CS modules of ``model`` while the context lasts: ``hook(name, args, output)``
    after each of their forwards, ``args`` as the model passed them (CA: ``(Z, class_probs)``; CS: ``(Z, g)``)."""
    handles = [module.register_forward_hook(lambda _, args, out, name=name: hook(name, args, out))
               for name, module in soft_mask_modules(model)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def uniform_soft_mask(model: nn.Module) -> Iterator[None]:
    """Evaluate ``model`` with ``M_ca := 1`` and ``M_cs := 1`` on the kept tokens (0 on the excluded ones, the
    exclusion unchanged): ``M_s`` is 1 on every kept token (product or mean), so the pooling is the plain mean over
    the kept tokens. Scoring under it tells whether the learned weighting matters at test time."""

    def uniform(name: str, args: tuple, out: Any) -> Any:
        if name == "ca":
            return torch.ones_like(out)  # M_ca [B, T', N_v]
        m_cs, excluded = out  # [B, T', N_v], bool [B, T', N_v]
        return (~excluded).to(m_cs.dtype), excluded

    with soft_mask_hooks(model, uniform):
        yield


def view_spread(values: torch.Tensor, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per view, over its kept tokens: (std / mean, (sum M)^2 / (n sum M^2)), each ``[B]``, for ``values`` and the
    float ``kept`` mask ``[B, T', N_v]`` (std over tokens, not over views; 0 for an all-zero view)."""
    n = kept.sum(dim=(1, 2))  # [B]
    total = (values * kept).sum(dim=(1, 2))
    mean = total / n
    variance = ((values - mean[:, None, None]) ** 2 * kept).sum(dim=(1, 2)) / n
    squares = (values ** 2 * kept).sum(dim=(1, 2))
    return variance.sqrt() / mean.clamp_min(EPS), total ** 2 / (n * squares).clamp_min(EPS)


class SoftMaskRecorder:
    """Accumulates the soft-mask statistics of every view the model classifies while the recorder is entered
    (``with recorder: model(x, visible=...)``; re-enterable, the sums persist). See the module docstring for what
    :meth:`summary` returns. The sums are float64 tensors on the model's device, laid out by the model alone, so
    that every rank holds the same layout (also a rank that saw no clip) and :meth:`summary` can sum them across
    ranks (``reduce=adatosk.train.distributed.all_reduce_sum``)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.names = [name for name, _ in soft_mask_modules(model)]
        if not self.names:
            raise ValueError(f"{type(model).__name__} has no soft mask (model.ca and model.cs are None): nothing to "
                             "record")
        self.masks = [f"m_{name}" for name in self.names] + ["m_s"]  # m_s = the one mask of a single-mask variant
        slots = int(model.num_slots)
        shapes = {"views": 1, "tokens": slots, "excluded": slots}
        if "ca" in self.names:
            shapes["activated"] = slots
        for mask in self.masks:
            shapes.update({f"{mask}.sum": slots, f"{mask}.spread": 1, f"{mask}.effective": 1})
        device = next(model.parameters()).device
        self.sums = {key: torch.zeros(size, dtype=torch.float64, device=device) for key, size in shapes.items()}
        self._captured: dict[str, tuple[tuple, Any]] = {}
        self._stack: ExitStack | None = None

    def __enter__(self) -> SoftMaskRecorder:
        self._stack = ExitStack()
        self._stack.enter_context(soft_mask_hooks(self.model, self._on_forward))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        self._stack = None
        self._captured.clear()

    def _on_forward(self, name: str, args: tuple, out: Any) -> None:
        """Keep each module's (args, output); after the last one the model calls, record the view statistics."""
        self._captured[name] = (args, out)
        if name == self.names[-1]:
            self._record(self._captured)
            self._captured = {}

    @torch.no_grad()
    def _record(self, captured: dict[str, tuple[tuple, Any]]) -> None:
        m_ca = m_cs = excluded = None
        if "ca" in captured:
            (z, class_probs), m_ca = captured["ca"]  # M_ca [B, T', N_v]
            activated = self.model.ca.activated_slots(z, class_probs)  # [B, K]
            self.sums["activated"] += F.one_hot(activated, m_ca.shape[1]).sum(dim=(0, 1))  # [T']
        if "cs" in captured:
            _, (m_cs, excluded) = captured["cs"]  # [B, T', N_v], bool [B, T', N_v]
        else:  # CA only: nothing excluded
            excluded = torch.zeros_like(m_ca, dtype=torch.bool)
        masks = {"m_ca": m_ca, "m_cs": m_cs, "m_s": combine_masks(m_ca, m_cs, excluded, self.model.combine)}
        kept = (~excluded).double()  # [B, T', N_v]
        batch, _, n_visible = kept.shape
        self.sums["views"] += batch
        self.sums["tokens"] += batch * n_visible
        self.sums["excluded"] += excluded.sum(dim=(0, 2))
        for key in self.masks:
            values = masks[key].double()  # [B, T', N_v]
            spread, effective = view_spread(values, kept)  # [B], [B]
            self.sums[f"{key}.sum"] += (values * kept).sum(dim=(0, 2))
            self.sums[f"{key}.spread"] += spread.sum()
            self.sums[f"{key}.effective"] += effective.sum()

    def flat_sums(self) -> torch.Tensor:
        """Every sum in one float64 vector (the layout of ``self.sums``, fixed by the model)."""
        return torch.cat([value.flatten() for value in self.sums.values()])

    def summary(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, Any]:
        """The JSON-ready statistics (module docstring); ``reduce`` maps :meth:`flat_sums` to the sums to report
        (e.g. their sum over ranks; default: this recorder's own)."""
        flat = self.flat_sums() if reduce is None else reduce(self.flat_sums())
        sums, start = {}, 0
        for key, value in self.sums.items():
            sums[key] = flat[start:start + value.numel()].cpu().double()
            start += value.numel()
        views = float(sums["views"][0])
        kept = sums["tokens"] - sums["excluded"]  # [T']
        out: dict[str, Any] = {
            "views": int(views), "slots": int(kept.numel()),
            "tokens_per_slot": int(round(float(sums["tokens"][0]) / views)) if views else None,
        }
        if "cs" in self.names:
            out["excluded_share"] = _ratios(sums["excluded"], sums["tokens"])
        if "ca" in self.names:
            out["activated_share"] = _ratios(sums["activated"], torch.full_like(kept, views))
        for key in self.masks:
            out[key] = {"mean": _ratio(float(sums[f"{key}.sum"].sum()), float(kept.sum())),
                        "per_slot": _ratios(sums[f"{key}.sum"], kept),
                        "spread": _ratio(float(sums[f"{key}.spread"][0]), views),
                        "effective_share": _ratio(float(sums[f"{key}.effective"][0]), views)}
        ca = getattr(self.model, "ca", None)
        if ca is not None and ca.gate == "cosine":
            s, b = ca.gate_scale_bias()
            out["gate"] = {"s": round(float(s.detach()), 6), "b": round(float(b.detach()), 6)}
        return out


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 6) if denominator > 0 else None


def _ratios(numerators: torch.Tensor, denominators: torch.Tensor) -> list[float | None]:
    return [_ratio(float(n), float(d)) for n, d in zip(numerators, denominators)]
