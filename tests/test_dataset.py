"""ClipDataset: fold/split selection, cache vs frame folders vs video, sampling, determinism, corrupt clips."""

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from adatosk.data.cache import pack_clip
from adatosk.data.dataset import ClipDataset, ClipReadError, data_loader, worker_init_fn
from adatosk.data.sampling import test_indices as sample_test_indices
from adatosk.data.sampling import train_indices
from adatosk.errors import AdatoskError

SIZE, FRAMES = 24, 8
LENGTHS = {"c0": 10, "c1": 40, "c2": 70, "c3": 33}
TEST_DATA = Path(__file__).parent / "data"
IDENTITY_AUGMENT = dict(rand_augment=None, scale=[1, 1], ratio=[1, 1], hflip=0.0, reprob=0.0)


def clip_frames(clip: str) -> np.ndarray:
    """Frame t of clip k is flat grey 3 * t + k on a textured patch (so the frame index can be read back)."""
    k = int(clip[1:])
    frames = np.zeros((LENGTHS[clip], SIZE, SIZE, 3), np.uint8)
    frames[:] = (3 * np.arange(LENGTHS[clip]) + k)[:, None, None, None]
    frames[:, :6, :6] = np.random.default_rng(k).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return frames


@pytest.fixture
def dataset_dir(tmp_path):
    root, cache = tmp_path / "root", tmp_path / "cache"
    rows = []
    for k, clip in enumerate(LENGTHS):
        folder = root / "Clip" / clip
        folder.mkdir(parents=True)
        for t, frame in enumerate(clip_frames(clip)):
            cv2.imwrite(str(folder / f"{t + 1:05d}.png"), frame[..., ::-1])  # lossless, RGB -> BGR
        for fold in (1, 2):
            split = "test" if (k + fold) % 4 == 0 else "train"
            rows.append(dict(clip_id=clip, path=f"Clip/{clip}", n_frames=LENGTHS[clip], label=k % 3,
                             label_name=f"class{k % 3}", fold=fold, split=split))
    cfg = dict(num_classes=3, root=str(root), cache_dir=str(cache), num_frames=FRAMES, img_size=SIZE,
               sampling=dict(stride=4, train_window=32), augment=dict(rand_augment="rand-m7-n4-mstd0.5-inc1"))
    return pd.DataFrame(rows), cfg, root, cache


def pack_all(cache: Path) -> None:
    for clip in LENGTHS:
        pack_clip(clip_frames(clip), cache / f"{clip}.npy")


def frame_ids(video: torch.Tensor, clip: str) -> np.ndarray:
    """Read back the frame indices of an un-augmented [3, T, H, W] clip from its grey level."""
    red = video[0, :, 12, 12] * IMAGENET_DEFAULT_STD[0] + IMAGENET_DEFAULT_MEAN[0]  # [T] in [0, 1]
    return ((red * 255).round().numpy().astype(int) - int(clip[1:])) // 3


def test_selects_the_fold_and_split(dataset_dir):
    manifest, cfg, _, _ = dataset_dir
    train = ClipDataset(manifest, cfg, fold=1, split="train", train=True)
    test = ClipDataset(manifest, cfg, fold=1, split="test", train=False)
    assert train.clip_ids == ["c0", "c1", "c2"] and test.clip_ids == ["c3"]
    assert ClipDataset(manifest, cfg, fold=2, split="test", train=False).clip_ids == ["c2"]
    assert train.labels == [0, 1, 2] and test.labels == [0] and train.num_classes == 3 and len(train) == 3
    with pytest.raises(AdatoskError, match="no clips of fold 3"):
        ClipDataset(manifest, cfg, fold=3, split="train", train=True)
    with pytest.raises(AdatoskError, match=r"labels \[5\] outside"):
        ClipDataset(manifest.assign(label=5), cfg, fold=1, split="train", train=True)


def test_reads_a_manifest_csv(dataset_dir, tmp_path):
    manifest, cfg, _, _ = dataset_dir
    path = tmp_path / "manifest.csv"
    manifest.to_csv(path, index=False)
    assert ClipDataset(path, cfg, fold=1, split="train", train=True).clip_ids == ["c0", "c1", "c2"]


@pytest.mark.parametrize("packed", [False, True])
def test_train_sample_shape_and_frames(dataset_dir, packed):
    manifest, cfg, _, cache = dataset_dir
    if packed:
        pack_all(cache)
    dataset = ClipDataset(manifest, {**cfg, "augment": IDENTITY_AUGMENT}, fold=1, split="train", train=True, seed=3)
    for i, clip in enumerate(dataset.clip_ids):
        sample = dataset[i]
        assert sample["video"].shape == (3, FRAMES, SIZE, SIZE) and sample["video"].dtype == torch.float32
        assert sample["label"] == dataset.labels[i] and sample["index"] == i
        expected = train_indices(LENGTHS[clip], dataset.rng(i), num_frames=FRAMES, stride=4, window=32)
        np.testing.assert_array_equal(frame_ids(sample["video"], clip), expected)


