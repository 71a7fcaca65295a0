"""Soft-mask statistics (adatosk.mask_stats): the recorder's numbers against the model's own masks, the uniform soft
mask against an independent pooling, evaluate's `soft_mask` and the tables drawn from it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import clip, micro, render, write_run

from adatosk import tables
from adatosk.cli import main as cli_main
from adatosk.config import load_config, to_container
from adatosk.evaluate import load_test_split, score, view_masks
from adatosk.mask_stats import SoftMaskRecorder, uniform_soft_mask
from adatosk.models import create_model_from_config
from adatosk.models.checkpoint import load_model
from adatosk.models.masking import tube_mask
from adatosk.train.distributed import amp_settings, init_distributed

# the micro model of test_models: T' = 4 slots, N = 16 positions, half visible: N_v = 8; top_k = 2, r = 2
SLOTS, N_VISIBLE, BATCH = 4, 8, 6


def model_of(**kwargs) -> torch.nn.Module:
    return micro(**kwargs).eval()  # the soft-mask switches at the model's (measured) defaults


def visible_of(batch: int = BATCH, seed: int = 0) -> torch.Tensor:
    return tube_mask(batch, 16, 0.5, generator=torch.Generator().manual_seed(seed))  # [B, N]


@torch.inference_mode()
def recorded(model: torch.nn.Module, x: torch.Tensor, visible: torch.Tensor,
             recorder: SoftMaskRecorder | None = None) -> SoftMaskRecorder:
    recorder = recorder or SoftMaskRecorder(model)
    with recorder:
        model(x, visible=visible)
    return recorder


@torch.inference_mode()
def model_masks(model: torch.nn.Module, x: torch.Tensor, visible: torch.Tensor) -> dict[str, torch.Tensor]:
    """The masks straight from the model's modules and ``temporal_soft_mask``, all ``[B, T', N_v]``."""
    features = model.forward_features(x, visible)
    z, m_s, excluded = features.scored, features.soft_mask, features.excluded  # Z [B, T', N_v, C]
    masks = {"m_s": m_s, "kept": torch.ones_like(m_s) if excluded is None else (~excluded).float()}
    if model.ca is not None:
        masks["m_ca"] = model.ca(z)
    if model.cs is not None:
        masks["m_cs"] = model.cs(z, model.head.channel_weights())[0]
    return masks


def coefficient_of_variation(values: np.ndarray, kept: np.ndarray) -> float:
    return float(np.mean([v[k > 0].std() / v[k > 0].mean() for v, k in zip(values, kept)]))


@pytest.mark.parametrize("soft_mask, combine", [("ca+cs", "product"), ("ca+cs", "mean"), ("ca", "product"),
                                                ("cs", "product")])
def test_recorded_means_and_spreads_are_those_of_the_model_masks(soft_mask, combine):
    model, x, visible = model_of(soft_mask=soft_mask, combine=combine), clip(BATCH), visible_of()
    stats = recorded(model, x, visible).summary()
    masks = {k: v.double().numpy() for k, v in model_masks(model, x, visible).items()}
    kept = masks["kept"]
    assert (stats["views"], stats["slots"], stats["tokens_per_slot"]) == (BATCH, SLOTS, N_VISIBLE)
    expected_masks = {"m_s"} | {f"m_{name}" for name in ("ca", "cs") if name in soft_mask.split("+")}
    assert expected_masks == {k for k in ("m_ca", "m_cs", "m_s") if k in stats}
    for key in expected_masks:
        values = masks[key]
        per_slot = (values * kept).sum(axis=(0, 2)) / kept.sum(axis=(0, 2))
        np.testing.assert_allclose(stats[key]["per_slot"], per_slot, atol=2e-6)
        assert all(0.0 <= v <= 1.0 for v in stats[key]["per_slot"])
        assert stats[key]["mean"] == pytest.approx((values * kept).sum() / kept.sum(), abs=2e-6)
        assert stats[key]["spread"] == pytest.approx(coefficient_of_variation(values, kept), abs=2e-6)
        share = [v[k > 0].sum() ** 2 / (k.sum() * (v[k > 0] ** 2).sum()) for v, k in zip(values, kept)]
        assert stats[key]["effective_share"] == pytest.approx(np.mean(share), abs=2e-6)
        assert 0.0 < stats[key]["effective_share"] <= 1.0
    assert ("gate" in stats) == ("ca" in soft_mask)
    if "gate" in stats:
        s, b = (float(v.detach()) for v in model.ca.gate_scale_bias())
        assert stats["gate"] == pytest.approx({"s": s, "b": b}, abs=1e-6)


@pytest.mark.parametrize("kwargs", [{}, {"exclude_fraction": 0.3}, {"exclude_at": 1}, {"r": 5}])
def test_excluded_share_is_the_exclusion_schedule(kwargs):
    model = model_of(**kwargs)
    stats = recorded(model, clip(BATCH), visible_of()).summary()
    cumulative = np.cumsum([0] + model.cs.schedule(SLOTS, N_VISIBLE))
    np.testing.assert_allclose(stats["excluded_share"], cumulative / N_VISIBLE, atol=1e-6)


@pytest.mark.parametrize("top_k", [1, 2, 10])
def test_activated_shares_sum_to_k_and_skip_the_first_slot(top_k):
    model = model_of(soft_mask="ca", top_k=top_k)
    x, visible = clip(BATCH), visible_of()
    stats = recorded(model, x, visible).summary()
    shares = stats["activated_share"]
    assert "excluded_share" not in stats                                      # no CS module
    assert sum(shares) == pytest.approx(min(top_k, SLOTS - 1), abs=1e-5)  # the summary rounds to 6 decimals
    assert shares[0] == 0.0 and all(0.0 <= s <= 1.0 for s in shares)
    with torch.inference_mode():
        z = model.forward_features(x, visible).scored
        activated = model.ca.activated_slots(z)                                # [B, K]
    for t, share in enumerate(shares):
        assert share == pytest.approx(float((activated == t).any(dim=1).double().mean()), abs=1e-6)


def test_sums_over_half_batches_and_ranks_are_those_of_the_whole_batch():
    model, x, visible = model_of(), clip(BATCH), visible_of()
    whole = recorded(model, x, visible).summary()
    halves = SoftMaskRecorder(model)
    for part in (slice(0, 2), slice(2, BATCH)):                               # uneven halves: sums, not means
        recorded(model, x[part], visible[part], halves)
    first, second = recorded(model, x[:2], visible[:2]), recorded(model, x[2:], visible[2:])
    two_ranks = first.summary(reduce=lambda flat: flat + second.flat_sums())  # what all_reduce_sum does
    for summary in (halves.summary(), two_ranks):
        assert_close_summaries(summary, whole)
    assert first.summary()["views"] == 2


def assert_close_summaries(a, b) -> None:
    """Equal structure, numbers equal up to float rounding."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_close_summaries(a[key], b[key])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_close_summaries(x, y)
    else:
        assert a == pytest.approx(b, abs=2e-6)


