"""`adatosk predict`: sliding windows over a whole video, the test loader's preprocessing, seeded masks, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import (
    CLASSES,
    IMG_SIZE,
    NUM_FRAMES,
    damaged_video,
    looped_face_video,
    peak_numpy_bytes,
    spliced_face_video,
    train_tiny_checkpoint,
)

from adatosk import cli
from adatosk.data.cache import pack_clip
from adatosk.data.dataset import ClipDataset
from adatosk.models.checkpoint import load_model, save_model
from adatosk.predict import classify_windows, plan_windows, window_clip

DATA = Path(__file__).parent / "data"
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return train_tiny_checkpoint(tmp_path_factory.mktemp("checkpoint"))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["predict", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("n_frames", [1, 5, 31, 32, 33, 72, 203])
@pytest.mark.parametrize("hop", [None, 4, 13, 32])
def test_windows_cover_the_whole_video(n_frames, hop):
    stride = 4
    windows = plan_windows(n_frames, num_frames=NUM_FRAMES, stride=stride, hop=hop)
    assert windows[0].start_frame == 0 and windows[-1].end_frame == n_frames - 1
    covered = np.zeros(n_frames, bool)
    for previous, window in zip([None, *windows], windows):
        frames = window.frames
        assert frames.shape == (NUM_FRAMES,) and frames.dtype == np.int64
        assert window.start_frame == frames[0] and frames[-1] <= window.end_frame <= n_frames - 1
        real = frames[frames < n_frames - 1]  # the dataset's stride until the last frame pads the window
        assert np.all(np.diff(real) == stride) and np.all(frames[len(real):] == n_frames - 1)
        assert window.end_frame - window.start_frame < NUM_FRAMES * stride
        if previous is not None:
            assert 0 < window.start_frame - previous.start_frame <= (hop or NUM_FRAMES * stride // 2) // stride * stride
        covered[window.start_frame:window.end_frame + 1] = True
    assert covered.all()
    if n_frames <= NUM_FRAMES * stride:
        assert len(windows) == 1
    assert [w.index for w in windows] == list(range(len(windows)))


def test_short_video_is_padded_with_its_last_frame():
    (window,) = plan_windows(10, num_frames=NUM_FRAMES, stride=4)
    assert window.frames.tolist() == [0, 4, 8, 9, 9, 9, 9, 9]
    assert (window.start_frame, window.end_frame) == (0, 9)


@pytest.mark.parametrize("hop", [3, 33])
def test_hop_outside_stride_to_window_is_refused(hop):
    with pytest.raises(ValueError, match="hop"):
        plan_windows(100, num_frames=NUM_FRAMES, stride=4, hop=hop)


def test_windows_are_preprocessed_exactly_as_the_test_loader(tmp_path):
    """The windows are the test loader's temporal views: same frames, same resize, same normalisation."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(50, IMG_SIZE, IMG_SIZE, 3), dtype=np.uint8)
    pack_clip(frames, tmp_path / "cache" / "c1.npy")
    windows = plan_windows(len(frames), num_frames=NUM_FRAMES, stride=4, hop=8)
    manifest = pd.DataFrame({"clip_id": ["c1"], "path": ["c1"], "label": [0], "fold": [1], "split": ["test"]})
    data_cfg = {"num_classes": 7, "root": str(tmp_path), "cache_dir": str(tmp_path / "cache"),
                "num_frames": NUM_FRAMES, "img_size": IMG_SIZE, "sampling": {"stride": 4}}
    dataset = ClipDataset(manifest, data_cfg, fold=1, split="test", train=False, temporal_views=len(windows))
    views = dataset[0]["video"]  # [V, 3, T, S, S]
    assert len(windows) > 2 and views.shape == (len(windows), 3, NUM_FRAMES, IMG_SIZE, IMG_SIZE)
    for window, view in zip(windows, views):
        assert torch.equal(window_clip(frames, window), view)


