"""`adatosk explain`: the soft-mask intermediates of one clip and the Fig. 3 grid drawn from them."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import CLASSES, IMG_SIZE, NUM_FRAMES, spliced_face_video, tiny_model_cfg, train_tiny_checkpoint
from PIL import Image

from adatosk import cli
from adatosk.config import load_config
from adatosk.data.cache import pack_clip
from adatosk.data.manifest import write_manifest
from adatosk.evaluate import view_masks
from adatosk.explain import explain_clip, safe_stem, trace_soft_mask, write_explanation
from adatosk.explain_figure import ACTIVATED, ROWS, FigureLayout, unnormalize
from adatosk.models import create_model_from_config
from adatosk.models.checkpoint import load_model, save_model

DATA = Path(__file__).parent / "data"
# the tiny model: 64x64 frames = a 4x4 patch grid, drawn 24 px per patch in cells of 96 px; 8 frames = 4 slots
CELL, GRID, SLOTS = 96, 4, 4
# layout: margins 8 + labels 124 | 8 cells, 1 px between the frames of a slot, 6 px between slots
WIDTH = 8 + 124 + NUM_FRAMES * CELL + (NUM_FRAMES - SLOTS) * 1 + (SLOTS - 1) * 6 + 8
# margins 8 + header 18 | 5 rows, 4 px apart | footer 48 (3 lines) + 8
HEIGHT = 8 + 18 + len(ROWS) * CELL + (len(ROWS) - 1) * 4 + 48 + 8
MASK_ROWS = {"M_cs": 2, "M_ca": 3, "M_s": 4}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return train_tiny_checkpoint(tmp_path_factory.mktemp("checkpoint"))


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_model(checkpoint)[0]


def smooth_clip(seed: int = 0) -> torch.Tensor:
    """An ImageNet-normalised clip [3, T, S, S] of smooth random images that change over time."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(3, NUM_FRAMES, 4, 4, generator=generator)
    frames = torch.nn.functional.interpolate(coarse, size=(IMG_SIZE, IMG_SIZE), mode="bilinear")
    return (frames - 0.45) / 0.25


def cell(image: np.ndarray, layout, row: int, frame: int) -> np.ndarray:
    x0, y0, x1, y1 = layout.cell_box(row, frame)
    return image[y0:y1, x0:x1]


def patch(cell_pixels: np.ndarray, position: int, inset: int = 4) -> np.ndarray:
    """The pixels of patch ``position`` (row-major) in a cell, without a border of ``inset`` px."""
    size = CELL // GRID
    r, c = divmod(position, GRID)
    return cell_pixels[r * size + inset:(r + 1) * size - inset, c * size + inset:(c + 1) * size - inset]


def test_trace_is_the_forward_pass_that_classifies(model):
    clip = smooth_clip()
    visible = view_masks(model, torch.tensor([3]), 0, 0, torch.device("cpu"))
    trace = trace_soft_mask(model, clip, visible)
    with torch.no_grad():
        probs = model(clip[None], visible=visible).softmax(dim=-1)[0].numpy()
    np.testing.assert_allclose(trace.probs, probs, atol=1e-6)
    n_visible = int(visible.sum())
    assert trace.positions.tolist() == visible[0].nonzero()[:, 0].tolist()
    for values in (trace.semantic, trace.m_ca, trace.m_cs, trace.m_s):
        assert values.shape == (SLOTS, n_visible)
    # product combination (Eq. 12), excluded tokens zero; the exclusion set grows by r = 2, capped at N_v - 1
    np.testing.assert_allclose(trace.m_s, np.where(trace.excluded, 0.0, trace.m_ca * trace.m_cs), atol=1e-6)
    assert trace.excluded.sum(axis=1).tolist() == [0, 2, 4, 4]
    assert np.all(trace.excluded[1:] >= trace.excluded[:-1])
    # the K = min(top_k, T' - 1) slots with the largest frame difference, largest first
    order = np.argsort(-trace.frame_difference, kind="stable")[:3] + 1
    assert trace.activated.tolist() == order.tolist()