@pytest.mark.parametrize("pool", ["mean", "weighted", "fc_norm"])
def test_uniform_soft_mask_pools_the_plain_mean_of_the_kept_tokens(pool):
    model, x, visible = model_of(pool=pool), clip(BATCH), visible_of()
    with torch.inference_mode():
        learned = model(x, visible=visible)
        with uniform_soft_mask(model):
            uniform = model(x, visible=visible)
        z = model.forward_features(x, visible).scored                          # [B, T', N_v, C]
        kept = ~model.cs(z, model.head.channel_weights())[1]                     # [B, T', N_v]
        pooled = (z * kept[..., None]).sum(dim=(1, 2)) / kept.sum(dim=(1, 2))[:, None]
        expected = model.head(model.fc_norm(pooled))
        after = model(x, visible=visible)
    torch.testing.assert_close(uniform, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after, learned)                                  # the hooks are gone
    assert not torch.allclose(uniform, learned, atol=1e-4)


def test_uniform_ca_mask_is_the_model_without_soft_mask():
    """CA excludes nothing: with M_ca := 1 the model is plain AdaTosk (soft_mask none) with the same weights."""
    model, x, visible = model_of(soft_mask="ca"), clip(BATCH), visible_of()
    plain = model_of(soft_mask="none")
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("ca.")})
    with torch.inference_mode(), uniform_soft_mask(model):
        torch.testing.assert_close(model(x, visible=visible), plain(x, visible=visible), atol=1e-5, rtol=1e-5)


def test_a_model_without_soft_mask_has_nothing_to_record():
    with pytest.raises(ValueError, match="has no soft mask"):
        SoftMaskRecorder(model_of(soft_mask="none"))


# --- evaluate ---------------------------------------------------------------------------------------------------