@pytest.mark.parametrize("variant", ["adatosk_dagger", "videomae"])
def test_window_probabilities_are_seeded_and_normalised(tmp_path, variant, checkpoint):
    directory = checkpoint if variant == "adatosk_dagger" else train_tiny_checkpoint(tmp_path, variant, steps=1)
    model, _ = load_model(directory)
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(40, IMG_SIZE, IMG_SIZE, 3), dtype=np.uint8)
    windows = plan_windows(len(frames), num_frames=NUM_FRAMES, stride=4)
    probs = classify_windows(model, frames, windows, mask_views=2, mask_seed=0, batch_size=1)
    assert probs.shape == (len(windows), len(CLASSES))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # the same masks again (batching does not matter); another mask seed changes an AdaTosk model's outputs only
    np.testing.assert_allclose(classify_windows(model, frames, windows, batch_size=8), probs, atol=1e-5)
    other = classify_windows(model, frames, windows, mask_seed=1)
    assert np.allclose(other, probs, atol=1e-5) == (model.eval_mask_ratio == 0)


def test_predict_json_on_a_real_face(capsys, checkpoint):
    code, out, err = run(capsys, str(DATA / "single_face.mp4"), "--checkpoint", str(checkpoint), "--json",
                         "--device", "cpu")
    assert code == 0, err
    result = json.loads(out)
    assert result["class_names"] == CLASSES and result["num_frames"] == NUM_FRAMES
    (video,) = result["videos"]
    assert video["n_frames"] == 72 and video["fps"] == pytest.approx(30.0) and video["detected_fraction"] > 0.5
    windows = video["windows"]
    assert windows[0]["start_frame"] == 0 and windows[-1]["end_frame"] == 71
    assert windows[0]["start_time"] == 0.0 and windows[-1]["end_time"] == pytest.approx(2.4)
    window_probs = np.array([[w["probs"][c] for c in CLASSES] for w in windows])
    np.testing.assert_allclose(window_probs.sum(axis=1), 1.0, atol=1e-5)
    assert [w["pred"] for w in windows] == [CLASSES[k] for k in window_probs.argmax(axis=1)]
    video_probs = np.array([video["probs"][c] for c in CLASSES])
    np.testing.assert_allclose(video_probs, window_probs.mean(axis=0), atol=1e-5)
    assert video["pred"] == CLASSES[int(video_probs.argmax())]


def test_predict_samples_with_the_stride_the_checkpoint_was_trained_with(capsys, checkpoint, tmp_path):
    model, meta = load_model(checkpoint)
    strided = save_model(tmp_path / "stride2", model, meta["model_cfg"], len(CLASSES), CLASSES, extra={"stride": 2})
    video = str(DATA / "single_face.mp4")
    for path, argv, stride in ((checkpoint, (), 4), (strided, (), 2), (strided, ("--stride-frames", "3"), 3)):
        code, out, err = run(capsys, video, "--checkpoint", str(path), "--json", "--device", "cpu", *argv)
        assert code == 0, err
        result = json.loads(out)
        assert result["stride"] == stride
        first = result["videos"][0]["windows"][0]
        assert first["end_frame"] - first["start_frame"] == NUM_FRAMES * stride - 1  # one window spans T x stride


