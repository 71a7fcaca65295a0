"""Clip augmentation: timm's RandAugment semantics, drawn once per clip, applied identically to every frame."""

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.data.auto_augment import _RAND_INCREASING_TRANSFORMS, _RAND_TRANSFORMS, NAME_TO_OP
from timm.data.auto_augment import LEVEL_TO_ARG as TIMM_LEVEL_TO_ARG

from adatosk.data import transforms as T

MEAN = torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1, 1)
STD = torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1, 1)
NO_AUGMENT = dict(rand_augment=None, scale=(1, 1), ratio=(1, 1), hflip=0.0, reprob=0.0)


def smooth_image(seed: int, size: int = 48) -> np.ndarray:
    """A natural-ish image: upsampled noise, so that interpolation differences stay small."""
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(0, 256, (size // 6, size // 6, 3), dtype=np.uint8), (size, size),
                      interpolation=cv2.INTER_CUBIC)


def as_uint8(video: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation of [3, T, H, W]."""
    return (video * STD + MEAN).mul(255).round()


@pytest.mark.parametrize("name", sorted(set(_RAND_TRANSFORMS + _RAND_INCREASING_TRANSFORMS)))
def test_op_arguments_match_timm(name):
    timm_level = TIMM_LEVEL_TO_ARG[name]
    ours = T.LEVEL_TO_ARG[name]
    assert (ours is None) == (timm_level is None)
    if ours is None:
        return
    for magnitude in (0.0, 3.3, 7.0, 7.6, 10.0):
        ours_both = {ours(magnitude, 1.0), ours(magnitude, -1.0)}
        for _ in range(8):  # timm draws the sign from the global `random`
            assert timm_level(magnitude, {})[0] in ours_both


@pytest.mark.parametrize("name,arg", [
    ("AutoContrast", None), ("Equalize", None), ("Invert", None), ("Posterize", 2), ("Solarize", 100),
    ("SolarizeAdd", 60), ("Color", 1.6), ("Color", 0.3), ("Contrast", 1.6), ("Contrast", 0.3), ("Brightness", 1.6),
    ("Brightness", 0.4), ("Sharpness", 1.8), ("Sharpness", 0.2),
])
def test_colour_ops_match_timm_pil_ops(name, arg):
    image = smooth_image(1)
    args = () if arg is None else (arg,)
    reference = np.asarray(NAME_TO_OP[name](Image.fromarray(image), *args)).astype(int)
    ours = T.COLOUR_OPS[name](np.stack([image, image]), *args).astype(int)
    assert np.abs(ours - reference).max() <= 2  # PIL rounds blends slightly differently
    np.testing.assert_array_equal(ours[0], ours[1])


@pytest.mark.parametrize("name,arg", [("Rotate", 20.0), ("Rotate", -13.0), ("ShearX", 0.2), ("ShearY", -0.25),
                                      ("TranslateXRel", 0.2), ("TranslateYRel", -0.3)])
def test_geometric_ops_match_timm_pil_ops(name, arg):
    image = smooth_image(2)
    reference = np.asarray(NAME_TO_OP[name](Image.fromarray(image), arg, fillcolor=(128, 128, 128),
                                            resample=Image.BILINEAR)).astype(int)
    inverse = T.geometric_inverse_map(name, arg, 48, 48) @ T.crop_inverse_map((0, 0, 48, 48), 48, flip=False)
    ours = T.warp_clip(image[None], inverse, 48, fill=128)[0].astype(int)
    # away from the fill boundary (PIL and cv2 treat the half pixel at the edge differently) they agree
    near_fill = cv2.dilate((reference == 128).all(-1).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert (~near_fill).mean() > 0.5
    assert np.abs(ours - reference)[~near_fill].max() <= 3


def test_rand_augment_parses_the_timm_policy_and_fires_n_times_p():
    policy = T.ClipRandAugment("rand-m7-n4-mstd0.5-inc1")
    assert [op.name for op in policy.ops] == _RAND_INCREASING_TRANSFORMS
    assert policy.num_layers == 4 and {op.magnitude for op in policy.ops} == {7}
    assert {op.magnitude_std for op in policy.ops} == {0.5}
    rng = np.random.default_rng(0)
    draws = [policy.sample(rng) for _ in range(2000)]
    assert np.mean([len(d) for d in draws]) == pytest.approx(4 * 0.5, abs=0.1)
    names = [name for d in draws for name, _ in d]
    assert set(names) == set(_RAND_INCREASING_TRANSFORMS)
    rotations = np.abs([arg for d in draws for name, arg in d if name == "Rotate"])
    assert rotations.mean() == pytest.approx(7 / 10 * 30, abs=0.5) and 0 < rotations.std() < 3  # m ~ N(7, 0.5)
    with pytest.raises(ValueError, match="no clip implementation"):
        T.ClipRandAugment("rand-m7-n2-t3a")  # 3-Augment: Desaturate, GaussianBlur are not implemented


def test_sixteen_identical_frames_stay_identical():
    frames = np.stack([smooth_image(3)] * 16)
    augment = T.ClipAugment(40, reprob=1.0)
    for seed in range(30):
        video = augment(frames, np.random.default_rng(seed))
        assert video.shape == (3, 16, 40, 40) and video.dtype == torch.float32
        assert torch.equal(video, video[:, :1].expand_as(video)), seed


def test_every_frame_gets_the_same_augmentation():
    """Applying one clip's parameters to the clip equals applying them to each frame on its own."""
    base = smooth_image(4).astype(int)
    frames = np.stack([np.clip(base + 6 * t - 40, 0, 255) for t in range(16)]).astype(np.uint8)  # brightness offsets
    augment = T.ClipAugment(40, reprob=0.5)
    seen = set()
    for seed in range(40):
        params = augment.sample(np.random.default_rng(seed), 48, 48)
        seen.update(name for name, _ in params.ops)
        video = augment.apply(frames, params)
        for t in (0, 7, 15):
            torch.testing.assert_close(video[:, t:t + 1], augment.apply(frames[t:t + 1], params), rtol=0, atol=0)
    assert seen >= T.GEOMETRIC_OPS and len(seen) >= 12  # the draws did exercise the op set


def test_geometry_is_consistent_across_frames_with_a_brightness_offset():
    base = smooth_image(5).astype(int) // 2 + 40
    frames = np.stack([base + 5 * t for t in range(16)]).astype(np.uint8)  # no clipping: values in [40, 242]
    augment = T.ClipAugment(40, rand_augment=None, reprob=0.0)
    for seed in range(10):
        pixels = as_uint8(augment(frames, np.random.default_rng(seed)))
        difference = pixels - pixels[:, :1]
        expected = 5 * torch.arange(16.0).view(1, 16, 1, 1)
        assert (difference - expected).abs().max() <= 1  # the same crop, resize and flip in every frame


def test_flip_and_identity_crop_are_exact():
    frames = np.random.default_rng(0).integers(0, 256, (3, 24, 24, 3), dtype=np.uint8)
    plain = T.ClipAugment(24, **NO_AUGMENT)(frames, np.random.default_rng(0))
    torch.testing.assert_close(plain, T.normalize_clip(frames), rtol=0, atol=1e-5)
    flipped = T.ClipAugment(24, **{**NO_AUGMENT, "hflip": 1.0})(frames, np.random.default_rng(0))
    torch.testing.assert_close(flipped, T.normalize_clip(frames[:, :, ::-1].copy()), rtol=0, atol=1e-5)


def test_crop_reads_the_sampled_box():
    frames = np.stack([smooth_image(6, 96)] * 2)
    augment = T.ClipAugment(48, rand_augment=None, scale=(0.2, 0.3), hflip=0.0, reprob=0.0)
    rng_params, rng_apply = np.random.default_rng(3), np.random.default_rng(3)
    top, left, h, w = augment.sample(rng_params, 96, 96).box
    assert 0.2 * 96 * 96 * 0.8 <= h * w <= 0.3 * 96 * 96 * 1.2 and 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    pixels = as_uint8(augment(frames, rng_apply))[:, 0].permute(1, 2, 0).numpy()
    reference = cv2.resize(frames[0, top:top + h, left:left + w], (48, 48), interpolation=cv2.INTER_LINEAR)
    assert np.abs(pixels[2:-2, 2:-2] - reference[2:-2, 2:-2]).max() <= 3


def test_random_erasing_puts_the_same_noise_box_in_every_frame():
    frames = np.full((4, 32, 32, 3), 128, np.uint8)
    augment = T.ClipAugment(32, **{**NO_AUGMENT, "reprob": 1.0})
    params = augment.sample(np.random.default_rng(1), 32, 32)
    top, left, h, w = params.erase
    assert 0.02 * 32 * 32 * 0.7 <= h * w <= 32 * 32 / 3 * 1.3
    video = augment.apply(frames, params)
    erased = torch.zeros(32, 32, dtype=torch.bool)
    erased[top:top + h, left:left + w] = True
    clean = T.normalize_clip(frames)
    assert torch.equal(video[:, :, ~erased], clean[:, :, ~erased])
    box = video[:, :, erased]  # [3, T, h*w]
    assert torch.equal(box, box[:, :1].expand_as(box))
    assert box.std() == pytest.approx(1.0, abs=0.3) and box.mean().abs() < 0.3  # N(0, 1) in normalised units


def test_same_generator_same_clip_different_generator_different_clip():
    frames = np.stack([smooth_image(7)] * 4)
    augment = T.ClipAugment(40)
    first = augment(frames, np.random.default_rng(11))
    torch.testing.assert_close(first, augment(frames, np.random.default_rng(11)), rtol=0, atol=0)
    assert not torch.equal(first, augment(frames, np.random.default_rng(12)))


def test_normalisation_and_resize():
    frames = np.zeros((2, 50, 70, 3), np.uint8)
    frames[1] = 255
    video = T.normalize_clip(T.resize_clip(frames, 32))
    assert video.shape == (3, 2, 32, 32) and video.dtype == torch.float32
    mean, std = torch.tensor(IMAGENET_DEFAULT_MEAN), torch.tensor(IMAGENET_DEFAULT_STD)
    torch.testing.assert_close(video[:, 0, 5, 5], -mean / std)
    torch.testing.assert_close(video[:, 1, 5, 5], (1 - mean) / std)
    same = np.zeros((2, 32, 32, 3), np.uint8)
    assert np.shares_memory(T.resize_clip(same, 32), same)  # already the right size: no copy


def test_from_config_defaults_are_mae_dfer():
    augment = T.ClipAugment.from_config({}, 160)
    assert augment.rand_augment.config_str == "rand-m7-n4-mstd0.5-inc1"
    assert augment.scale == (0.08, 1.0) and augment.ratio == pytest.approx((0.75, 4 / 3))
    assert (augment.hflip, augment.reprob, augment.fill) == (0.5, 0.25, 128)
    with pytest.raises(TypeError):
        T.ClipAugment.from_config({"colour_jitter": 0.4}, 160)
