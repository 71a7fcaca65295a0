"""The adaptive temporal soft mask (method.md Eq. 4-12), checked against known answers and loop references."""

from __future__ import annotations

import math

import pytest
import torch

from adatosk.models.soft_mask import (
    GATE_MAX_BIAS,
    GATE_MAX_SCALE,
    ClassAgnosticSoftMask,
    ClassSemanticSoftMask,
    accumulate_redundancy,
    exclusion_schedule,
    frame_difference,
    minmax_normalise,
)


def slots_with_levels(levels: list[float], batch: int = 1, n_visible: int = 3, dim: int = 4) -> torch.Tensor:
    """``Z [B, T', N_v, C]`` whose slot ``t`` is the constant ``levels[t]``: ``D_t = N_v * C * |l_{t+1} - l_t|``."""
    z = torch.tensor(levels, dtype=torch.float32).view(1, -1, 1, 1)
    return z.expand(batch, -1, n_visible, dim).clone()


# --------------------------------------------------------------------------------------- class-agnostic (CA)

def test_l1_frame_difference_and_top_k_activated_slots():
    z = slots_with_levels([0.0, 5.0, 5.5, 1.0, 1.0, 9.0])  # |steps| = 5, 0.5, 4.5, 0, 8
    torch.testing.assert_close(frame_difference(z, "l1"), torch.tensor([[5.0, 0.5, 4.5, 0.0, 8.0]]) * 12)
    ca = ClassAgnosticSoftMask(dim=4, qk_dim=2, top_k=3)
    assert ca.activated_slots(z).tolist() == [[5, 1, 3]]  # second slot of the pairs (4,5), (0,1), (2,3)
    ca.top_k = 10  # clamped to T' - 1 pairs
    assert sorted(ca.activated_slots(z)[0].tolist()) == [1, 2, 3, 4, 5]