@pytest.mark.parametrize("packed", [False, True])
def test_test_sample_has_the_temporal_views(dataset_dir, packed):
    manifest, cfg, _, cache = dataset_dir
    if packed:
        pack_all(cache)
    dataset = ClipDataset(manifest, cfg, fold=2, split="train", train=False, temporal_views=3)
    for i, clip in enumerate(dataset.clip_ids):
        video = dataset[i]["video"]
        assert video.shape == (3, 3, FRAMES, SIZE, SIZE)
        expected = sample_test_indices(LENGTHS[clip], num_frames=FRAMES, stride=4, num_views=3)
        for view in range(3):
            np.testing.assert_array_equal(frame_ids(video[view], clip), expected[view])


@pytest.mark.parametrize("train", [True, False])
def test_single_frame_control_shows_one_sampled_frame_repeated(dataset_dir, train):
    manifest, cfg, _, _ = dataset_dir
    cfg = {**cfg, "augment": IDENTITY_AUGMENT, "sampling": {**cfg["sampling"], "single_frame": True}}
    dataset = ClipDataset(manifest, cfg, fold=1, split="train", train=train, seed=3)
    for i, clip in enumerate(dataset.clip_ids):
        video = dataset[i]["video"]
        views = video[None] if train else video  # [V, 3, T, S, S]
        sampled = (train_indices(LENGTHS[clip], dataset.rng(i), num_frames=FRAMES, stride=4, window=32)[None]
                   if train else sample_test_indices(LENGTHS[clip], num_frames=FRAMES, stride=4, num_views=2))
        for view, allowed in zip(views, sampled):
            ids = frame_ids(view, clip)
            assert len(set(ids)) == 1 and ids[0] in allowed
            assert torch.equal(view, view[:, :1].expand_as(view))  # the whole frame repeats, not just a pixel
        assert torch.equal(dataset[i]["video"], video)  # deterministic per (seed, epoch, index)


def test_cache_and_frame_folders_give_the_same_tensors(dataset_dir):
    manifest, cfg, _, cache = dataset_dir
    from_folders = ClipDataset(manifest, cfg, fold=1, split="train", train=False)
    folder_views = [from_folders[i]["video"] for i in range(len(from_folders))]
    folder_train = ClipDataset(manifest, cfg, fold=1, split="train", train=True)[2]["video"]
    pack_all(cache)
    from_cache = ClipDataset(manifest, cfg, fold=1, split="train", train=False)
    assert from_cache.cache_path(0).exists()
    for i, views in enumerate(folder_views):
        assert torch.equal(from_cache[i]["video"], views)
    assert torch.equal(ClipDataset(manifest, cfg, fold=1, split="train", train=True)[2]["video"], folder_train)


def test_resizes_frames_of_another_size(dataset_dir):
    manifest, cfg, _, _ = dataset_dir
    dataset = ClipDataset(manifest, {**cfg, "img_size": 16}, fold=1, split="train", train=False)
    assert dataset[1]["video"].shape == (2, 3, FRAMES, 16, 16)
    assert ClipDataset(manifest, {**cfg, "img_size": 16}, fold=1, split="train", train=True)[1]["video"].shape == (
        3, FRAMES, 16, 16)


def test_reads_video_files(dataset_dir):
    manifest, cfg, _, _ = dataset_dir
    videos = manifest.assign(path="single_face.mp4")
    dataset = ClipDataset(videos, {**cfg, "root": str(TEST_DATA)}, fold=1, split="train", train=False)
    video = dataset[0]["video"]
    assert video.shape == (2, 3, FRAMES, SIZE, SIZE) and torch.isfinite(video).all()
    assert video[0, :, 0].std() > 0.1  # real image content, not a constant


def test_augmentation_is_deterministic_per_seed_epoch_and_index(dataset_dir):
    manifest, cfg, _, cache = dataset_dir
    pack_all(cache)
    make = lambda seed=0: ClipDataset(manifest, cfg, fold=1, split="train", train=True, seed=seed)  # noqa: E731
    first, resumed = make(), make()
    first.set_epoch(4)
    resumed.set_epoch(4)  # a resumed run: a new dataset object, same seed and epoch
    for i in range(3):
        assert torch.equal(first[i]["video"], resumed[i]["video"])
    epoch4 = first[2]["video"]
    first.set_epoch(5)
    assert not torch.equal(first[2]["video"], epoch4)
    assert not torch.equal(make(seed=1)[2]["video"], make(seed=0)[2]["video"])
    assert not torch.equal(first[1]["video"], first[2]["video"])


def test_worker_processes_give_the_same_samples_and_follow_set_epoch(dataset_dir):
    manifest, cfg, _, cache = dataset_dir
    pack_all(cache)
    dataset = ClipDataset(manifest, cfg, fold=1, split="train", train=True, seed=7)
    loader = data_loader(dataset, batch_size=1, num_workers=2, persistent_workers=True, worker_init_fn=worker_init_fn)
    for epoch in (2, 3):
        dataset.set_epoch(epoch)  # the workers, started in epoch 2, see the new epoch
        for i, batch in enumerate(loader):
            assert torch.equal(batch["video"][0], dataset[i]["video"]) and batch["index"].item() == i


