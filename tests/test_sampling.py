"""MAE-DFER's frame sampling: random 64-frame training windows, strided test views, last-frame padding."""

import numpy as np
import pytest

from adatosk.data.sampling import single_frame, train_indices
from adatosk.data.sampling import test_indices as sample_test_indices


@pytest.mark.parametrize("n_frames", [65, 100, 400])
def test_long_clip_takes_16_evenly_spaced_frames_of_a_64_frame_window(n_frames):
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(300):
        index = train_indices(n_frames, rng)
        assert index.dtype == np.int64 and index.shape == (16,)
        start = index[0]
        starts.add(start)
        assert 0 <= start <= n_frames - 64
        assert index[-1] == start + 63  # the window's last frame
        assert set(np.diff(index)) <= {4, 5}  # 16 frames over 64: stride 4, rounding to 5 now and then
    # the window start is drawn over the whole clip, both ends included
    assert min(starts) == 0 and max(starts) == n_frames - 64
    assert len(starts) > min(n_frames - 63, 300) // 3


@pytest.mark.parametrize("n_frames", [8, 37, 63, 64])
def test_short_clip_takes_len_over_4_frames_padded_with_the_last(n_frames):
    index = train_indices(n_frames, np.random.default_rng(0))
    count = n_frames // 4
    spread = index[:count]
    assert spread[0] == 0 and spread[-1] >= n_frames - 1 - 4  # the whole clip, evenly
    np.testing.assert_array_equal(spread, np.clip(np.linspace(0, n_frames, count), 0, n_frames - 1).astype(int))
    assert (index[count:] == n_frames - 1).all()  # padding: the clip's last frame
    # short clips do not depend on the generator
    np.testing.assert_array_equal(index, train_indices(n_frames, np.random.default_rng(99)))


@pytest.mark.parametrize("n_frames", [1, 2, 3])
def test_clip_shorter_than_the_stride_repeats_its_last_frame(n_frames):
    np.testing.assert_array_equal(train_indices(n_frames, np.random.default_rng(0)), np.full(16, n_frames - 1))
    expected_view = np.r_[0, np.full(15, n_frames - 1)]  # test: frame 0, then the last frame
    np.testing.assert_array_equal(sample_test_indices(n_frames), [expected_view, expected_view])


def test_training_draw_follows_the_generator():
    a = [train_indices(300, np.random.default_rng(5)) for _ in range(2)]
    np.testing.assert_array_equal(*a)
    assert any(not np.array_equal(a[0], train_indices(300, np.random.default_rng(s))) for s in range(6, 10))


@pytest.mark.parametrize("n_frames", [64, 65, 100, 129, 200, 500])
def test_test_views_take_every_4th_frame_and_cover_the_clip(n_frames):
    views = sample_test_indices(n_frames)
    strided = np.arange(0, n_frames, 4)
    assert views.shape == (2, 16) and views.dtype == np.int64
    for view in views:  # consecutive runs of the strided sequence
        assert set(np.diff(view)) == {4}
    assert views[0, 0] == 0 and views[-1, -1] == strided[-1]  # first frame ... last sampled frame
    if len(strided) <= 32:  # two views of 16 cover every strided frame
        assert set(views.ravel()) == set(strided)


@pytest.mark.parametrize("n_frames", [5, 37, 61])
def test_short_test_clip_is_padded_to_16_with_the_last_frame(n_frames):
    views = sample_test_indices(n_frames)
    strided = np.arange(0, n_frames, 4)
    for view in views:  # both views are the same padded sequence
        np.testing.assert_array_equal(view[:len(strided)], strided)
        assert (view[len(strided):] == n_frames - 1).all()


def test_views_spread_evenly_and_one_view_is_centred():
    views = sample_test_indices(400, num_views=3)  # 100 strided frames; starts 0, 42, 84 of them
    np.testing.assert_array_equal(views[:, 0], [0, 42 * 4, 84 * 4])
    centre = sample_test_indices(400, num_views=1)
    np.testing.assert_array_equal(centre[0, 0], 42 * 4)


def test_ferv39k_stride_1():
    index = train_indices(40, np.random.default_rng(0), stride=1, window=16)
    assert set(np.diff(index)) == {1} and 0 <= index[0] <= 24
    np.testing.assert_array_equal(train_indices(10, np.random.default_rng(0), stride=1, window=16),
                                  np.r_[np.clip(np.linspace(0, 10, 10), 0, 9).astype(int), np.full(6, 9)])
    views = sample_test_indices(40, stride=1)
    np.testing.assert_array_equal(views, [np.arange(16), np.arange(24, 40)])


def test_invalid_arguments():
    with pytest.raises(ValueError, match="at least one frame"):
        train_indices(0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="train_window"):
        train_indices(100, np.random.default_rng(0), window=8)
    with pytest.raises(ValueError, match="num_views"):
        sample_test_indices(100, num_views=0)


@pytest.mark.parametrize("n_frames", [20, 37, 200])
def test_single_frame_repeats_one_frame_of_each_view_drawn_uniformly(n_frames):
    rng = np.random.default_rng(0)
    views = sample_test_indices(n_frames, num_views=2)  # [2, 16], short clips padded with the last frame
    picked = [single_frame(views, rng) for _ in range(400)]
    for repeated in picked:
        assert repeated.shape == views.shape and repeated.dtype == np.int64
        for view, row in zip(views, repeated):
            assert len(set(row)) == 1 and row[0] in view
    # every distinct frame of a view is drawn, and the padding frame no more often than the others
    first = np.array([p[0, 0] for p in picked])
    distinct = np.unique(views[0])
    assert set(first) == set(distinct)
    counts = np.array([(first == f).sum() for f in distinct])
    assert counts.max() < 3 * 400 / len(distinct)
    one = single_frame(train_indices(n_frames, rng), rng)
    assert one.shape == (16,) and len(set(one)) == 1