def test_predict_table_continues_past_an_unreadable_video(capsys, checkpoint, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    code, out, err = run(capsys, str(broken), str(DATA / "single_face.mp4"), "--checkpoint", str(checkpoint))
    assert code == 4
    assert "broken.mp4" in err and "cannot read" in err and "Traceback" not in err
    lines = out.splitlines()
    assert "single_face.mp4: 72 frames" in lines[0] and all(name in lines[1] for name in CLASSES)
    rows = [line.split() for line in lines[2:]]
    assert rows[0][:2] == ["0", "0-31"] and rows[-2][1].endswith("-71") and rows[-1][:2] == ["video", "0-71"]
    for row in rows:
        assert sum(float(p) for p in row[-1 - len(CLASSES):-1]) == pytest.approx(1.0, abs=5e-3)


def test_damaged_video_is_unreadable_not_shortened(capsys, checkpoint, tmp_path):
    video = damaged_video(tmp_path / "damaged.mp4")
    code, out, err = run(capsys, str(video), "--checkpoint", str(checkpoint))
    assert code == 4 and out == "" and "Traceback" not in err
    assert f"{video}: cannot read the video" in err and "the video is damaged" in err


def test_no_face_exits_with_a_message(capsys, checkpoint):
    code, out, err = run(capsys, str(DATA / "no_face.mp4"), "--checkpoint", str(checkpoint))
    assert code == 3 and out == ""
    assert "no_face.mp4" in err and "no face" in err and "Traceback" not in err


def test_missing_checkpoint_is_named(capsys, tmp_path):
    code, _, err = run(capsys, str(DATA / "single_face.mp4"), "--checkpoint", str(tmp_path / "nowhere"))
    assert code == 2 and str(tmp_path / "nowhere") in err and "Traceback" not in err


def test_windows_without_a_face_are_listed_and_the_others_classified(capsys, checkpoint, tmp_path):
    """A real face in 42% of the frames (36 frames, 100 blank ones, 36 frames): the windows with a face are
    classified, the blank ones listed as such, and the video's probabilities come from the windows with a face."""
    video_path = spliced_face_video(tmp_path / "spliced.mp4")
    code, out, err = run(capsys, str(video_path), "--checkpoint", str(checkpoint), "--json", "--device", "cpu")
    assert code == 0, err
    (video,) = json.loads(out)["videos"]
    assert video["n_frames"] == 172 and video["detected_fraction"] == pytest.approx(72 / 172, abs=0.03)
    windows = video["windows"]
    blank = [w for w in windows if w["start_frame"] >= 36 and w["end_frame"] < 136]
    assert blank and not any(w["face"] or w["probs"] or w["pred"] for w in blank)
    assert all(w["face_fraction"] == 0 for w in blank)
    with_face = [w for w in windows if w["face"]]
    assert windows[0] in with_face and windows[-1] in with_face and video["face_windows"] == len(with_face)
    assert all(w["face_fraction"] >= 0.5 for w in with_face)
    assert all(w["face_fraction"] < 0.5 and w["probs"] is None for w in windows if not w["face"])
    window_probs = np.array([[w["probs"][c] for c in CLASSES] for w in with_face])
    np.testing.assert_allclose([video["probs"][c] for c in CLASSES], window_probs.mean(axis=0), atol=1e-5)
    code, out, _ = run(capsys, str(video_path), "--checkpoint", str(checkpoint), "--device", "cpu")
    rows = out.splitlines()[2:]
    assert code == 0 and f"{len(with_face)} with a face" in out.splitlines()[0]
    assert sum(row.endswith("no face") for row in rows) == len(windows) - len(with_face) >= len(blank)


@pytest.mark.slow  # a 20-s video: ~10 s on 2 cores
def test_predict_memory_is_bounded_by_the_windows_not_the_video(tmp_path, checkpoint):
    """A 20-s video (600 frames of 320x180: 100 MB decoded) is decoded as a stream, twice: numpy's peak stays at a
    few frames' worth (the crops of one batch of windows are small), not the video's."""
    from adatosk.predict import predict_video

    video = looped_face_video(tmp_path / "long.mp4", seconds=20)
    model, meta = load_model(checkpoint)
    result, peak = peak_numpy_bytes(lambda: predict_video(model, meta, video, stride=4))
    frame_bytes = 320 * 180 * 3
    assert result["n_frames"] == 600 and result["face_windows"] == len(result["windows"]) > 30
    assert peak < 40 * frame_bytes  # all frames: 600 x