def test_frames_of_different_sizes_are_an_error(dataset_dir):
    manifest, cfg, root, _ = dataset_dir
    cv2.imwrite(str(root / "Clip" / "c0" / "00001.png"), np.zeros((10, 12, 3), np.uint8))
    with pytest.raises(ClipReadError, match=r"Clip/c0: frames differ in size .*00001.png.*\(12, 10\)"):
        ClipDataset(manifest, cfg, fold=1, split="train", train=False)[0]


def corrupt(cache: Path, clip: str) -> Path:
    path = cache / f"{clip}.npy"
    path.write_bytes(path.read_bytes()[:100])
    return path


def test_strict_mode_raises_naming_the_file(dataset_dir):
    manifest, cfg, _, cache = dataset_dir
    pack_all(cache)
    bad = corrupt(cache, "c1")
    dataset = ClipDataset(manifest, cfg, fold=1, split="train", train=True)
    with pytest.raises(ClipReadError, match=rf"clip c1 .*{bad.name}"):
        dataset[1]
    with pytest.raises(ClipReadError, match="c1.npy"):
        dataset.validate()


def test_missing_clip_names_both_places(dataset_dir):
    manifest, cfg, root, _ = dataset_dir
    shutil.rmtree(root / "Clip" / "c0")
    with pytest.raises(ClipReadError, match=r"c0\.npy.*Clip/c0"):
        ClipDataset(manifest, cfg, fold=1, split="train", train=False)[0]


def test_undecodable_frame_names_the_frame(dataset_dir):
    manifest, cfg, root, _ = dataset_dir
    (root / "Clip" / "c0" / "00001.png").write_bytes(b"not a png")
    with pytest.raises(ClipReadError, match="00001.png"):
        ClipDataset(manifest, cfg, fold=1, split="train", train=False)[0]


def test_lenient_mode_skips_reports_and_warns(dataset_dir):
    manifest, cfg, _, cache = dataset_dir
    pack_all(cache)
    corrupt(cache, "c1")
    dataset = ClipDataset(manifest, cfg, fold=1, split="train", train=True, strict=False)
    with pytest.warns(RuntimeWarning, match="c1.npy"):
        sample = dataset[1]
    assert sample["index"] == 2 and sample["label"] == dataset.labels[2]  # the next readable clip instead
    assert list(dataset.report.corrupt) == ["c1"] and "c1.npy" in dataset.report.corrupt["c1"]
    assert dataset.report.replaced == 1 and len(dataset.report) == 1
    assert dataset[1]["index"] == 2 and dataset.report.replaced == 2  # known bad: skipped without a retry
    assert dataset[0]["index"] == 0
    fresh = ClipDataset(manifest, cfg, fold=1, split="train", train=True, strict=False)
    assert list(fresh.validate().corrupt) == ["c1"]
    assert fresh.report.to_dict()["replaced"] == 0


def test_accepts_the_composed_config(dataset_dir):
    from adatosk.config import load_config

    manifest, _, root, cache = dataset_dir
    cfg = load_config([f"data.root={root}", f"data.cache_dir={cache}", "model.img_size=32", "model.num_frames=4",
                       "data.augment.rand_augment=rand-m7-n4-mstd0.5-inc1"])  # the demo itself has none
    train = ClipDataset(manifest, cfg.data, fold=1, split="train", train=True)
    assert train.augment.rand_augment.config_str == cfg.data.augment.rand_augment
    assert (train.stride, train.train_window) == (cfg.data.sampling.stride, cfg.data.sampling.train_window)
    assert train[2]["video"].shape == (3, 4, 32, 32)
    test = ClipDataset(manifest, cfg.data, fold=1, split="test", train=False)
    assert test[0]["video"].shape == (2, 3, 4, 32, 32)


LOADER_AFTER_OPENCV_THREADS = '''
import cv2, numpy as np, torch
from adatosk.data.dataset import data_loader

class Resized(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        cv2.setNumThreads(1)
        return torch.from_numpy(cv2.resize(np.full((480, 640, 3), i, np.uint8), (64, 64)))

if __name__ == "__main__":
    for _ in range(20):
        cv2.resize(np.zeros((2000, 2000, 3), np.uint8), (1000, 1000))    # OpenCV's thread pool runs here
    print(sum(int(batch.sum() > 0) for batch in data_loader(Resized(), batch_size=1, num_workers=2)))
'''


@pytest.mark.slow  # worker processes import torch: ~10 s on 2 cores
def test_loader_workers_do_not_deadlock_after_opencv_ran_its_thread_pool(tmp_path):
    """A forked worker of a process whose OpenCV thread pool has run hangs in its first cv2 call; data_loader's
    workers start from a forkserver."""
    script = tmp_path / "loader.py"
    script.write_text(LOADER_AFTER_OPENCV_THREADS)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3"]                                # clips 1-3 are non-zero, clip 0 is black
