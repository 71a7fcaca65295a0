"""Face detection, tracking and cropping on real clips; the resumable `adatosk face-crop` stage and its cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from adatosk.data.cache import open_clip
from adatosk.data.facecrop import find_clips, run
from adatosk.data.faces import STAGE_KEYS, CropParams, HaarDetector, make_detector
from adatosk.data.tracking import NoFaceError, crop_face_track, crop_square, fill_missing, main_track, smooth_boxes
from adatosk.data.transforms import resize_clip
from adatosk.data.video import read_frames_dir, read_video, write_video

DATA = Path(__file__).parent / "data"
PARAMS = Path(__file__).parents[1] / "params" / "data"


@pytest.fixture(scope="module")
def single_face() -> np.ndarray:
    return read_video(DATA / "single_face.mp4")


@pytest.fixture(scope="module")
def detections(single_face) -> list[np.ndarray]:
    """Haar boxes of every frame of single_face.mp4, detected once and replayed by the tests."""
    haar = HaarDetector(CropParams())
    return [haar(frame) for frame in single_face]


def _replay(frames, detections, skip=range(0), calls=None):
    """A detector that returns the stored boxes of the frame of ``frames`` it is given (none for ``skip``); ``calls``
    records (frame, searched near the previous boxes)."""
    base = frames.__array_interface__["data"][0]

    def detect(frame, near=None):
        t = (frame.__array_interface__["data"][0] - base) // frame.nbytes
        if calls is not None:
            calls.append((t, near is not None))
        return np.zeros((0, 4)) if t in skip else detections[t]

    return detect


@pytest.fixture(scope="module")
def track(single_face, detections):
    return crop_face_track(single_face, CropParams(), _replay(single_face, detections))


# --- the face track of a real clip ----------------------------------------------------------------------------------

def test_single_face_has_a_box_in_every_frame_and_stable_crops(track, single_face):
    assert track.crops.shape == (72, 224, 224, 3) and track.crops.dtype == np.uint8
    assert track.detected.all() and track.detected_fraction == 1.0
    side = track.boxes[:, 2]
    assert np.all(track.boxes[:, 2] == track.boxes[:, 3])
    # the face: centre in the middle third of the 640x360 frame, crop side about half the frame height
    assert np.all((track.boxes[:, 0] > 213) & (track.boxes[:, 0] < 427)) and np.all((side > 150) & (side < 300))
    jitter = np.abs(np.diff(track.boxes, axis=0))  # [T-1, 4] frame-to-frame motion of centre and size
    assert jitter.max() < 0.02 * side.mean()
    # what is cropped is a face: the detector finds one face filling the centre of every 8th crop
    detector = HaarDetector(CropParams())
    for crop in track.crops[::8]:
        faces = detector(crop)
        assert len(faces) == 1
        x, y, w, h = faces[0]
        assert abs(x + w / 2 - 112) < 20 and abs(y + h / 2 - 112) < 25 and 130 < w < 200


def test_frames_without_detection_take_the_neighbours_box(single_face, detections, track):
    gappy = crop_face_track(single_face, CropParams(), _replay(single_face, detections, skip=range(20, 30)))
    assert gappy.detected.sum() == 62 and not gappy.detected[20:30].any()
    assert gappy.detected_fraction == pytest.approx(62 / 72)
    assert np.abs(gappy.boxes - track.boxes).max() < 0.05 * track.boxes[:, 2].mean()


def test_no_face_clip_raises_no_face_error():
    frames = read_video(DATA / "no_face.mp4")
    with pytest.raises(NoFaceError) as info:
        crop_face_track(frames)
    assert info.value.detected_fraction < 0.5 and "of the 95 frames" in str(info.value)


def test_detect_every_searches_fully_every_kth_frame_and_tracks_between(single_face, detections):
    calls: list[tuple[int, bool]] = []
    skip = range(10, 14)  # the face is lost in frames 10-13
    sparse = crop_face_track(single_face, CropParams(detect_every=5), _replay(single_face, detections, skip, calls))
    assert [t for t, near in calls if not near] == list(range(0, 72, 5))
    # lost in 10: no tracking in 11-14; the full search in 15 finds it again and tracks it back to 14 and 13 (lost)
    assert calls[calls.index((15, False)):][:4] == [(15, False), (14, True), (13, True), (16, True)]
    assert sorted(t for t, near in calls if near) == sorted([t for t in range(72) if t % 5 and t not in skip] + [13])
    assert sparse.detected.tolist() == [t not in skip for t in range(72)]  # as a full search in every frame finds


def test_tracking_between_full_searches_follows_the_real_face(single_face, track):
    """The real detector: a full search every 10th frame and tracking between find the face in every frame, and the
    crops match those of a full search in every frame."""
    haar = HaarDetector(CropParams())
    full_searches = []

    def counting(frame, near=None):
        full_searches.append(near is None)
        return haar(frame, near)

    tracked = crop_face_track(single_face, CropParams(detect_every=10), counting)
    assert sum(full_searches) == 8 and len(full_searches) == 72
    assert tracked.detected.all() and tracked.detected_fraction == 1.0
    assert np.abs(tracked.boxes - track.boxes).max() < 0.05 * track.boxes[:, 2].mean()


def test_tracking_finds_a_face_that_comes_back_from_its_first_frame(single_face):
    """The real clip with 100 blank frames spliced in: tracking between full searches every 10th frame finds the face
    in exactly the frames a full search in every frame finds it in."""
    face = single_face[:36, ::2, ::2]
    frames = np.concatenate([face, np.zeros((100, *face.shape[1:]), np.uint8), face[:33]])  # back at frame 136
    every_frame = crop_face_track(frames, CropParams(detect_every=1, max_missing=1.0))
    tracked = crop_face_track(frames, CropParams(detect_every=10, max_missing=1.0))
    assert every_frame.detected.tolist() == [t < 36 or t >= 136 for t in range(169)]
    assert tracked.detected.tolist() == every_frame.detected.tolist()


def test_tracking_searches_only_near_the_previous_box_at_its_size(single_face, detections):
    haar = HaarDetector(CropParams())
    frame, (face,) = single_face[30], detections[30]  # face: x, y, w, h in frame pixels
    (found,) = haar(frame, near=face[None])
    assert np.abs(found - face).max() < 0.1 * face[2]
    far = face + [320, 0, 0, 0] if face[0] < 320 else face - [320, 0, 0, 0]  # a box where there is no face
    assert len(haar(frame, near=far[None])) == 0
    assert len(haar(frame, near=(face * [1, 1, 0.4, 0.4])[None])) == 0  # a box far smaller than the face


# --- tracking pieces on synthetic boxes -----------------------------------------------------------------------------

def test_main_track_prefers_the_big_long_lived_face():
    face = np.array([[100.0, 100.0, 50.0, 50.0]])
    small = np.array([[300.0, 50.0, 20.0, 20.0]])
    flash = np.array([[200.0, 200.0, 150.0, 150.0]])  # a large false detection in one frame
    detections = [np.concatenate([face + [t, 0, 0, 0], small]) for t in range(10)]
    detections[3] = np.concatenate([detections[3], flash])
    detections[5] = small  # the face is missed in frame 5
    detections[7] = None   # frame 7 was not probed
    track = main_track(detections, iou_threshold=0.3, max_gap=3)
    assert np.isnan(track[[5, 7], 0]).all()
    expected = [t for t in range(10) if t not in (5, 7)]
    assert np.allclose(track[expected, 0], 100 + np.array(expected)) and np.allclose(track[expected, 2], 50)


def test_main_track_keeps_a_face_that_leaves_and_comes_back():
    face = np.array([[100.0, 100.0, 50.0, 50.0]])
    detections: list = [face] * 10 + [np.zeros((0, 4))] * 20 + [face + [30, 0, 0, 0]] * 6 + [np.zeros((0, 4))] * 4
    false = np.array([[300.0, 300.0, 40.0, 40.0]])
    detections[31:36] = [np.concatenate([face + [30, 0, 0, 0], false])] * 5  # a false face beside the face: not joined
    detections[38] = false  # a brief false face when none is there: too short to join
    track = main_track(detections, iou_threshold=0.3, max_gap=3)  # a 20-frame gap: two tracks of the face
    found = ~np.isnan(track[:, 0])
    assert found.tolist() == [True] * 10 + [False] * 20 + [True] * 6 + [False] * 4
    assert np.allclose(track[found][:, 0], [100] * 10 + [130] * 6)


def test_fill_missing_interpolates_and_holds_the_ends():
    boxes = np.full((6, 4), np.nan)
    boxes[1] = [10, 20, 30, 30]
    boxes[4] = [40, 20, 60, 60]
    filled = fill_missing(boxes)
    assert filled[:, 0].tolist() == [10, 10, 20, 30, 40, 40] and filled[2, 2] == 40


def test_smoothing_removes_an_outlier_and_keeps_a_constant():
    boxes = np.tile([100.0, 100.0, 50.0, 50.0], (15, 1))
    assert np.allclose(smooth_boxes(boxes, 7), boxes)
    boxes[7] = [160.0, 40.0, 90.0, 90.0]  # one wild detection
    assert np.allclose(smooth_boxes(boxes, 7), 100.0 * (boxes[0] / 100.0))


def test_crop_square_pads_outside_the_frame_with_black():
    frame = np.full((40, 60, 3), 200, np.uint8)
    crop = crop_square(frame, np.array([5.0, 20.0, 20.0, 20.0]), 20)  # left half of the box is outside
    assert crop.shape == (20, 20, 3)
    assert crop[:, :5].max() == 0 and crop[:, 5:].min() == 200


def test_mtcnn_detector_adapts_corner_boxes(monkeypatch):
    class FakeMTCNN:
        def __init__(self, keep_all, device):
            self.min_face_size = 20

        def detect(self, image):
            return np.array([[10.0, 20.0, 50.0, 80.0]]), np.array([0.99])

    monkeypatch.setitem(sys.modules, "facenet_pytorch", types.SimpleNamespace(MTCNN=FakeMTCNN))
    detector = make_detector(CropParams(detector="mtcnn", detect_size=320))
    boxes = detector(np.zeros((360, 640, 3), np.uint8))  # detected at half size: boxes scale back by 2
    assert np.allclose(boxes, [[20, 40, 80, 120]])
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)
    with pytest.raises(ImportError, match="facenet-pytorch==2.5.3"):
        make_detector(CropParams(detector="mtcnn"))


@pytest.mark.parametrize("name", ["demo", "dfew", "ferv39k", "mafw"])
def test_face_crop_params_match_the_crop_fields(name):
    face_crop = OmegaConf.to_container(OmegaConf.load(PARAMS / f"{name}.yaml").face_crop)
    assert set(face_crop) == set(CropParams.__dataclass_fields__) | STAGE_KEYS
    assert CropParams.from_config(face_crop) == CropParams()
    with pytest.raises(KeyError, match="unknown data.face_crop keys"):
        CropParams.from_config({**face_crop, "margn": 0.1})


# --- the stage ------------------------------------------------------------------------------------------------------

def _raw_cfg(tmp_path: Path, **face_crop) -> dict:
    return {"name": "clips", "layout": "dfew", "root": str(tmp_path / "root"), "crops_dir": str(tmp_path / "crops"),
            "cache_dir": str(tmp_path / "cache"), "img_size": 64,
            "face_crop": {"precropped": False, "videos_dir": "videos", **face_crop}}


@pytest.mark.slow  # worker processes import torch: ~10 s on 2 cores
def test_stage_crops_raw_videos_excludes_faceless_clips_and_resumes(tmp_path, single_face):
    videos = tmp_path / "root" / "videos"
    videos.mkdir(parents=True)
    write_video(videos / "face.mp4", single_face[:12])
    write_video(videos / "noface.mp4", read_video(DATA / "no_face.mp4")[:24])
    cfg = _raw_cfg(tmp_path)
    report = run(cfg, jobs=2)
    assert (report["clips"], report["processed"], report["ok"]) == (2, 2, 1)
    assert [e["clip"] for e in report["excluded"]] == ["noface"] and report["failed"] == []
    frames = tmp_path / "crops" / "face"
    assert sorted(p.name for p in frames.iterdir())[:2] == ["face_00001.jpg", "face_00002.jpg"]
    crops = read_frames_dir(frames)
    assert crops.shape == (12, 224, 224, 3)
    cached = open_clip(tmp_path / "cache" / "face.npy")
    assert cached.shape == (12, 64, 64, 3)
    assert np.abs(cached.astype(int) - resize_clip(crops, 64)).mean() < 3  # the cache shows the written crops
    assert not (tmp_path / "cache" / "noface.npy").exists() and not (tmp_path / "crops" / "noface").exists()
    on_disk = json.loads((tmp_path / "cache" / "face_crop_report.json").read_text())
    assert on_disk["excluded"][0]["source"].endswith("noface.mp4")
    log = [json.loads(line) for line in (tmp_path / "cache" / "face_crop_log.jsonl").read_text().splitlines()]
    assert {r["clip"]: r["status"] for r in log} == {"face": "ok", "noface": "excluded"}
    assert {"frames", "detected_fraction", "seconds"} <= set(log[0])

    again = run(cfg, jobs=2)  # everything done: nothing is processed
    assert (again["processed"], again["skipped_done"], again["ok"], len(again["excluded"])) == (0, 2, 1, 1)
    (tmp_path / "cache" / "face.npy").unlink()  # a lost output makes its clip due again
    assert run(cfg, jobs=1)["processed"] == 1 and (tmp_path / "cache" / "face.npy").exists()
    changed = run(_raw_cfg(tmp_path, margin=0.5), jobs=1)  # changed crop params redo the clips
    assert changed["processed"] == 2


def test_stage_never_writes_into_a_datasets_own_frames(tmp_path, single_face):
    cfg = _raw_cfg(tmp_path)
    (tmp_path / "root" / "videos").mkdir(parents=True)
    write_video(tmp_path / "root" / "videos" / "face.mp4", single_face[:4])
    (tmp_path / "crops" / "00001").mkdir(parents=True)  # e.g. DFEW's clip_224x224
    with pytest.raises(FileExistsError, match="set data.crops_dir to a new folder"):
        run(cfg)


def test_precropped_pass_through_packs_every_clip_with_manifest_ids(tmp_path):
    from adatosk.data.demo import generate
    from adatosk.data.manifest import build_manifest

    root = tmp_path / "demo"
    generate(root, {"subjects": 5, "clips_per_class": 2, "test_only_clips_per_class": 0, "raw_videos": 0})
    data = OmegaConf.to_container(OmegaConf.load(PARAMS / "demo.yaml"))
    data.update(root=str(root), cache_dir=str(tmp_path / "cache"), img_size=48, manifest_dir=str(tmp_path / "m"))
    report = run(data, jobs=1)
    manifest = build_manifest(data)
    assert report["ok"] == report["clips"] == manifest.clip_id.nunique() == 14
    for row in manifest.drop_duplicates("clip_id").itertuples():
        cached = open_clip(tmp_path / "cache" / f"{row.clip_id}.npy")
        assert cached.shape == (row.n_frames, 48, 48, 3)
        assert np.array_equal(cached, resize_clip(read_frames_dir(root / row.path), 48))
    assert run(data, jobs=1)["processed"] == 0


def test_precropped_nested_folders_get_flattened_ids(tmp_path):
    frames = tmp_path / "root" / "2_ClipsforFaceCrop" / "Action" / "Sad" / "0010"
    frames.mkdir(parents=True)
    for t in range(3):
        (frames / f"{t:03d}.jpg").write_bytes(_jpeg(t * 40))
    data = {"name": "ferv39k", "layout": "ferv39k", "root": str(tmp_path / "root"), "cache_dir": str(tmp_path / "c"),
            "img_size": 16, "face_crop": {"precropped": True}}
    report = run(data)
    assert report["ok"] == 1
    assert open_clip(tmp_path / "c" / "Action_Sad_0010.npy").shape == (3, 16, 16, 3)


def _jpeg(value: int) -> bytes:
    import cv2

    return cv2.imencode(".jpg", np.full((24, 24, 3), value, np.uint8))[1].tobytes()


def test_unreadable_clip_is_reported_as_failed(tmp_path):
    videos = tmp_path / "root" / "videos"
    videos.mkdir(parents=True)
    (videos / "broken.mp4").write_bytes(b"\0" * 1000)
    report = run(_raw_cfg(tmp_path))
    assert report["ok"] == 0 and report["failed"][0]["clip"] == "broken"
    assert "broken.mp4" in report["failed"][0]["reason"]


# --- bad clips: failing clips, broken frame folders, changed sources -------------------------------------------------

def _frame_folder(folder: Path, values: list[int], numbers: list[int] | None = None) -> None:
    folder.mkdir(parents=True)
    for value, number in zip(values, numbers or range(1, len(values) + 1)):
        (folder / f"{folder.name}_{number:05d}.jpg").write_bytes(_jpeg(value))


def _face_crop(capsys, *argv: str) -> tuple[int, str, str]:
    from adatosk import cli

    code = cli.main(["face-crop", "--jobs", "1", *argv])
    captured = capsys.readouterr()
    errors = "\n".join(line for line in captured.err.splitlines() if line.startswith("adatosk "))  # not progress
    return code, captured.out, errors


def test_command_fails_naming_broken_frame_folders_after_packing_the_others(tmp_path, capsys):
    frames = tmp_path / "root" / "Clip" / "clip_224x224"
    _frame_folder(frames / "00001", [10, 20, 30])
    _frame_folder(frames / "00002", [10, 20, 30])
    whole = (frames / "00002" / "00002_00002.jpg").read_bytes()
    (frames / "00002" / "00002_00002.jpg").write_bytes(whole[:len(whole) // 2])  # truncated: half a frame
    _frame_folder(frames / "00003", [10, 20, 30], numbers=[1, 2, 4])             # frame 3 is lost
    code, out, err = _face_crop(capsys, f"data.root={tmp_path / 'root'}", f"data.cache_dir={tmp_path / 'cache'}")
    assert code == 1 and "1 ok" in out and "2 failed" in out
    assert err.splitlines() == [
        f"adatosk face-crop: {frames / '00002'}: cannot decode frame images (unreadable, truncated or damaged): "
        "['00002_00002.jpg']",
        f"adatosk face-crop: {frames / '00003'}: frames are missing: the numbering jumps from 00003_00002.jpg to "
        "00003_00004.jpg"]
    assert sorted(p.name for p in (tmp_path / "cache").glob("*.npy")) == ["00001.npy"]


def test_command_fails_naming_an_undecodable_video_after_cropping_the_others(tmp_path, capsys, single_face):
    videos = tmp_path / "root" / "videos"
    videos.mkdir(parents=True)
    write_video(videos / "face.mp4", single_face[:12])
    (videos / "broken.mp4").write_bytes((DATA / "single_face.mp4").read_bytes()[:20_000])  # truncated: no index
    code, out, err = _face_crop(capsys, f"data.root={tmp_path / 'root'}", f"data.cache_dir={tmp_path / 'cache'}",
                                "data.face_crop.precropped=false", "data.face_crop.videos_dir=videos",
                                f"data.crops_dir={tmp_path / 'crops'}")
    assert code == 1 and "1 ok" in out and "1 failed" in out
    (line,) = err.splitlines()
    assert line.startswith(f"adatosk face-crop: {videos / 'broken.mp4'}: cannot decode the video: pyav: ")
    assert (tmp_path / "cache" / "face.npy").exists() and not (tmp_path / "cache" / "broken.npy").exists()


def test_damaged_video_fails_instead_of_cropping_its_first_half(tmp_path, capsys):
    from helpers import damaged_video

    videos = tmp_path / "root" / "videos"
    videos.mkdir(parents=True)
    damaged_video(videos / "damaged.mp4")
    code, out, err = _face_crop(capsys, f"data.root={tmp_path / 'root'}", f"data.cache_dir={tmp_path / 'cache'}",
                                "data.face_crop.precropped=false", "data.face_crop.videos_dir=videos",
                                f"data.crops_dir={tmp_path / 'crops'}")
    assert code == 1 and "0 ok" in out and "1 failed" in out
    assert err.startswith(f"adatosk face-crop: {videos / 'damaged.mp4'}: the video is damaged: decoding failed after")
    assert not (tmp_path / "cache" / "damaged.npy").exists() and not (tmp_path / "crops" / "damaged").exists()


def test_stage_removes_a_killed_runs_temporaries_and_refuses_a_second_run_on_its_cache(tmp_path, capsys):
    from adatosk.io import locked_directory

    frames = tmp_path / "root" / "Clip" / "clip_224x224"
    _frame_folder(frames / "00001", [10, 20, 30])
    cache = tmp_path / "cache"
    cache.mkdir()
    stale = cache / ".00001.npy.k3j9x2_a.tmp"  # the name atomic_path gives a file a killed run was writing
    stale.write_bytes(b"half")
    keep = cache / "notes.tmp"                # not an atomic_path temporary: not ours to delete
    keep.write_text("x")
    argv = (f"data.root={tmp_path / 'root'}", f"data.cache_dir={cache}")
    with locked_directory(cache, "a test"):
        code, _, err = _face_crop(capsys, *argv)
    assert code == 1 and err == f"adatosk face-crop: {cache}: locked: another adatosk process is working in this " \
        "directory, and `adatosk face-crop` cannot run beside it; wait for it to finish or stop it"
    assert stale.exists() and not (cache / "00001.npy").exists()
    code, _, err = _face_crop(capsys, *argv)
    assert code == 0 and err == ""
    assert not stale.exists() and keep.exists() and (cache / "00001.npy").exists()


def test_done_check_redoes_a_clip_whose_source_or_outputs_changed(tmp_path):
    frames = tmp_path / "root" / "Clip" / "clip_224x224"
    _frame_folder(frames / "00001", [10, 20, 30])
    _frame_folder(frames / "00002", [10, 20, 30])
    data = {"name": "demo", "layout": "dfew", "root": str(tmp_path / "root"), "frames_dir": "Clip/clip_224x224",
            "cache_dir": str(tmp_path / "cache"), "img_size": 16, "face_crop": {"precropped": True}}
    assert run(data)["processed"] == 2 and run(data)["processed"] == 0
    (frames / "00002" / "00002_00003.jpg").write_bytes(_jpeg(200))  # the source's content changes
    report = run(data)
    assert report["processed"] == 1 and report["skipped_done"] == 1
    assert open_clip(tmp_path / "cache" / "00002.npy")[2].mean() > 190  # the cache shows the new frame
    pack = np.zeros((3, 16, 16, 3), np.uint8)  # the cache is overwritten behind the stage's back
    np.save(tmp_path / "cache" / "00001.npy", pack)
    assert run(data)["processed"] == 1 and open_clip(tmp_path / "cache" / "00001.npy").mean() > 5
    assert run(data)["processed"] == 0


def test_bench_prints_speed_and_coverage_per_detect_every(tmp_path, capsys):
    rows_file = tmp_path / "bench.json"
    code, out, _ = _face_crop(capsys, "--bench", str(DATA / "single_face.mp4"), "--repeat", "1",
                              "--bench-json", str(rows_file))
    rows = json.loads(rows_file.read_text())
    assert code == 0 and [row["detect_every"] for row in rows] == [1, 5, 10, 15]
    assert all(row["coverage"] == 1.0 and row["frames"] == 72 and row["total_fps"] > 0 for row in rows)
    assert rows[0]["iou_vs_every_frame"] == 1.0 and all(row["iou_vs_every_frame"] > 0.9 for row in rows)
    assert [row["configured"] for row in rows] == [False, False, True, False]  # CropParams().detect_every
    table = [line for line in out.splitlines() if line.startswith("| single_face.mp4")]
    assert len(table) == 4 and "| 10 (configured) |" in table[2] and "| 100.0% |" in table[2]


@pytest.mark.slow  # a 20-s video: ~8 s
def test_stage_memory_is_bounded_by_a_few_frames_not_the_video(tmp_path):
    """A 20-s raw video (600 frames of 320x180: 100 MB decoded) is tracked, cropped and packed as a stream."""
    from helpers import looped_face_video, peak_numpy_bytes

    (tmp_path / "root" / "videos").mkdir(parents=True)
    looped_face_video(tmp_path / "root" / "videos" / "long.mp4", seconds=20)
    report, peak = peak_numpy_bytes(lambda: run(_raw_cfg(tmp_path, size=64), jobs=1))
    assert report["ok"] == 1 and open_clip(tmp_path / "cache" / "long.npy").shape == (600, 64, 64, 3)
    assert len(list((tmp_path / "crops" / "long").glob("long_*.jpg"))) == 600
    assert peak < 40 * 320 * 180 * 3  # all frames: 600 x


def test_stage_refuses_a_frames_dir_another_run_is_writing(tmp_path, capsys, single_face):
    """Two runs with their own cache_dir and one frames_dir: the second is refused at once, naming the folder."""
    from adatosk.io import locked_directory

    videos = tmp_path / "root" / "videos"
    videos.mkdir(parents=True)
    write_video(videos / "face.mp4", single_face[:8])
    frames_root = tmp_path / "crops"
    argv = (f"data.root={tmp_path / 'root'}", f"data.cache_dir={tmp_path / 'cache2'}", f"data.crops_dir={frames_root}",
            "data.face_crop.precropped=false", "data.face_crop.videos_dir=videos")
    with locked_directory(frames_root, "a test"):
        code, _, err = _face_crop(capsys, *argv)
    assert code == 1 and err.startswith(f"adatosk face-crop: {frames_root}: locked: another adatosk process")
    assert not (frames_root / "face").exists()
    stale = frames_root / ".face.k3j9x2_a.tmp"  # the folder a killed run was writing
    stale.mkdir()
    (stale / "face_00001.jpg").write_bytes(b"half")
    code, out, err = _face_crop(capsys, *argv)
    assert code == 0 and "1 ok" in out and not stale.exists()
    assert len(list((frames_root / "face").glob("*.jpg"))) == 8


@pytest.mark.slow  # two processes that import torch: ~15 s on 2 cores
def test_two_concurrent_runs_on_one_frames_dir_never_mix_their_frames(tmp_path, single_face):
    videos = tmp_path / "root" / "videos"
    videos.mkdir(parents=True)
    for k in range(4):
        write_video(videos / f"face{k}.mp4", single_face[:39])
    command = [sys.executable, "-m", "adatosk", "face-crop", "--jobs", "1", f"data.root={tmp_path / 'root'}",
               f"data.crops_dir={tmp_path / 'crops'}", "data.face_crop.precropped=false",
               "data.face_crop.videos_dir=videos"]
    runs = [subprocess.Popen([*command, f"data.cache_dir={tmp_path / f'cache{k}'}"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=os.environ) for k in range(2)]
    results = [(run.wait(), *run.communicate()) for run in runs]
    assert sorted(code for code, _, _ in results) in ([0, 0], [0, 1])
    for code, _, err in results:
        assert code == 0 or f"{tmp_path / 'crops'}: locked" in err, err
    for k in range(4):
        assert len(list((tmp_path / "crops" / f"face{k}").glob("*.jpg"))) == 39
    assert not [p for p in (tmp_path / "crops").iterdir() if p.name.endswith((".tmp", ".old"))]


def test_symlinked_clip_folders_and_videos_are_followed(tmp_path):
    """Data trees are often link farms: linked clip folders and videos are clips; a link loop is not followed."""
    store = tmp_path / "store"
    for name in ("00001", "00002"):
        _frame_folder(store / name, [10, 20])
    frames = tmp_path / "root" / "Clip" / "clip_224x224"
    _frame_folder(frames / "00003", [10, 20])
    for name in ("00001", "00002"):
        (frames / name).symlink_to(store / name, target_is_directory=True)
    (frames / "loop").symlink_to(frames, target_is_directory=True)
    assert sorted(find_clips(frames, precropped=True)) == ["00001", "00002", "00003"]
    data = {"name": "demo", "layout": "dfew", "root": str(tmp_path / "root"), "frames_dir": "Clip/clip_224x224",
            "cache_dir": str(tmp_path / "cache"), "img_size": 16, "face_crop": {"precropped": True}}
    assert run(data)["ok"] == 3
    videos = tmp_path / "videos"
    (videos / "linked").mkdir(parents=True)
    (videos / "linked" / "a.mp4").write_bytes(b"")
    (videos / "b.mp4").symlink_to(videos / "linked" / "a.mp4")
    (videos / "farm").symlink_to(videos / "linked", target_is_directory=True)
    assert sorted(find_clips(videos, precropped=False)) == ["b", "farm_a", "linked_a"]