def test_evaluate_writes_the_soft_mask_statistics_of_its_views(trained):
    cfg = load_config(trained)
    assert cli_main(["evaluate", *trained]) == 0
    metrics = json.loads((Path(cfg.run_dir) / "metrics.json").read_text())
    stats = metrics["soft_mask"]
    assert stats["views"] == metrics["n_clips"] * metrics["views"]["total"]   # the main pass only, not all_tokens
    assert stats["slots"] == cfg.model.num_frames // cfg.model.tubelet_size
    assert {"m_ca", "m_cs", "m_s", "excluded_share", "activated_share", "gate"} <= stats.keys()
    assert uniform_war(cfg) == pytest.approx(stats["uniform"]["war"])
    assert cli_main(["evaluate", *trained, "evaluate.soft_mask_stats=false"]) == 0
    assert "soft_mask" not in json.loads((Path(cfg.run_dir) / "metrics.json").read_text())


@torch.inference_mode()
def uniform_war(cfg) -> float:
    """WAR (%) of the checkpoint with M_s := 1 on the kept tokens, over every seeded view of every test clip."""
    model, _ = load_model(Path(cfg.run_dir) / "checkpoint" / "last")
    model.eval()
    dataset = load_test_split(cfg)
    views = int(cfg.evaluate.mask_views)
    right = 0
    for i in range(len(dataset)):
        clips = dataset[i]["video"]                                             # [V, 3, T, S, S]
        probs = 0.0
        for t in range(len(clips)):
            for m in range(views):
                visible = view_masks(model, torch.tensor([i]), t * views + m, cfg.evaluate.mask_seed,
                                     torch.device("cpu"))
                with uniform_soft_mask(model):
                    probs = probs + model(clips[t:t + 1], visible=visible).softmax(dim=-1)[0]
        right += int(probs.argmax()) == dataset.labels[i]
    return 100 * right / len(dataset)


@pytest.mark.parametrize("model_group", ["videomae", "adatosk"])
def test_models_without_soft_mask_get_no_statistics(trained, model_group):
    cfg = load_config(trained + [f"model={model_group}", "model.arch=vit_tiny_patch16_64", "model.img_size=64",
                                 "model.num_frames=8"])
    model = create_model_from_config(cfg.model, num_classes=int(cfg.data.num_classes))
    ctx = init_distributed("cpu")
    metrics, _, _ = score(model, load_test_split(cfg), cfg, ctx, amp_settings("none", ctx.device),
                          list(cfg.data.class_names), soft_mask_stats=True)
    assert "soft_mask" not in metrics and metrics["n_clips"] == 7


def test_bad_soft_mask_stats_value_is_refused():
    with pytest.raises(Exception, match="evaluate.soft_mask_stats must be true/false"):
        load_config(["evaluate.soft_mask_stats=3"])


# --- tables -------------------------------------------------------------------------------------------------------

def soft_mask_of(rng, uar: float, variant: str) -> dict:
    """A plausible `soft_mask` entry of metrics.json for ``variant`` (random values)."""
    def entry() -> dict:
        return {"mean": float(rng.uniform(0.2, 1)), "per_slot": rng.uniform(0.2, 1.0, 8).tolist(),
                "spread": float(rng.uniform(0, 0.5)), "effective_share": float(rng.uniform(0.8, 1))}

    stats = {"views": 28, "slots": 8, "tokens_per_slot": 8, "m_s": entry(), "m_ca": entry(),
             "activated_share": [0.0] + (4 * rng.dirichlet(np.ones(7))).tolist(),
             "gate": {"s": float(rng.uniform(0, 5)), "b": float(rng.uniform(-3, 3))},
             "uniform": {"uar": uar - float(rng.uniform(-3, 3)), "war": 50.0}}
    if variant == "adatosk_dagger":
        stats.update(m_cs=entry(), excluded_share=(np.arange(8) / 28).tolist())
    return stats


