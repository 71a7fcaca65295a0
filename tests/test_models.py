"""The AdaTosk and VideoMAE models: hard mask, encoder, reconstruction branch, forward contract, every variant."""

from __future__ import annotations

import itertools

import pytest
import timm
import torch
import torch.nn.functional as F
from einops import rearrange
from helpers import MICRO, clip, micro

import adatosk.models  # noqa: F401  (registers the models)
from adatosk.config import load_config
from adatosk.errors import AdatoskError
from adatosk.models import ModelOutput, create_model_from_config
from adatosk.models.decoder import masked_targets, reconstruction_loss
from adatosk.models.masking import num_visible, tube_mask, visible_order
from adatosk.models.vit import PatchEmbed3D, get_sinusoid_encoding_table

# ---------------------------------------------------------------------------------------------- hard tube mask

@pytest.mark.parametrize("num_patches,ratio,expected", [(100, 0.7, 30), (64, 0.75, 16), (16, 0.5, 8), (10, 0.0, 10),
                                                        (100, 0.29, 71)])
def test_num_visible(num_patches, ratio, expected):
    assert num_visible(num_patches, ratio) == expected


def test_tube_mask_has_exactly_n_visible_per_row_and_is_seeded():
    visible = tube_mask(64, 100, 0.7, generator=torch.Generator().manual_seed(3))
    assert visible.dtype == torch.bool and visible.shape == (64, 100)
    assert (visible.sum(dim=1) == 30).all()
    assert len({tuple(row.tolist()) for row in visible}) > 1  # rows differ
    again = tube_mask(64, 100, 0.7, generator=torch.Generator().manual_seed(3))
    assert torch.equal(visible, again)
    with pytest.raises(ValueError):
        tube_mask(2, 10, 1.0)


def test_visible_order_lists_visible_then_masked_in_ascending_order():
    visible = torch.tensor([[True, False, True, False], [False, True, True, False]])
    order, n_visible = visible_order(visible)
    assert n_visible == 2
    assert order.tolist() == [[0, 2, 1, 3], [1, 2, 0, 3]]
    with pytest.raises(ValueError, match="same number"):
        visible_order(torch.tensor([[True, False], [True, True]]))


def test_encoder_sees_the_same_visible_positions_in_every_slot():
    """The encoder on a tube mask equals VideoMAE's selection x[visible repeated over T'] of the full tokens."""
    model = micro().eval()
    x = clip()
    visible = tube_mask(2, model.num_patches, 0.5, generator=torch.Generator().manual_seed(0))
    encoder = model.encoder
    with torch.no_grad():
        tokens = encoder.patch_embed(x).flatten(1, 2) + encoder.pos_embed  # [B, L, C], all tokens
        selected = tokens[visible.repeat(1, model.num_slots)].view(2, -1, tokens.shape[-1])
        for block in encoder.blocks:
            selected = block(selected)
        expected = encoder.norm(selected)
        got = model.forward_features(x, visible).tokens
    n_v = num_visible(model.num_patches, 0.5)
    assert got.shape == (2, model.num_slots * n_v, 32)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_patch_embed_on_kept_tubes_equals_convolution_then_gather():
    embed = PatchEmbed3D(img_size=32, patch_size=8, num_frames=8, tubelet_size=2, embed_dim=24)
    x = clip()
    keep = torch.tensor([[0, 5, 9], [2, 3, 15]])
    full = embed(x)  # [B, T', N, D] via Conv3d
    expected = torch.stack([full[b][:, keep[b]] for b in range(2)])
    torch.testing.assert_close(embed(x, keep), expected, atol=1e-5, rtol=1e-5)