def test_other_frame_differences():
    a = torch.tensor([3.0, 4.0])
    z = torch.stack([a, -a, 2 * a]).view(1, 3, 1, 2)  # slots: a, -a, 2a
    torch.testing.assert_close(frame_difference(z, "l2"), torch.tensor([[10.0, 15.0]]))
    torch.testing.assert_close(frame_difference(z, "cosine"), torch.tensor([[2.0, 2.0]]))
    probs = torch.tensor([[[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]])
    torch.testing.assert_close(frame_difference(z, "classification", probs), torch.tensor([[0.2, 1.8]]))
    with pytest.raises(ValueError, match="class probabilities"):
        frame_difference(z, "classification")


def test_ca_mask_follows_eq_6_and_7():
    torch.manual_seed(0)
    ca = ClassAgnosticSoftMask(dim=8, qk_dim=4, top_k=2, se_reduction=4)
    z = torch.randn(2, 5, 3, 8)
    got = ca(z)
    assert got.shape == (2, 5, 3) and (got > 0).all() and (got < 1).all()
    for b in range(2):
        steps = [(z[b, t + 1] - z[b, t]).abs().sum().item() for t in range(4)]
        activated = sorted(range(4), key=lambda t: -steps[t])[:2]
        keys = []
        for t in activated:
            f = z[b, t + 1].mean(0)
            excite = torch.sigmoid(ca.se.fc2.weight @ torch.relu(ca.se.fc1.weight @ f))
            keys.append(ca.k(f + f * excite))
        for t in range(5):
            for n in range(3):
                q = ca.q(z[b, t, n])
                expected = torch.sigmoid(max(q @ k for k in keys) / math.sqrt(4))
                torch.testing.assert_close(got[b, t, n], expected)



def test_cosine_gate_is_a_bounded_scaled_cosine_starting_near_0_8():
    torch.manual_seed(0)
    ca = ClassAgnosticSoftMask(dim=8, qk_dim=4, top_k=2, se_reduction=4, gate="cosine")
    z = torch.randn(2, 5, 3, 8)
    scale, bias = ca.gate_scale_bias()
    torch.testing.assert_close(torch.sigmoid(bias), torch.tensor(0.8))  # M_ca = 0.8 where the cosine is 0
    activated = ca.activated_slots(z)
    f = z.mean(dim=2).gather(1, activated[..., None].expand(-1, -1, 8))
    keys = torch.nn.functional.normalize(ca.k(ca.se(f)), dim=-1)  # [B, K, d]
    queries = torch.nn.functional.normalize(ca.q(z), dim=-1)  # [B, T', N_v, d]
    cosine = torch.einsum("btnd,bkd->btnk", queries, keys).amax(-1)
    torch.testing.assert_close(ca(z), torch.sigmoid(scale * cosine + bias))
    # scaled-up tokens (the dot gate's failure: norms grow through training) leave the cosine gate unsaturated
    assert ((ca(1000 * z) - 0.5).abs() < 0.49).all()
    # whatever the parameters become, the logit stays within +-(max scale + max bias)
    bound = torch.sigmoid(torch.tensor(GATE_MAX_SCALE + GATE_MAX_BIAS))
    with torch.no_grad():
        for sign in (1.0, -1.0):
            ca.scale_logit.fill_(50.0)
            ca.bias_atanh.fill_(50.0 * sign)
            m = ca(z)
            assert (m <= bound).all() and (m >= 1 - bound).all()


def test_dot_gate_saturates_with_the_token_norm():
    """Eq. 7 read literally: the logit scales with the tokens, so growing token norms drive M_ca to 0 or 1."""
    torch.manual_seed(0)
    ca = ClassAgnosticSoftMask(dim=8, qk_dim=4, top_k=2, gate="dot")
    m = ca(1000 * torch.randn(2, 5, 3, 8))
    assert ((m < 1e-6) | (m > 1 - 1e-6)).float().mean() > 0.5

# ---------------------------------------------------------------------------------------- class-semantic (CS)

def reference_accumulate(sim: torch.Tensor, r: int, tau: float, exclude_from: str):
    """method.md Eq. 8-9 with exclusion, one clip and one token at a time."""
    batch, transitions, n_visible, _ = sim.shape
    scores = torch.zeros(batch, transitions + 1, n_visible, dtype=torch.float64)
    excluded = torch.zeros(batch, transitions + 1, n_visible, dtype=torch.bool)
    sim = sim.double()

    def top(score, gone, k):
        ranked = sorted((i for i in range(n_visible) if i not in gone), key=lambda i: (-score[i], i))
        return set(ranked[:k])

    for b in range(batch):
        previous, gone = [0.0] * n_visible, set()
        for t in range(1, transitions + 1):
            s_t = sim[b, t - 1]  # [n of slot t, j of slot t-1]
            k = min(r, n_visible - 1 - len(gone))
            if exclude_from == "previous":
                gone |= top(previous, gone, k)
            kept = [n for n in range(n_visible) if n not in gone]
            current = [0.0] * n_visible
            for n in kept:
                carried = 0.0
                for i in kept:  # rows of P_t: slot t-1 tokens that are not excluded
                    norm = sum(math.exp(s_t[m, i] / tau) for m in kept)
                    carried += previous[i] * math.exp(s_t[n, i] / tau) / norm
                current[n] = carried + max(0.0, max(s_t[n, j].item() for j in kept))
            if exclude_from == "current":
                gone |= top(current, gone, k)
                current = [0.0 if n in gone else v for n, v in enumerate(current)]
            scores[b, t] = torch.tensor(current)
            excluded[b, t, list(gone)] = True
            previous = current
    return scores, excluded


def random_similarity(batch=2, slots=5, n_visible=6, dim=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = torch.nn.functional.normalize(torch.randn(batch, slots, n_visible, dim, generator=g), dim=-1)
    return p[:, 1:] @ p[:, :-1].transpose(-1, -2)  # [B, T'-1, N_v, N_v], cosine similarities


@pytest.mark.parametrize("exclude_from", ["previous", "current"])
@pytest.mark.parametrize("r", [0, 1, 2, 3])
def test_accumulate_redundancy_matches_the_loop_reference(r, exclude_from):
    sim = random_similarity(seed=r)
    score, excluded = accumulate_redundancy(sim, r=r, tau=0.1, exclude_from=exclude_from)
    expected_score, expected_excluded = reference_accumulate(sim, r, 0.1, exclude_from)
    assert torch.equal(excluded, expected_excluded)
    torch.testing.assert_close(score.double(), expected_score, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("r", [1, 2, 3])
def test_excluded_set_grows_by_r_per_transition_and_is_capped(r):
    sim = random_similarity(slots=5, n_visible=6)
    _, excluded = accumulate_redundancy(sim, r=r)
    counts = excluded.sum(dim=-1)  # [B, T']
    expected = [min(r * t, 6 - 1) for t in range(5)]  # 0, r, 2r, ... capped so one position stays
    assert counts.tolist() == [expected, expected]
    assert (excluded[:, :-1] <= excluded[:, 1:]).all()  # the set only grows


def test_top_r_tokens_pass_on_no_score():
    """Total score of slot t = score of slot t-1 without the excluded tokens (P_t's rows sum to 1) + sum s_t."""
    sim = random_similarity(slots=6, n_visible=8, seed=5)
    score, excluded = accumulate_redundancy(sim, r=2, tau=0.1)
    for t in range(1, 6):
        gone = excluded[:, t]
        # the newly excluded positions are the top-2 of S_{t-1} among those not yet excluded
        fresh = gone & ~excluded[:, t - 1]
        for b in range(2):
            candidates = score[b, t - 1].masked_fill(excluded[b, t - 1], float("-inf"))
            # S_1 = 0 everywhere: the first transition's ties go to the lowest positions
            k = min(2, 8 - 1 - int(excluded[b, t - 1].sum()))  # capped: one position stays
            top = {0, 1} if t == 1 else set(candidates.topk(k).indices.tolist())
            assert set(fresh[b].nonzero().flatten().tolist()) == top
        kept_mass = score[:, t - 1].masked_fill(gone, 0).sum(-1)
        best = sim[:, t - 1].masked_fill(gone[:, None, :], float("-inf")).amax(-1).clamp_min(0)
        new_mass = best.masked_fill(gone, 0).sum(-1)
        torch.testing.assert_close(score[:, t].sum(-1), kept_mass + new_mass)
        assert (score[:, t][gone] == 0).all()


def test_minmax_normalise_over_valid_entries():
    x = torch.tensor([[[1.0, 3.0], [100.0, 2.0]]])
    valid = torch.tensor([[[True, True], [False, True]]])
    torch.testing.assert_close(minmax_normalise(x, valid), torch.tensor([[[0.0, 1.0], [0.0, 0.5]]]))
    # per slot: each slot on its own; a slot with one valid entry (max = min) -> 0
    torch.testing.assert_close(minmax_normalise(x, valid, per_slot=True), torch.tensor([[[0.0, 1.0], [0.0, 0.0]]]))


@pytest.mark.parametrize("n_visible,r,fraction,expected", [
    (30, 2, None, [2] * 7),                    # the paper: 2, 4, ..., 14 of 30 excluded in slots 2..8
    (30, 0, 1 / 15, [2] * 7),                  # the same as a fraction (it wins over r)
    (8, 2, 1 / 15, [1, 0, 1, 0, 1, 0, 1]),     # the demo: r = 0.53 per transition
    (8, 1, None, [1] * 7),
    (6, 2, None, [2, 2, 1, 0, 0, 0, 0]),       # capped: one position stays
])
def test_exclusion_schedule(n_visible, r, fraction, expected):
    schedule = exclusion_schedule(n_visible, 7, r, fraction)
    assert schedule == expected
    with pytest.raises(ValueError, match="exclude_fraction"):
        exclusion_schedule(8, 7, 2, 1.5)


def test_exclude_fraction_excludes_the_papers_share_at_the_demos_n_v():
    """N_v = 8, T' = 8: fraction 2/30 excludes 16 of 64 tokens (25%), as the paper's r=2 of N_v=30 excludes 56 of
    240 (23%); r=1 would exclude 28 (44%)."""
    torch.manual_seed(0)
    z, g = torch.randn(2, 8, 8, 16), torch.rand(16)
    _, excluded = ClassSemanticSoftMask(16, 4, exclude_fraction=2 / 30)(z, g)
    assert excluded.sum(dim=(1, 2)).tolist() == [16, 16]
    assert excluded.sum(dim=2)[0].tolist() == [0, 1, 1, 2, 2, 3, 3, 4]
    _, excluded = ClassSemanticSoftMask(16, 4, r=1)(z, g)
    assert excluded.sum(dim=(1, 2)).tolist() == [28, 28]
    _, excluded = ClassSemanticSoftMask(16, 4, r=2)(torch.randn(1, 8, 30, 16), g)
    assert excluded.sum().item() == 56


def test_slot_norm_spans_zero_to_one_in_every_slot():
    """S ramps along the clip; cs_norm=slot rescales it per slot, so no slot is masked more for coming later."""
    torch.manual_seed(0)
    z, g = torch.randn(2, 6, 10, 8), torch.rand(8)
    cs = ClassSemanticSoftMask(dim=8, proj_dim=4, scores="redundancy", r=1, norm="slot")
    m_cs, excluded = cs(z, g)
    redundancy = (1 - m_cs).masked_fill(excluded, float("nan"))[:, 1:]  # slot 1 has S = 0 everywhere
    torch.testing.assert_close(redundancy.nan_to_num(2.0).amin(-1), torch.zeros(2, 5))
    torch.testing.assert_close(redundancy.nan_to_num(-1.0).amax(-1), torch.ones(2, 5))
    assert (m_cs[:, 0] == 1).all()
    clip_norm = ClassSemanticSoftMask(dim=8, proj_dim=4, scores="redundancy", r=1, norm="clip")
    clip_norm.load_state_dict(cs.state_dict())
    m_clip, _ = clip_norm(z, g)
    kept_mean = lambda m: (m * ~excluded).sum(-1) / (~excluded).sum(-1)  # noqa: E731
    # per clip, the ramp shows: later slots are masked more on average; per slot they are not
    assert (kept_mean(m_clip)[:, -1] < kept_mean(m_clip)[:, 1]).all()
    assert not torch.allclose(m_clip, m_cs)


@pytest.mark.parametrize("scores", ["both", "redundancy", "semantic"])
def test_cs_mask_follows_eq_10_and_11(scores):
    torch.manual_seed(0)
    cs = ClassSemanticSoftMask(dim=8, proj_dim=4, scores=scores, r=1, tau=0.1)
    z, g = torch.randn(2, 4, 5, 8), torch.rand(8)
    m_cs, excluded = cs(z, g)
    assert m_cs.shape == (2, 4, 5) and m_cs.min() >= 0 and m_cs.max() <= 1
    assert (m_cs[excluded] == 0).all()
    kept = ~excluded
    semantic = minmax_normalise((z * g).abs().sum(-1), kept)
    if scores == "semantic":
        assert not excluded.any() and cs.phi is None
        torch.testing.assert_close(m_cs, semantic)
        return
    assert excluded.sum().item() == 2 * (1 + 2 + 3)
    p = torch.nn.functional.normalize(cs.phi(z), dim=-1)
    score, _ = accumulate_redundancy(p[:, 1:] @ p[:, :-1].transpose(-1, -2), r=1, tau=0.1)
    redundancy = minmax_normalise(score, kept)
    expected = 1 - redundancy * (1 - semantic) if scores == "both" else 1 - redundancy
    torch.testing.assert_close(m_cs, expected.masked_fill(excluded, 0))