def test_figure_puts_each_token_on_its_patches(model):
    clip = smooth_clip(1)
    visible = view_masks(model, torch.tensor([0]), 0, 0, torch.device("cpu"))
    explanation = explain_clip(model, clip, visible=visible, class_names=CLASSES)
    image, layout, trace = explanation.image, explanation.layout, explanation.trace
    assert image.shape == (HEIGHT, WIDTH, 3) and layout.size == (WIDTH, HEIGHT) and layout.cell == CELL
    frames = unnormalize(clip)
    hidden = sorted(set(range(GRID * GRID)) - set(trace.positions.tolist()))
    activated = set(trace.activated.tolist())
    for f in range(NUM_FRAMES):
        slot = f // 2
        resized = cv2.resize(frames[f], (CELL, CELL), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(cell(image, layout, 0, f), resized)
        for name, row in MASK_ROWS.items():
            pixels = cell(image, layout, row, f)
            for position in hidden:  # grey: R = G = B, not black
                grey = patch(pixels, position).astype(int)
                assert np.all(grey[..., 0] == grey[..., 1]) and np.all(grey[..., 1] == grey[..., 2])
                assert grey.min() > 60
            for k, position in enumerate(trace.positions):
                values = patch(pixels, position)
                if name != "M_ca" and trace.excluded[slot, k]:
                    assert np.all(values == 0), (name, f, position)
                else:
                    assert values.max() > 0 and np.any(values[..., 0] != values[..., 2]), (name, f, position)
        x0, y0, _, _ = layout.cell_box(MASK_ROWS["M_ca"], f)
        on_border = tuple(image[y0 + 1, x0 + CELL // 2]) == ACTIVATED
        assert on_border == (slot in activated), (f, slot, activated)
    # the soft-mask panels are not constant
    for row in MASK_ROWS.values():
        panel = np.concatenate([cell(image, layout, row, f) for f in range(NUM_FRAMES)], axis=1)
        assert panel.astype(float).var() > 0


def test_variant_without_soft_mask_draws_frames_and_activation_only():
    cfg = tiny_model_cfg("adatosk")
    torch.manual_seed(0)
    model = create_model_from_config(cfg, len(CLASSES)).eval()
    explanation = explain_clip(model, smooth_clip(), class_names=CLASSES)
    assert explanation.summary["activated_slots"] == [] and explanation.summary["excluded_per_slot"] == [0] * SLOTS
    assert explanation.trace.m_s is None and explanation.summary["tokens"]["M_cs"] is None
    for row in MASK_ROWS.values():
        pixels = np.concatenate([cell(explanation.image, explanation.layout, row, f) for f in range(NUM_FRAMES)])
        assert np.all(pixels[..., 0] == pixels[..., 1])  # greyed out: not in this variant
    activation = cell(explanation.image, explanation.layout, 1, 0).astype(int)
    assert np.any(activation[..., 0] != activation[..., 2])


def test_explain_writes_png_and_json_for_a_real_face(capsys, checkpoint, tmp_path):
    code = cli.main(["explain", str(DATA / "single_face.mp4"), "--checkpoint", str(checkpoint), "--out",
                     str(tmp_path), "--window", "1", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0, err
    png, summary_path = tmp_path / "single_face_w1.png", tmp_path / "single_face_w1.json"
    assert str(png) in out
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape == (HEIGHT, WIDTH, 3)
    summary = json.loads(summary_path.read_text())
    model = load_model(checkpoint)[0]
    layout = FigureLayout.create(NUM_FRAMES, 2, GRID)
    for row in MASK_ROWS.values():
        panel = np.concatenate([cell(image, layout, row, f) for f in range(NUM_FRAMES)], axis=1)
        assert panel.astype(float).var() > 0
    k = min(model.ca.top_k, SLOTS - 1)
    assert len(summary["activated_slots"]) == k == len(set(summary["activated_slots"]))
    scores = summary["ca_scores"]
    assert scores[0] is None and len(scores) == SLOTS
    assert sorted(summary["activated_slots"]) == sorted(np.argsort(scores[1:])[::-1][:k] + 1)
    assert summary["activated_frames"] == [[2 * a, 2 * a + 1] for a in summary["activated_slots"]]
    assert summary["excluded_per_slot"] == [0, 2, 4, 4]
    assert summary["predicted_class"] in CLASSES and sum(summary["probabilities"].values()) == pytest.approx(1, 1e-5)
    assert summary["window"] == 1 and summary["frames"][0] == summary["start_frame"] == 12
    assert summary["image"] == png.name and summary["image_size"] == [WIDTH, HEIGHT]


def test_manifest_clip_is_the_evaluated_view(capsys, checkpoint, tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(40, IMG_SIZE, IMG_SIZE, 3), dtype=np.uint8)
    manifest = pd.DataFrame({"clip_id": ["a", "b"], "path": ["a", "b"], "n_frames": [40, 40], "label": [1, 2],
                             "label_name": ["sad", "neutral"], "fold": [1, 1], "split": ["test", "test"]})
    write_manifest(manifest, tmp_path / "manifests" / "manifest.csv")
    for clip_id in ("a", "b"):
        pack_clip(frames, tmp_path / "cache" / f"{clip_id}.npy")
    overrides = [f"model.img_size={IMG_SIZE}", f"model.num_frames={NUM_FRAMES}", f"data.root={tmp_path}",
                 f"data.manifest_dir={tmp_path / 'manifests'}", f"data.cache_dir={tmp_path / 'cache'}"]
    code = cli.main(["explain", "--manifest-clip", "b", "--checkpoint", str(checkpoint), "--out",
                     str(tmp_path / "out"), "--window", "1", *overrides])
    _, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "b_v1.json").read_text())
    assert summary["source"] == "b" and summary["label_name"] == "neutral" and summary["view"] == 1
    # the same view under the mask evaluate draws for clip index 1, view 1 * mask_views
    from adatosk.evaluate import load_test_split

    cfg = load_config(overrides)
    model = load_model(checkpoint)[0]
    clip = load_test_split(cfg)[1]["video"][1]
    visible = view_masks(model, torch.tensor([1]), 1 * cfg.evaluate.mask_views, cfg.evaluate.mask_seed,
                         torch.device("cpu"))
    expected = explain_clip(model, clip, visible=visible, class_names=CLASSES).summary
    assert summary["visible_positions"] == expected["visible_positions"]
    assert summary["probabilities"] == expected["probabilities"]
    code = cli.main(["explain", "--per-class", "1", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "all"),
                     *overrides])
    assert code == 0 and sorted(p.name for p in (tmp_path / "all").iterdir()) == ["a_v0.json", "a_v0.png",
                                                                                  "b_v0.json", "b_v0.png"]
    code = cli.main(["explain", "--manifest-clip", "zzz", "--checkpoint", str(checkpoint), "--out",
                     str(tmp_path / "out"), *overrides])
    assert code == 2 and "zzz" in capsys.readouterr().err


def test_videomae_checkpoint_is_refused(capsys, tmp_path):
    cfg = tiny_model_cfg("videomae")
    directory = save_model(tmp_path, create_model_from_config(cfg, len(CLASSES)), cfg, len(CLASSES), CLASSES)
    code = cli.main(["explain", str(DATA / "single_face.mp4"), "--checkpoint", str(directory), "--out",
                     str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "no soft mask" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_explain_draws_predicts_window_with_predicts_face_and_probabilities(capsys, checkpoint, tmp_path):
    """A face in 42% of the frames: explain draws a window predict classifies (it refused the whole video), with
    predict's probabilities (averaged over the two mask views), and refuses a window predict leaves without face."""
    video = spliced_face_video(tmp_path / "spliced.mp4")
    assert cli.main(["predict", str(video), "--checkpoint", str(checkpoint), "--json", "--device", "cpu"]) == 0
    windows = json.loads(capsys.readouterr().out)["videos"][0]["windows"]
    with_face = [w for w in windows if w["face"]]
    blank = next(w for w in windows if not w["face"])
    for window in (with_face[0], with_face[-1]):
        code = cli.main(["explain", str(video), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"),
                         "--window", str(window["index"]), "--device", "cpu"])
        assert code == 0, capsys.readouterr().err
        summary = json.loads((tmp_path / "out" / f"spliced_w{window['index']}.json").read_text())
        assert summary["frames"] == window["frames"] and summary["face_fraction"] == window["face_fraction"]
        assert summary["mask_views"] == 2
        assert summary["probabilities"] == pytest.approx(window["probs"], abs=1e-5)
        assert summary["predicted_class"] == window["pred"]
    code = cli.main(["explain", str(video), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"),
                     "--window", str(blank["index"]), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 3 and f"window {blank['index']} has the face in {blank['face_fraction']:.0%} of its frames " \
        "(at least 50% needed" in err


@pytest.mark.parametrize("name, stem", [("../../../x", "_.._.._x"), ("/etc/passwd", "_etc_passwd"), ("..", "clip"),
                                        ("Action_Sad_0010", "Action_Sad_0010"), (".hidden v2", "hidden_v2")])
def test_output_file_names_cannot_leave_out(model, tmp_path, name, stem):
    """A clip id from data is a file name inside --out, whatever it holds."""
    out = tmp_path / "deep" / "out"
    explanation = explain_clip(model, smooth_clip(), class_names=CLASSES)
    png = write_explanation(explanation, out, name, {})
    assert safe_stem(name) == stem and png == out / f"{stem}.png"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == \
        [f"deep/out/{stem}.json", f"deep/out/{stem}.png"]