def test_tables_show_the_soft_mask_statistics_of_the_runs_that_have_them(tmp_path):
    cfg = to_container(load_config())
    cfg["grid"]["main"]["seeds"] = [0, 1, 2]
    runs = tmp_path / "runs"
    rng = np.random.default_rng(0)
    made = {}
    for variant in ("videomae", "adatosk", "adatosk_dagger", "adatosk_ca"):
        for seed in (0, 1, 2):
            metrics = write_run(runs, "demo", variant, 1, seed)
            if variant == "adatosk_dagger":  # adatosk_ca: evaluated with evaluate.soft_mask_stats=false
                metrics["soft_mask"] = soft_mask_of(rng, metrics["uar"], variant)
                (runs / "demo" / variant / "fold1" / f"seed{seed}" / "metrics.json").write_text(json.dumps(metrics))
            made.setdefault(variant, []).append(metrics)
    out = render(tmp_path, cfg, runs)
    rows = {r[1]: r for r in csv.reader((out / "soft_mask.csv").read_text().splitlines())}
    assert set(rows) == {"Variant", "adatosk_dagger"}                         # only the runs that have statistics
    header, dagger = rows["Variant"], rows["adatosk_dagger"]
    column = dict(zip(header, dagger))
    stats = [m["soft_mask"] for m in made["adatosk_dagger"]]
    uar = [m["uar"] for m in made["adatosk_dagger"]]
    uniform = [s["uniform"]["uar"] for s in stats]
    assert column["UAR (%)"] == tables.summary_text(uar, 3)
    assert column["UAR (%, M_s := 1)"] == tables.summary_text(uniform, 3)
    assert column["UAR - UAR(M_s := 1)"] == tables.summary_text(np.subtract(uar, uniform).tolist(), 3)
    assert column["mean M_cs"] == tables.summary_text([s["m_cs"]["mean"] for s in stats], 3, digits=3)
    assert column["effective share (M_s)"] == tables.summary_text([s["m_s"]["effective_share"] for s in stats], 3,
                                                                  digits=3)
    assert column["gate b"] == tables.summary_text([s["gate"]["b"] for s in stats], 3)
    assert column["Runs"] == "fold 1 x seeds 0, 1, 2 = 3 runs"
    assert (out / "soft_mask.md").read_text().startswith("### What the soft mask does at test time")

    slot_rows = list(csv.reader((out / "soft_mask_slots.csv").read_text().splitlines()))
    assert slot_rows[0] == ["Dataset", "Variant", "Quantity"] + [f"slot {t}" for t in range(1, 9)]
    by_quantity = {r[2]: r[3:] for r in slot_rows[1:] if r[1] == "adatosk_dagger"}
    assert list(by_quantity) == ["M_ca", "M_cs", "M_s", "excluded (%)", "activated (%)"]
    assert by_quantity["M_s"][2] == tables.summary_text([s["m_s"]["per_slot"][2] for s in stats], 3, digits=3)
    excluded, activated = f"{100 * 7 / 28:.1f}", "0.0"               # the same in every run: std 0, interval a point
    assert by_quantity["excluded (%)"][7] == f"{excluded} ± 0.0 [{excluded}, {excluded}] (n=3)"
    assert by_quantity["activated (%)"][0] == f"{activated} ± 0.0 [{activated}, {activated}] (n=3)"


def test_the_soft_mask_table_shows_a_variant_without_cs_as_such(tmp_path):
    cfg = to_container(load_config())
    cfg["grid"]["main"]["variants"] = ["adatosk_ca"]
    runs = tmp_path / "runs"
    metrics = write_run(runs, "demo", "adatosk_ca", 1)
    metrics["soft_mask"] = soft_mask_of(np.random.default_rng(1), metrics["uar"], "adatosk_ca")
    (runs / "demo" / "adatosk_ca" / "fold1" / "seed0" / "metrics.json").write_text(json.dumps(metrics))
    out = render(tmp_path, cfg, runs)
    header, row = list(csv.reader((out / "soft_mask.csv").read_text().splitlines()))
    column = dict(zip(header, row))
    assert (column["mean M_cs"], column["M_cs spread"]) == (tables.ABSENT, tables.ABSENT)
    assert column["mean M_ca"] == f"{metrics['soft_mask']['m_ca']['mean']:.3f} (n=1)"    # one run: no interval
    quantities = [r[2] for r in csv.reader((out / "soft_mask_slots.csv").read_text().splitlines())][1:]
    assert quantities == ["M_ca", "M_s", "activated (%)"]


def test_no_run_with_statistics_gives_an_empty_table_that_says_so(tmp_path):
    cfg = to_container(load_config())
    write_run(tmp_path / "runs", "demo", "adatosk_dagger", 1)
    md = (render(tmp_path, cfg, tmp_path / "runs") / "soft_mask.md").read_text()
    assert "No run of the grid has soft-mask statistics" in md
