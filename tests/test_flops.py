import argparse
import json
import types

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from adatosk import flop_count, flops, paper


class ExplicitAttention(nn.Module):
    def forward(self, q, k, v):
        attn = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
        return attn.softmax(dim=-1) @ v


class FusedAttention(nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


def test_sdpa_handle_counts_what_the_explicit_matmuls_count():
    # Lq != Lk and d != dv, so that a handle mixing up the dimensions cannot pass
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 4)
    explicit = flop_count.count_flops(ExplicitAttention(), (q, k, v), batch_size=1)
    fused = flop_count.count_flops(FusedAttention(), (q, k, v), batch_size=1)
    assert fused.flops == explicit.flops == 2 * 3 * 5 * 7 * (8 + 4)
    assert set(fused.by_operator) == {"scaled_dot_product_attention"}
    assert torch.allclose(FusedAttention()(q, k, v), ExplicitAttention()(q, k, v), atol=1e-5)


def test_timm_vit_counts_the_same_with_fused_and_explicit_attention():
    import timm

    model = timm.create_model("vit_tiny_patch16_224", img_size=64, depth=2, num_classes=3).eval()
    x = torch.randn(1, 3, 64, 64)
    fused = flop_count.count_flops(model, (x,), batch_size=1)
    for block in model.blocks:
        block.attn.fused_attn = False
    explicit = flop_count.count_flops(model, (x,), batch_size=1)
    assert fused.flops == explicit.flops > 0
    assert fused.by_operator["scaled_dot_product_attention"] == explicit.by_operator["matmul"]
    assert fused.used_parameters == {name for name, _ in model.named_parameters()}


class MatrixVector(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 6))

    def forward(self, x):
        return torch.mv(self.weight, x).relu()


def test_an_uncounted_flop_carrying_op_is_an_error():
    with pytest.raises(flop_count.UncountedOpError, match="aten::mv"):
        flop_count.count_flops(MatrixVector(), (torch.randn(6),), batch_size=1)


def test_elementwise_ops_are_tallied_apart_from_flops():
    count = flop_count.count_flops(nn.Sequential(nn.GELU(), nn.Softmax(dim=-1)), (torch.randn(2, 5),), batch_size=2)
    assert count.flops == 0
    assert count.elementwise == (10 + 10) // 2  # the gelu and softmax outputs, per clip


def test_table2_grid_drops_cells_that_run_out_of_visible_positions():
    # 16x160x160: T' = 8 slots, N = 100; at 70% N_v = 30 and r = 6 would exclude 42 positions
    assert flops.table2_grid(16, 160) == [
        (0.25, 0), (0.25, 2), (0.25, 4), (0.25, 6), (0.5, 0), (0.5, 2), (0.5, 4), (0.5, 6), (0.7, 0), (0.7, 2),
        (0.7, 4),
    ]


def test_variants_resolve_to_registered_names_and_kwargs():
    hyper = {"family": "adatosk", "arch": "vit_base_patch16_160", "img_size": 160, "num_frames": 16,
             "tubelet_size": 2, "drop_path_rate": 0.1, "mask_ratio": 0.7, "eval_mask_ratio": 0.7, "r": 2,
             "soft_mask": "ca+cs", "top_k": 4}
    base = flops.resolve_variant("videomae", hyper, "vit_tiny_patch16_64", 16, 128)
    assert base.timm_name == "videomae_vit_tiny_patch16_64"
    assert base.kwargs == {"img_size": 128, "num_frames": 16, "tubelet_size": 2, "drop_path_rate": 0.1}
    plain = flops.resolve_variant("adatosk", hyper, "vit_base_patch16_160", 16, 160)
    assert plain.timm_name == "adatosk_vit_base_patch16_160" and plain.kwargs["soft_mask"] == "none"
    cell = flops.resolve_variant("adatosk_dagger_m25_r4", hyper, "vit_base_patch16_160", 16, 160)
    assert (cell.kwargs["mask_ratio"], cell.kwargs["eval_mask_ratio"], cell.kwargs["r"]) == (0.25, 0.25, 4)
    assert flops.resolve_variant("config", hyper, "vit_tiny_patch16_64", 8, 64).kwargs["img_size"] == 160
    with pytest.raises(ValueError, match="unknown variant"):
        flops.resolve_variant("adatosk_dagger_m30_r2", hyper, "vit_base_patch16_160", 16, 160)
    args = argparse.Namespace(arch="base", frames=None, size=None, variants=["adatosk_dagger", "table2"])
    cfg = types.SimpleNamespace(model=OmegaConf.create(hyper))
    names = [spec.name for spec in flops.specs_from_args(args, cfg, ())]
    assert names[:2] == ["videomae", "adatosk_dagger"] and len(names) == 2 + 11 - 1  # m70_r2 is adatosk_dagger
    assert "adatosk_dagger_m70_r2" not in names and "adatosk_dagger_m70_r4" in names
    assert flops.parse_assignments(["mask_ratio=0.5", "r=0", "soft_mask=ca"]) == {
        "mask_ratio": 0.5, "r": 0, "soft_mask": "ca"}


def _build(name, **kwargs):
    import timm

    import adatosk.models  # noqa: F401  (registers the models)

    torch.manual_seed(0)
    return timm.create_model(name, num_classes=7, **kwargs)


