"""The adaptive temporal soft mask (method.md, section 3.2, Eq. 4-11).

Every module here takes the encoder's visible tokens ``Z`` as ``[B, T', N_v, C]``: because the hard mask is a
tube, position ``n`` is the same face region in every slot ``t``. Symbols follow method.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from adatosk.models.linear import Linear

DIFFS = ("l1", "l2", "cosine", "classification")
SCORES = ("both", "redundancy", "semantic")
EXCLUDE_FROM = ("previous", "current")
CA_GATES = ("dot", "cosine")
CS_NORMS = ("clip", "slot")
# The cosine gate's bounds: M_ca = sigmoid(s * cos + b) with s in (0, GATE_MAX_SCALE) and |b| < GATE_MAX_BIAS, so
# M_ca stays in [sigmoid(-8), sigmoid(8)] = [3e-4, 1 - 3e-4] and its gradient never vanishes.
GATE_MAX_SCALE, GATE_MAX_BIAS = 5.0, 3.0
GATE_INIT_SCALE, GATE_INIT_MASK = 2.5, 0.8


def frame_difference(z: torch.Tensor, diff: str = "l1", class_probs: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 4: ``D_t`` between slots ``t + 1`` and ``t`` -> ``[B, T' - 1]``.

    ``l1``/``l2``/``cosine`` compare the two slots' flattened tokens (``N_v * C`` values): ``sum |a - b|``,
    ``||a - b||_2`` and ``1 - cos(a, b)``. ``classification`` compares the head's class probabilities of the two
    slots, ``class_probs [B, T', K]``, by ``sum_k |p_{t+1,k} - p_{t,k}|``.
    """
    if diff == "classification":
        if class_probs is None:
            raise ValueError("diff='classification' needs the head's class probabilities per slot")
        return (class_probs[:, 1:] - class_probs[:, :-1]).abs().sum(-1)
    after, before = z[:, 1:].flatten(2), z[:, :-1].flatten(2)  # [B, T'-1, N_v * C]
    if diff == "l1":
        return (after - before).abs().sum(-1)
    if diff == "l2":
        return (after - before).norm(dim=-1)
    if diff == "cosine":
        return 1.0 - F.cosine_similarity(after, before, dim=-1)
    raise ValueError(f"diff must be one of {DIFFS}, got {diff!r}")