def test_sinusoid_table_matches_the_definition():
    table = get_sinusoid_encoding_table(10, 6)[0]
    for pos, j in itertools.product(range(10), range(6)):
        angle = pos / 10000 ** (2 * (j // 2) / 6)
        expected = torch.tensor(angle).sin() if j % 2 == 0 else torch.tensor(angle).cos()
        assert abs(table[pos, j].item() - expected.item()) < 1e-6


def test_baseline_encoder_equals_adatosk_encoder_with_no_masking():
    baseline = micro("videomae_vit_tiny_patch16_64").eval()
    model = micro(mask_ratio=0.0, eval_mask_ratio=0.0).eval()
    result = model.load_state_dict(baseline.state_dict(), strict=False)
    assert [k for k in result.missing_keys if k.startswith("encoder.")] == ["encoder.norm.weight", "encoder.norm.bias"]
    x = clip()
    with torch.no_grad():
        expected = model.encoder.norm(baseline.forward_features(x))  # [B, L, C], all 64 tokens
        assert expected.shape == (2, 64, 32)
        torch.testing.assert_close(model.forward_features(x).tokens, expected, atol=1e-5, rtol=1e-5)
        all_visible = torch.ones(2, model.num_patches, dtype=torch.bool)
        torch.testing.assert_close(model.forward_features(x, all_visible).tokens, expected, atol=1e-5, rtol=1e-5)
        # the baseline with an all-visible mask runs the gather path: same function as its convolution path
        torch.testing.assert_close(baseline(x, visible=all_visible), baseline(x), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------- reconstruction branch

def reference_targets(video: torch.Tensor, visible: torch.Tensor, norm_pix_loss: bool = True) -> torch.Tensor:
    """VideoMAE's (normalised-)pixel target written out with einops, then the masked tubes per clip."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1, 1)
    tubes = rearrange(video * std + mean, "b c (t p0) (h p1) (w p2) -> b t (h w) (p0 p1 p2) c", p0=2, p1=8, p2=8)
    if norm_pix_loss:
        tubes = (tubes - tubes.mean(dim=-2, keepdim=True)) / (tubes.var(dim=-2, unbiased=True, keepdim=True).sqrt()
                                                              + 1e-6)
    tubes = tubes.flatten(-2)  # [B, T', N, 384]
    return torch.stack([tubes[b][:, ~visible[b]].flatten(0, 1) for b in range(video.shape[0])])


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_masked_targets_are_videomae_normalised_pixels_of_masked_tubes(norm_pix_loss):
    video = clip()
    visible = tube_mask(2, 16, 0.5, generator=torch.Generator().manual_seed(1))
    got = masked_targets(video, visible, tubelet_size=2, patch_size=8, norm_pix_loss=norm_pix_loss)
    assert got.shape == (2, 4 * 8, 2 * 8 * 8 * 3)
    torch.testing.assert_close(got, reference_targets(video, visible, norm_pix_loss), atol=1e-5, rtol=1e-5)


def test_reconstruction_loss_counts_only_masked_tubes():
    video = clip()
    visible = tube_mask(2, 16, 0.5, generator=torch.Generator().manual_seed(2))
    pred = torch.randn(2, 32, 384)
    loss = reconstruction_loss(pred, masked_targets(video, visible, 2, 8))
    v_pos, m_pos = int(visible[0].nonzero()[0]), int((~visible[0]).nonzero()[0])
    h, w = divmod(v_pos, 4)
    changed = video.clone()
    changed[0, :, 2:4, h * 8:(h + 1) * 8, w * 8:(w + 1) * 8] = torch.randn(3, 2, 8, 8)  # a visible tube of slot 1
    assert reconstruction_loss(pred, masked_targets(changed, visible, 2, 8)) == loss
    h, w = divmod(m_pos, 4)
    changed = video.clone()
    changed[0, :, 2:4, h * 8:(h + 1) * 8, w * 8:(w + 1) * 8] = torch.randn(3, 2, 8, 8)  # a masked tube
    assert reconstruction_loss(pred, masked_targets(changed, visible, 2, 8)) != loss


def test_decoder_predicts_masked_tubes_in_target_order():
    """The decoder equals MAE's full-sequence form: every position in place, mask tokens at the masked ones."""
    model = micro().eval()
    decoder = model.decoder
    visible = tube_mask(2, 16, 0.5, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        tokens = model.forward_features(clip(), visible).tokens  # [B, T' * N_v, C]
        got = decoder(tokens, visible)
        embedded = decoder.embed(tokens).view(2, 4, 8, -1)
        full = decoder.mask_token.expand(2, 4, 16, -1).clone()
        for b in range(2):
            full[b][:, visible[b]] = embedded[b]
        full = full.flatten(1, 2) + decoder.pos_embed
        for block in decoder.blocks:
            full = block(full)
        pred = decoder.pred(decoder.norm(full)).view(2, 4, 16, -1)
        expected = torch.stack([pred[b][:, ~visible[b]].flatten(0, 1) for b in range(2)])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_training_output_combines_both_losses():
    model = micro(lambda_rec=1.0, lambda_cls=0.1).train()
    x, y = clip(), torch.tensor([0, 3])
    visible = tube_mask(2, 16, 0.5, generator=torch.Generator().manual_seed(5))
    out = model(x, y, visible=visible)
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (2, 5) and out.soft_mask.shape == (2, 4, 8) and torch.equal(out.visible, visible)
    torch.testing.assert_close(out.loss, 1.0 * out.loss_rec + 0.1 * out.loss_cls)
    torch.testing.assert_close(out.loss_cls, F.cross_entropy(out.logits, y))
    soft = F.one_hot(y, 5).float() * 0.9 + 0.02  # label-smoothing style soft target
    out_soft = model(x, soft, visible=visible)
    expected = -(soft * out_soft.logits.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(out_soft.loss_cls, expected)
    # without masking there is nothing to reconstruct
    assert micro(mask_ratio=0.0).train()(x, y).loss_rec.item() == 0.0


def test_videomae_training_output_and_attributes():
    model = micro("videomae_vit_tiny_patch16_64").train()
    out = model(clip(), torch.tensor([1, 2]))
    assert out.loss_rec.item() == 0.0 and out.soft_mask is None and out.visible is None
    torch.testing.assert_close(out.loss, out.loss_cls)
    assert (model.num_patches, model.num_slots, model.mask_ratio, model.eval_mask_ratio) == (16, 4, 0.0, 0.0)


# ------------------------------------------------------------------------------------------- forward contract

def test_eval_forward_with_seeded_mask_is_deterministic_and_draws_eval_ratio():
    model = micro(eval_mask_ratio=0.25).eval()
    x = clip()
    masks = [tube_mask(2, 16, model.eval_mask_ratio, generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    with torch.no_grad():
        first, second = model(x, visible=masks[0]), model(x, visible=masks[1])
    assert first.shape == (2, 5) and torch.equal(first, second)
    assert model.draw_visible(3).sum(dim=1).tolist() == [12, 12, 12]  # eval_mask_ratio 0.25 of 16
    model.train()
    assert model.draw_visible(3).sum(dim=1).tolist() == [8, 8, 8]  # mask_ratio 0.5


def test_head_init_scale_scales_only_the_output_layer_and_starts_the_loss_at_chance():
    torch.manual_seed(3)
    plain = micro(num_classes=7, head_init_scale=1.0).train()
    torch.manual_seed(3)
    scaled = micro(num_classes=7).train()  # the default, 0.01
    for (name, a), b in zip(plain.state_dict().items(), scaled.state_dict().values()):  # the same random draws
        torch.testing.assert_close(b, a * 0.01 if name == "head.fc2.weight" else a, rtol=0, atol=0)
    x = clip(batch=16, seed=1)
    y = torch.arange(16) % 7
    visible = tube_mask(16, 16, 0.5, generator=torch.Generator().manual_seed(2))
    chance = torch.log(torch.tensor(7.0))
    assert abs(scaled(x, y, visible=visible).loss_cls - chance) < 0.01
    assert plain(x, y, visible=visible).loss_cls > chance + 0.1  # logits of std ~1: a confident random guess
    scaled.reset_classifier(4)  # a new output layer for fine-tuning starts small too
    assert scaled.head.fc2.weight.abs().max() <= 0.01 * (6 / (MICRO["head_hidden_dim"] + 4)) ** 0.5  # Xavier bound


@pytest.mark.parametrize("scale", [1.0, 0.001])
def test_videomae_reset_classifier_keeps_the_configured_head_init_scale(scale):
    baseline = micro("videomae_vit_tiny_patch16_64", head_init_scale=scale)
    baseline.reset_classifier(400)  # 400 x 32 draws of std 0.02 x scale
    assert 0.8 * 0.02 * scale < baseline.head.weight.std() < 1.2 * 0.02 * scale


VARIANTS = (
    [dict(soft_mask=s) for s in ("none", "ca", "cs", "ca+cs")]
    + [dict(soft_mask="ca", diff=d) for d in ("l1", "l2", "cosine", "classification")]
    + [dict(soft_mask="cs", scores=s) for s in ("both", "redundancy", "semantic")]
    + [dict(soft_mask="ca+cs", combine="mean"), dict(soft_mask="ca+cs", pool="weighted"),
       dict(soft_mask="ca+cs", pool="mean"), dict(soft_mask="ca+cs", ca_gate="dot"),
       dict(soft_mask="ca+cs", cs_norm="clip"), dict(soft_mask="ca+cs", exclude_fraction=0.2),
       dict(soft_mask="ca+cs", exclude_at=0), dict(soft_mask="ca+cs", exclude_at=1, diff="classification"),
       dict(soft_mask="none", exclude_at=1), dict(soft_mask="ca", exclude_at=0),
       dict(soft_mask="ca+cs", exclude_from="current"), dict(soft_mask="ca+cs", r=0),
       dict(soft_mask="ca+cs", r=6, top_k=9)]
)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(f"{k}={w}" for k, w in v.items()))
def test_every_variant_runs_forward_and_backward(variant):
    torch.manual_seed(0)
    model = micro(**variant).train()
    out = model(clip(), torch.tensor([0, 4]))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    if variant["soft_mask"] == "none":
        assert out.soft_mask is None
    else:
        assert out.soft_mask.shape == (2, 4, 8)
        assert out.soft_mask.min() >= 0 and out.soft_mask.max() <= 1
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == [], f"parameters without gradient: {missing}"
    model.eval()
    with torch.no_grad():
        assert model(clip()).shape == (2, 5)


def test_classification_gradient_reaches_soft_mask_modules_and_encoder():
    torch.manual_seed(0)
    model = micro(soft_mask="ca+cs").train()
    out = model(clip(), torch.tensor([1, 2]))
    out.loss_cls.backward()  # the classification branch alone
    for name in ("ca.se.fc1.weight", "ca.se.fc2.weight", "ca.q.weight", "ca.k.weight", "cs.phi.weight",
                 "encoder.blocks.0.attn.qkv.weight", "encoder.patch_embed.proj.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert model.decoder.pred.weight.grad is None


def test_excluded_tokens_have_zero_mask_and_leave_the_pool():
    model = micro(soft_mask="ca+cs", r=2, combine="mean", pool="mean").eval()
    x = clip()
    visible = tube_mask(2, 16, 0.5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = model.forward_features(x, visible)
        z, m_s, excluded = features.scored, features.soft_mask, features.excluded  # after the encoder: Z = tokens
        assert excluded.sum(dim=(1, 2)).tolist() == [0 + 2 + 4 + 6] * 2
        assert (m_s[excluded] == 0).all() and (m_s[~excluded] > 0).all()
        # Eq. 13: the mean of M_s * Z over the tokens that are not excluded
        expected = torch.stack([(z[b] * m_s[b, ..., None])[~excluded[b]].mean(0) for b in range(2)])
        torch.testing.assert_close(model.pool(z, m_s, excluded), expected)



@pytest.mark.parametrize("pool", ["mean", "weighted", "fc_norm"])
def test_exclude_at_depth_is_the_exclusion_after_the_full_encoder_bit_exactly(pool):
    """exclude_at = depth (or None): the whole encoder on every visible token, then soft mask, pool, head."""
    torch.manual_seed(0)
    model = micro(soft_mask="ca+cs", pool=pool, ca_gate="cosine").eval()
    same = micro(soft_mask="ca+cs", pool=pool, ca_gate="cosine", exclude_at=MICRO["depth"]).eval()
    same.load_state_dict(model.state_dict())
    x, visible = clip(), tube_mask(2, 16, 0.5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z = model.encoder(x, visible).view(2, 4, 8, -1)  # [B, T', N_v, C], every visible token, all blocks
        m_s, excluded = model.temporal_soft_mask(z)
        expected = model.head(model.fc_norm(model.pool(z, m_s, excluded)))
        assert torch.equal(model(x, visible=visible), expected)
        assert torch.equal(same(x, visible=visible), expected)


@pytest.mark.parametrize("exclude_at", [0, 1])
def test_excluded_tokens_skip_the_blocks_after_exclude_at(exclude_at):
    torch.manual_seed(0)
    model = micro(soft_mask="ca+cs", r=2, exclude_at=exclude_at, pool="fc_norm", ca_gate="cosine",
                  cs_norm="slot").train()
    encoder = model.encoder
    x, visible = clip(), tube_mask(2, 16, 0.5, generator=torch.Generator().manual_seed(1))
    decoder_inputs = []
    model.decoder.register_forward_pre_hook(lambda _, args: decoder_inputs.append(args[0]))
    with torch.no_grad():
        out = model(x, torch.tensor([0, 1]), visible=visible)
        early = encoder.embed(x, visible)
        for block in encoder.blocks[:exclude_at]:
            early = block(early)
        z = encoder.norm(early).view(2, 4, 8, -1)  # what the soft mask scores
        model.eval()  # BatchNorm: compare logits on the running statistics below
        m_s, excluded = model.temporal_soft_mask(z)
        assert excluded.sum(dim=(1, 2)).tolist() == [0 + 2 + 4 + 6] * 2
        pooled = []
        for b in range(2):
            kept = early[b][~excluded[b].flatten()][None]  # [1, L_kept, C]: the excluded tokens are gone
            for block in encoder.blocks[exclude_at:]:
                kept = block(kept)
            kept = encoder.norm(kept)[0]
            weights = m_s[b][~excluded[b]]
            pooled.append((kept * weights[:, None]).sum(0) / kept.shape[0])
            # the decoder sees every visible token: kept ones after the last block, excluded ones from block k
            seen = decoder_inputs[0][b]
            torch.testing.assert_close(seen[~excluded[b].flatten()], kept, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(seen[excluded[b].flatten()], z[b][excluded[b]], atol=1e-5, rtol=1e-5)
        expected = model.head(model.fc_norm(torch.stack(pooled)))
        torch.testing.assert_close(model(x, visible=visible), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.soft_mask, m_s)
        after = micro(soft_mask="ca+cs", r=2, pool="fc_norm", ca_gate="cosine", cs_norm="slot").eval()
        after.load_state_dict(model.state_dict())
        assert not torch.allclose(after(x, visible=visible), expected)


def test_fc_norm_pool_normalises_the_pooled_feature_whatever_the_gate_level():
    torch.manual_seed(0)
    model = micro(soft_mask="ca+cs", pool="fc_norm").eval()
    x, visible = clip(), tube_mask(2, 16, 0.5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = model.forward_features(x, visible)
        pooled = model.fc_norm(model.pool(features.scored, features.soft_mask, features.excluded))
        assert pooled.shape == (2, 32)
        torch.testing.assert_close(pooled.mean(-1), torch.zeros(2), atol=1e-5, rtol=0)
        torch.testing.assert_close(pooled.var(-1, unbiased=False), torch.ones(2), atol=1e-3, rtol=0)
        z, m_s, excluded = features.scored, features.soft_mask, features.excluded
        scaled = model.fc_norm(model.pool(z, 0.5 * m_s, excluded))  # the gate level does not reach the head
        torch.testing.assert_close(scaled, model.fc_norm(model.pool(z, m_s, excluded)), atol=1e-3, rtol=1e-3)
    assert set(model.fc_norm.state_dict()) == {"weight", "bias"}
    assert isinstance(micro(soft_mask="ca+cs", pool="mean").fc_norm, torch.nn.Identity)


@pytest.mark.slow  # 12 AdamW steps of the tiny model: ~10-35 s on 2 cores
@pytest.mark.parametrize("gate", ["cosine"])
def test_ca_gate_stays_away_from_0_and_1_while_training_the_tiny_config(gate):
    """Real AdamW steps (the demo's lr) of the tiny config on a small batch: M_ca stays inside (0.01, 0.99)."""
    cfg = load_config(["model=tiny", f"model.ca_gate={gate}"])
    torch.manual_seed(0)
    model = create_model_from_config(cfg.model, num_classes=7).train()
    gates = []
    model.ca.register_forward_hook(lambda _, args, out: gates.append(out.detach()))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 16, 64, 64, generator=generator)
    x[:4, :, 6:10] += 2.0  # a 'key moment' in half of the clips
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6, 0])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    for _ in range(12):
        loss = model(x, y).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert len(gates) == 12
    for m_ca in gates:
        assert 0.01 < m_ca.min() and m_ca.max() < 0.99
        assert 0.1 < m_ca.mean() < 0.95
    assert not torch.equal(gates[0], gates[-1])  # it did train


# --------------------------------------------------------------------------------------- registry and config

def test_create_model_from_config_for_every_params_variant():
    for variant in ("adatosk_dagger", "adatosk", "adatosk_ca", "adatosk_cs", "videomae"):
        cfg = load_config([f"model={variant}", "model.img_size=32", "model.num_frames=4"])
        model = create_model_from_config(cfg.model, num_classes=7)
        assert model.num_classes == 7 and model.num_slots == 2 and model.num_patches == 4
        expected_soft = {"adatosk_dagger": "ca+cs", "adatosk": "none", "adatosk_ca": "ca", "adatosk_cs": "cs"}
        if variant in expected_soft:
            assert model.soft_mask == expected_soft[variant]
            assert model.mask_ratio == cfg.model.mask_ratio and model.eval_mask_ratio == cfg.model.eval_mask_ratio
            assert model.pool_mode == "fc_norm"
            depth = len(model.encoder.blocks)
            assert model.exclude_at == (depth if cfg.model.exclude_at is None else cfg.model.exclude_at)
            assert model.ca is None or model.ca.gate == "cosine"
            assert model.cs is None or model.cs.norm == "slot"


def test_create_model_from_config_rejects_a_missing_pretrained_file(tmp_path):
    cfg = load_config(["model.img_size=32", "model.num_frames=4", f"model.pretrained={tmp_path / 'nope.pth'}"])
    with pytest.raises(AdatoskError, match="nope.pth: model.pretrained: no such checkpoint"):
        create_model_from_config(cfg.model, num_classes=7)


@pytest.mark.slow  # ViT-B: ~6 s on 2 busy cores
def test_vit_base_registered_and_one_clip_forward():
    model = timm.create_model("adatosk_vit_base_patch16_160", num_classes=7).eval()
    assert (model.num_slots, model.num_patches, model.soft_mask) == (8, 100, "ca+cs")
    assert model.decoder.embed.out_features == 512 and len(model.decoder.blocks) == 1
    assert model.head.fc1.out_features == 3072 and model.head.fc2.out_features == 7
    assert model.ca.se.fc1.out_features == 192 and model.ca.q.out_features == 192
    with torch.no_grad():
        assert model(torch.randn(1, 3, 16, 160, 160)).shape == (1, 7)
    baseline = timm.create_model("videomae_vit_base_patch16_160", num_classes=7)
    assert baseline.encoder.pos_embed.shape == (1, 800, 768)
    tiny = timm.create_model("adatosk_vit_tiny_patch16_64", num_classes=7)
    assert (tiny.embed_dim, len(tiny.encoder.blocks), tiny.encoder.blocks[0].attn.num_heads) == (192, 4, 3)
    assert (tiny.decoder.embed.out_features, tiny.decoder.blocks[0].attn.num_heads) == (128, 4)
    assert tiny.head.fc1.out_features == 768


def test_bf16_autocast_forward_and_backward():
    """The mixed-precision path (bf16 on CPU here, the same code as fp16/bf16 on GPU)."""
    for variant in (dict(soft_mask="ca+cs", diff="classification"), dict(soft_mask="none"),
                    dict(soft_mask="ca+cs", exclude_at=0, pool="fc_norm", ca_gate="cosine")):
        model = micro(**variant).train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(clip(), torch.tensor([0, 1]))
        assert out.logits.dtype == torch.bfloat16 and out.loss.dtype == torch.float32
        assert torch.isfinite(out.loss)
        out.loss.backward()
        assert model.encoder.patch_embed.proj.weight.grad is not None


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_inference_path_traces_for_flop_counting():
    """fvcore counts FLOPs from a jit trace: every op on the token path must be traceable."""
    from fvcore.nn import FlopCountAnalysis

    class Inference(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x, visible):
            return self.model(x, visible=visible)

    model = micro(soft_mask="ca+cs").eval()
    visible = tube_mask(1, 16, 0.5, generator=torch.Generator().manual_seed(0))
    analysis = FlopCountAnalysis(Inference(model), (clip(batch=1), visible))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    assert analysis.total() > 0