def test_videomae_vit_base_counts_videomae_s_published_flops():
    # VideoMAE's ViT-B/16 at 16x160x160 (800 tokens): 81-82 GFLOPs as published (the paper's Table 1: 86M / 82G)
    model = _build("videomae_vit_base_patch16_160").eval()
    count = flop_count.count_flops(model, (torch.randn(1, 3, 16, 160, 160),), batch_size=1)
    assert 80e9 <= count.flops <= 82e9
    assert 85e6 <= sum(p.numel() for p in model.parameters()) <= 87e6
    assert count.by_operator["scaled_dot_product_attention"] > 0


@pytest.fixture(scope="module")
def tiny_counts():
    return {name: flop_count.model_flops(_build(f"{name}_vit_tiny_patch16_64"), 16, 64)
            for name in ("videomae", "adatosk")}


def test_adatosk_infers_with_fewer_flops_and_trains_with_the_decoder(tiny_counts):
    base, ada = tiny_counts["videomae"], tiny_counts["adatosk"]
    assert ada["flops_inference"] < base["flops_inference"] / 2  # 30% of the tokens at eval_mask_ratio 0.7
    assert base["flops_train"] == base["flops_inference"]
    assert base["params_inference"] == base["params_train"] and not base["params_unused_at_inference"]
    # the modules inference does not use (the decoder) are traced in the training step only
    train_only = ada["params_unused_at_inference"]
    assert train_only
    for name in train_only:
        assert ada["flops_train_by_module"].get(name, 0) > 0 and name not in ada["flops_inference_by_module"]
    decoder = sum(ada["flops_train_by_module"][name] for name in train_only)
    assert ada["flops_train"] >= ada["flops_inference"] + decoder
    assert ada["params_inference"] < ada["params_train"]


def test_flops_command_prints_the_table_with_the_paper_s_numbers(tmp_path, capsys):
    from adatosk.cli import main

    out = tmp_path / "flops.json"
    assert main(["flops", "--arch", "tiny", "--frames", "8", "--size", "64", "--models", "adatosk_vit_tiny_patch16_64",
                 "--set", "r=0", "soft_mask=none", "img_size=64", "num_frames=8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "quoted" in printed and "mae_dfer" in printed
    result = json.loads(out.read_text())
    rows = {row["name"]: row for row in result["rows"]}
    assert list(rows) == ["videomae", "adatosk", "adatosk_dagger", "adatosk_vit_tiny_patch16_64"]
    assert rows["adatosk_vit_tiny_patch16_64"]["kwargs"] == {"r": 0, "soft_mask": "none", "img_size": 64,
                                                              "num_frames": 8}
    assert {(row["frames"], row["size"]) for row in rows.values()} == {(8, 64)}
    assert rows["adatosk_dagger"]["paper_table1"] is None  # quoted for ViT-B at 16x160x160 only
    base = flops.resolve_variant("adatosk_dagger", rows["adatosk_dagger"]["kwargs"], "vit_base_patch16_160", 16, 160)
    assert flops.paper_quotes(base) == {"paper_table1": (72, 40), "paper_table2_gflops": 40.12}
    assert "72" in printed and "40.12" not in printed
    assert rows["adatosk"]["gflops_inference"] < rows["videomae"]["gflops_inference"]
    # r > 0 excludes tokens after the encoder: the note compares the same model with r = 0
    (note,) = result["exclusion_notes"]
    assert note["r"] == 2 and note["gflops_inference"] <= note["gflops_inference_r0"]


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_exclusion_inside_the_encoder_lowers_the_counted_flops_as_r_grows():
    """exclude_at=0: the excluded tokens skip every block, so the encoder's count falls with r; after the encoder
    (exclude_at=None) r leaves the encoder's count unchanged."""
    def encoder_and_total(r, exclude_at):
        model = _build("adatosk_vit_tiny_patch16_64", mask_ratio=0.5, eval_mask_ratio=0.5, r=r,
                       exclude_fraction=None, exclude_at=exclude_at)
        counted = flop_count.model_flops(model, 16, 64)
        return counted["flops_inference_by_module"]["encoder"], counted["flops_inference"], counted["flops_train"]

    inside = [encoder_and_total(r, 0) for r in (0, 1, 2)]  # 0, 28 and 42 of the 64 visible tokens excluded
    for fewer, more in zip(inside, inside[1:]):
        assert all(m < f for f, m in zip(fewer, more)), (fewer, more)
    assert inside[2][0] < 0.5 * inside[0][0]
    after = [encoder_and_total(r, None) for r in (0, 2)]
    assert after[0][0] == after[1][0] == pytest.approx(inside[0][0], rel=1e-3)  # inside: one more LayerNorm
    assert inside[2][1] < after[1][1]


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_table2_by_size_counts_each_reading(monkeypatch):
    monkeypatch.setattr(paper, "TABLE2_GFLOPS", {(0.5, 0): 84.32, (0.5, 2): 72.24})
    hyper = {"family": "adatosk", "tubelet_size": 2, "soft_mask": "ca+cs", "top_k": 4}
    rows = flops.table2_by_size(hyper, "vit_tiny_patch16_64", 16, (32, 64), num_classes=7)
    assert [(row["size"], row["r"]) for row in rows] == [(32, 0), (32, 2), (64, 0), (64, 2)]
    never, after = flops.TABLE2_CONVENTIONS
    for r0, r2 in ((rows[0], rows[1]), (rows[2], rows[3])):
        assert r2[never]["gflops_inference"] < r0[never]["gflops_inference"]
        assert r0[never]["gflops_inference"] == pytest.approx(r0[after]["gflops_inference"], rel=1e-2)
        assert r2[after] == r0[after]
    assert rows[2][never]["gflops_inference"] > 3 * rows[0][never]["gflops_inference"]  # 4x the tokens
    flops.print_table2_by_size(rows, "vit_tiny_patch16_64")