class SqueezeExcite(nn.Module):
    """Eq. 6, channel interaction with residual: ``F + F * sigmoid(W2 ReLU(W1 F))``, ``W1: C -> C/s``."""

    def __init__(self, dim: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc1 = Linear(dim, dim // reduction, bias=False)
        self.fc2 = Linear(dim // reduction, dim, bias=False)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f + f * torch.sigmoid(self.fc2(F.relu(self.fc1(f))))


class ClassAgnosticSoftMask(nn.Module):
    """CA dynamic soft mask (Eq. 4-7): ``M_ca [B, T', N_v]`` in (0, 1).

    The ``K`` slot pairs with the largest frame difference mark their second slot as *activated*; the slot means
    ``F_a`` of the activated slots go through the SE unit, and every token attends to them. ``gate="dot"`` (Eq. 7
    read literally): ``M_ca = sigmoid(max_a <q(Z_tn), k(F~_a)> / sqrt(d))``, unbounded, so it saturates when the
    token norms grow. ``gate="cosine"``: ``M_ca = sigmoid(s * max_a cos(q(Z_tn), k(F~_a)) + b)`` with a learned
    temperature ``s`` in (0, 5) and bias ``b`` in (-3, 3), starting at ``s = 2.5`` and ``M_ca ~ 0.8``. The top-K
    choice carries no gradient.
    """

    def __init__(self, dim: int, qk_dim: int, top_k: int = 4, diff: str = "l1", se_reduction: int = 4,
                 gate: str = "dot") -> None:
        super().__init__()
        if diff not in DIFFS:
            raise ValueError(f"diff must be one of {DIFFS}, got {diff!r}")
        if gate not in CA_GATES:
            raise ValueError(f"ca_gate must be one of {CA_GATES}, got {gate!r}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.top_k, self.diff, self.gate = top_k, diff, gate
        self.se = SqueezeExcite(dim, se_reduction)
        self.q = Linear(dim, qk_dim)
        self.k = Linear(dim, qk_dim)
        self.scale = qk_dim ** -0.5
        if gate == "cosine":  # unconstrained parameters behind the bounded s and b
            self.scale_logit = nn.Parameter(torch.tensor(_logit(GATE_INIT_SCALE / GATE_MAX_SCALE)))
            self.bias_atanh = nn.Parameter(torch.tensor(math.atanh(_logit(GATE_INIT_MASK) / GATE_MAX_BIAS)))

    def gate_scale_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The cosine gate's ``(s, b)``."""
        return (GATE_MAX_SCALE * torch.sigmoid(self.scale_logit), GATE_MAX_BIAS * torch.tanh(self.bias_atanh))

    @torch.no_grad()
    def activated_slots(self, z: torch.Tensor, class_probs: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. 5: indices ``[B, K]`` of the activated slots (``K = min(top_k, T' - 1)``), largest ``D_t`` first."""
        if z.shape[1] < 2:
            raise ValueError(f"the class-agnostic soft mask needs at least 2 temporal slots, got {z.shape[1]}")
        d = frame_difference(z, self.diff, class_probs)  # [B, T'-1]
        return d.topk(min(self.top_k, d.shape[1]), dim=1).indices + 1  # second slot of each pair

    def forward(self, z: torch.Tensor, class_probs: torch.Tensor | None = None) -> torch.Tensor:
        activated = self.activated_slots(z, class_probs)  # [B, K]
        f = z.mean(dim=2).gather(1, activated[..., None].expand(-1, -1, z.shape[-1]))  # F_a [B, K, C]
        keys = self.k(self.se(f))  # [B, K, d]
        queries = self.q(z)  # [B, T', N_v, d]
        if self.gate == "dot":
            logits = torch.einsum("btnd,bkd->btnk", queries, keys) * self.scale  # [B, T', N_v, K]
            return torch.sigmoid(logits.amax(dim=-1))
        cosine = torch.einsum("btnd,bkd->btnk", F.normalize(queries, dim=-1), F.normalize(keys, dim=-1))
        scale, bias = self.gate_scale_bias()
        return torch.sigmoid(scale * cosine.amax(dim=-1) + bias)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def exclusion_schedule(n_visible: int, transitions: int, r: int = 2,
                       fraction: float | None = None) -> list[int]:
    """Positions that join the excluded set at each of the ``transitions`` (slot ``t-1`` -> ``t``).

    ``r`` per transition (Table 2), or with ``fraction`` ``r = fraction * N_v``, which may be fractional: the
    cumulative count after ``t`` transitions is ``floor(t * fraction * N_v + 1/2)`` (the paper's ``r = 2`` of
    ``N_v = 30`` is ``fraction = 1/15``; at ``N_v = 8`` that excludes 0, 1, 1, 2, 2, 3, 3, 4 positions in the 8
    slots). ``fraction`` wins over ``r`` when set. At most ``N_v - 1`` positions are ever excluded.
    """
    if fraction is not None and not 0.0 <= fraction < 1.0:
        raise ValueError(f"exclude_fraction must be in [0, 1), got {fraction}")
    if r < 0:
        raise ValueError(f"r must be >= 0, got {r}")
    per_transition = r if fraction is None else fraction * n_visible
    cap = n_visible - 1
    # the 1e-9 keeps e.g. 3 * (1/15 * 30) = 5.999999999 from rounding to 5
    totals = [min(cap, math.floor(t * per_transition + 0.5 + 1e-9)) for t in range(transitions + 1)]
    return [after - before for before, after in zip(totals, totals[1:])]


def _top_r(score: torch.Tensor, excluded: torch.Tensor, r: int) -> torch.Tensor:
    """``excluded`` plus the ``r`` not-yet-excluded positions of highest ``score`` (ties: lowest position)."""
    order = score.masked_fill(excluded, float("-inf")).sort(dim=1, descending=True, stable=True).indices
    top = order[:, :r]
    return excluded.scatter(1, top, torch.ones_like(top, dtype=torch.bool))  # a tensor source: jit-traceable


def accumulate_redundancy(sim: torch.Tensor, r: int | Sequence[int] = 2, tau: float = 0.1,
                          exclude_from: str = "previous") -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 8-9 with exclusion: temporal accumulative score ``S`` and excluded tokens, both ``[B, T', N_v]``.

    ``sim [B, T'-1, N_v, N_v]``: ``sim[:, t-1, n, j] = Sim_t[n, j]``, token ``n`` of slot ``t`` against token ``j``
    of slot ``t-1``. ``S_1 = 0``; at the transition into slot ``t`` (E: excluded positions, a set that only grows)

    * ``exclude_from="previous"`` (method.md): first ``E_t = E_{t-1} + top_r(S_{t-1})``; the first transition
      sees ``S_1 = 0`` everywhere, so its ties go to the lowest positions.
      ``"current"``: ``E_t = E_{t-1} + top_r(S_t)``, taken after ``S_t`` is computed (with ``E_{t-1}``).
    * ``P_t = softmax_rows(Sim_t^T / tau)`` over the slot-``t`` tokens not in E; the excluded rows (slot ``t-1``
      tokens in E) pass on nothing: ``S~_{t-1} = S_{t-1}`` with E set to 0.
    * ``s_t[n] = relu(max_j Sim_t[n, j])`` over the slot-``t-1`` tokens ``j`` not in E.
    * ``S_t = P_t^T S~_{t-1} + s_t``; excluded tokens get ``S_t = 0`` and are flagged in the returned mask.

    ``r``: positions excluded per transition, or one count per transition (:func:`exclusion_schedule`). At most
    ``N_v - 1`` positions are ever excluded, so at least one position stays in every slot.
    """
    if exclude_from not in EXCLUDE_FROM:
        raise ValueError(f"exclude_from must be one of {EXCLUDE_FROM}, got {exclude_from!r}")
    batch, transitions, n_visible, _ = sim.shape
    schedule = exclusion_schedule(n_visible, transitions, r) if isinstance(r, int) else list(r)
    if len(schedule) != transitions or sum(schedule) > n_visible - 1:
        raise ValueError(f"the exclusion schedule {schedule} does not fit {transitions} transitions of "
                         f"{n_visible} positions")
    score = sim.new_zeros(batch, n_visible)  # S_1
    excluded = torch.zeros(batch, n_visible, dtype=torch.bool, device=sim.device)
    scores, exclusions = [score], [excluded]
    for t, r_t in enumerate(schedule):
        if exclude_from == "previous" and r_t > 0:
            excluded = _top_r(score, excluded, r_t)
        gone = excluded[:, None, :]  # [B, 1, N_v]: excluded positions, as columns
        # P_t [B, i (slot t-1), n (slot t)]; excluded rows stay finite but carry S~ = 0
        transfer = (sim[:, t].transpose(1, 2) / tau).masked_fill(gone, float("-inf")).softmax(dim=-1)
        carried = torch.einsum("bi,bin->bn", score.masked_fill(excluded, 0.0), transfer)  # P_t^T S~_{t-1}
        best_match = sim[:, t].masked_fill(gone, float("-inf")).amax(dim=-1)  # max over j of slot t-1
        score = carried + F.relu(best_match)
        if exclude_from == "current" and r_t > 0:
            excluded = _top_r(score, excluded, r_t)
        score = score.masked_fill(excluded, 0.0)
        scores.append(score)
        exclusions.append(excluded)
    return torch.stack(scores, dim=1), torch.stack(exclusions, dim=1)


def combine_masks(m_ca: torch.Tensor | None, m_cs: torch.Tensor | None, excluded: torch.Tensor | None,
                  combine: str = "product") -> torch.Tensor | None:
    """Eq. 12: ``M_s [B, T', N_v]`` of ``M_ca`` and ``M_cs`` (``combine``: their product or their mean), 0 on the
    ``excluded`` tokens. A single-mask variant's ``M_s`` is its one mask (None without either)."""
    if m_ca is None or m_cs is None:
        return m_ca if m_cs is None else m_cs
    m_s = m_ca * m_cs if combine == "product" else 0.5 * (m_ca + m_cs)
    return m_s.masked_fill(excluded, 0.0)


def semantic_activation(z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The class-semantic activation ``A = sum_c |Z| * g`` (Eq. 10): ``z`` [..., C], ``g`` [C] -> [...] float."""
    return (z.float().abs() * g.float()).sum(-1)


def minmax_normalise(x: torch.Tensor, valid: torch.Tensor, eps: float = 1e-6, per_slot: bool = False) -> torch.Tensor:
    """Min-max to [0, 1] over the ``valid`` entries of ``x [B, T', N_v]`` (invalid entries -> 0), per clip or, with
    ``per_slot``, per slot (a slot whose valid entries are all equal -> 0)."""
    dims = (2,) if per_slot else (1, 2)
    low = x.masked_fill(~valid, float("inf")).amin(dim=dims, keepdim=True)
    high = x.masked_fill(~valid, float("-inf")).amax(dim=dims, keepdim=True)
    return ((x - low) / (high - low).clamp_min(eps)).masked_fill(~valid, 0.0)


class ClassSemanticSoftMask(nn.Module):
    """CS similar soft mask (Eq. 8-11): ``(M_cs [B, T', N_v] in [0, 1], excluded [B, T', N_v] bool)``.

    ``scores="both"``: ``M_cs = 1 - norm(S) * (1 - norm(A))``; ``"redundancy"``: ``1 - norm(S)``; ``"semantic"``:
    ``norm(A)`` (no ``S``, hence no similarity projection and no exclusion). ``A_tn = sum_c |Z_tnc * g_c|`` with
    ``g`` the column norms of the head's first layer, passed in detached. Excluded tokens get ``M_cs = 0``.
    ``norm(A)`` is per clip; ``norm(S)`` per clip (``norm="clip"``) or per slot (``"slot"``: ``S`` grows along the
    clip, so per-clip min-max would make ``M_cs`` fall with time whatever the content). Exclusion: ``r`` per
    transition, or ``exclude_fraction * N_v`` when that is set (:func:`exclusion_schedule`).
    """

    def __init__(self, dim: int, proj_dim: int, scores: str = "both", r: int = 2, tau: float = 0.1,
                 exclude_from: str = "previous", norm: str = "clip", exclude_fraction: float | None = None) -> None:
        super().__init__()
        if scores not in SCORES:
            raise ValueError(f"scores must be one of {SCORES}, got {scores!r}")
        if exclude_from not in EXCLUDE_FROM:
            raise ValueError(f"exclude_from must be one of {EXCLUDE_FROM}, got {exclude_from!r}")
        if norm not in CS_NORMS:
            raise ValueError(f"cs_norm must be one of {CS_NORMS}, got {norm!r}")
        if r < 0 or tau <= 0:
            raise ValueError(f"need r >= 0 and tau > 0, got r={r}, tau={tau}")
        exclusion_schedule(2, 1, r, exclude_fraction)  # validates the fraction
        self.scores, self.r, self.tau, self.exclude_from = scores, r, tau, exclude_from
        self.norm, self.exclude_fraction = norm, exclude_fraction
        self.phi = Linear(dim, proj_dim) if scores != "semantic" else None

    def schedule(self, slots: int, n_visible: int) -> list[int]:
        """Positions excluded at each transition for ``T' = slots`` and ``N_v = n_visible`` (all 0 without ``S``)."""
        if self.phi is None:
            return [0] * (slots - 1)
        return exclusion_schedule(n_visible, slots - 1, self.r, self.exclude_fraction)

    def forward(self, z: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, slots, n_visible, _ = z.shape
        excluded = torch.zeros(batch, slots, n_visible, dtype=torch.bool, device=z.device)
        if self.phi is not None:
            p = F.normalize(self.phi(z).float(), dim=-1)  # phi(Z) [B, T', N_v, d], unit norm
            sim = p[:, 1:] @ p[:, :-1].transpose(-1, -2)  # Sim_t [B, T'-1, N_v, N_v]
            schedule = self.schedule(slots, n_visible)
            score, excluded = accumulate_redundancy(sim, schedule, self.tau, self.exclude_from)
            redundancy = minmax_normalise(score, ~excluded, per_slot=self.norm == "slot")
        if self.scores != "redundancy":
            semantic = minmax_normalise(semantic_activation(z, g), ~excluded)  # norm(A)
        if self.scores == "both":
            m_cs = 1.0 - redundancy * (1.0 - semantic)
        elif self.scores == "redundancy":
            m_cs = 1.0 - redundancy
        else:
            m_cs = semantic
        return m_cs.masked_fill(excluded, 0.0), excluded
