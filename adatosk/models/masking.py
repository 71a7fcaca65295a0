"""The random binary hard mask (method.md, Eq. 1-3): one spatial mask per clip, repeated over all temporal slots.

Convention: ``visible`` is a boolean ``[B, N]`` tensor over the ``N`` spatial positions of a slot, **True = the
token is visible** (kept for the encoder). VideoMAE's ``TubeMaskingGenerator`` marks *masked* positions with 1;
this code never uses that convention nor a bare 0/1 mask.
"""

from __future__ import annotations

import torch


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Visible positions per slot, ``N_v = N - int(rho * N)`` (VideoMAE's rounding of the masked count)."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    # the 1e-6 keeps e.g. 0.29 * 100 = 28.999999999999996 from rounding down to 28
    n_visible = num_patches - int(mask_ratio * num_patches + 1e-6)
    if n_visible < 1:
        raise ValueError(f"mask_ratio={mask_ratio} leaves no visible position out of {num_patches}")
    return n_visible


def tube_mask(batch_size: int, num_patches: int, mask_ratio: float, *, generator: torch.Generator | None = None,
              device: torch.device | str | None = None) -> torch.Tensor:
    """A random tube mask: BoolTensor ``[B, N]``, True = visible, exactly ``num_visible(N, rho)`` True per row.

    The noise is drawn on the generator's device (CPU for a CPU generator) and the mask moved to ``device``, so a
    seeded CPU generator gives the same mask whatever device the model runs on.
    """
    n_visible = num_visible(num_patches, mask_ratio)
    noise_device = generator.device if generator is not None else device
    noise = torch.rand(batch_size, num_patches, generator=generator, device=noise_device)
    keep = noise.argsort(dim=1)[:, :n_visible]
    visible = torch.zeros(batch_size, num_patches, dtype=torch.bool, device=noise_device)
    return visible.scatter_(1, keep, 1).to(device)  # value 1, not True: the jit tracer has no bool overload


def visible_order(visible: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(order [B, N], N_v)``: per row the visible positions in ascending order, then the masked ones.

    ``order[:, :N_v]`` gathers the visible tokens, ``order[:, N_v:]`` the masked ones. Every row must have the
    same number of visible positions (a tube mask does), so the gathered tokens form a dense ``[B, T', N_v]``.
    """
    if visible.dtype != torch.bool or visible.ndim != 2:
        raise ValueError(f"visible must be a BoolTensor [B, N] (True = visible), got {visible.dtype} "
                         f"{tuple(visible.shape)}")
    counts = visible.sum(dim=1)
    n_visible = int(counts[0])
    if bool((counts != n_visible).any()):
        raise ValueError(f"every clip needs the same number of visible positions, got {counts.tolist()}")
    if n_visible == 0:
        raise ValueError("the visible mask has no visible position")
    order = torch.argsort((~visible).to(torch.uint8), dim=1, stable=True)  # visible (0) first, index order kept
    return order, n_visible


def gather_positions(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[b, t, index[b, k], ...]`` for every slot: ``x`` ``[B or 1, T', N, *F]``, ``index`` ``[B, K]`` ->
    ``[B, T', K, *F]`` (a batch-1 ``x``, e.g. a position table, is broadcast over the batch)."""
    batch, k = index.shape
    slots, features = x.shape[1], x.shape[3:]
    index = index.view(batch, 1, k, *([1] * len(features))).expand(batch, slots, k, *features)
    return torch.gather(x.expand(batch, *x.shape[1:]), 2, index)
