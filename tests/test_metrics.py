import numpy as np
import pytest

from adatosk.metrics import confusion_matrix, recognition_metrics


def test_confusion_matrix_rows_are_true_classes():
    cm = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], num_classes=3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_uar_war_on_a_hand_made_matrix():
    # class 0: 8/10 right, class 1: 1/2 right, class 2: 3/4 right -> UAR = (80 + 50 + 75) / 3 %, WAR = 12/16 = 75 %
    cm = np.array([[8, 1, 1],
                   [1, 1, 0],
                   [0, 1, 3]])
    m = recognition_metrics(cm, ["a", "b", "c"])
    assert m["unit"] == "percent"
    assert m["uar"] == pytest.approx((80 + 50 + 75) / 3)
    assert m["war"] == pytest.approx(75.0)
    assert m["per_class_recall"] == pytest.approx([80.0, 50.0, 75.0])
    assert m["support"] == [10, 2, 4]
    assert m["missing_classes"] == []
    assert m["confusion_matrix"] == cm.tolist() and m["class_names"] == ["a", "b", "c"]
    # UAR is not WAR: the frequent class dominates WAR only
    assert m["uar"] != pytest.approx(m["war"])


def test_class_without_samples_is_excluded_from_uar_and_flagged():
    cm = np.array([[3, 1, 0],
                   [0, 0, 0],   # no sample of class 1 (it is still predicted once)
                   [1, 0, 1]])
    m = recognition_metrics(cm, ["happy", "sad", "fear"])
    assert m["per_class_recall"][1] is None
    assert m["missing_classes"] == ["sad"]
    assert m["uar"] == pytest.approx((75 + 50) / 2)
    assert m["war"] == pytest.approx(100 * 4 / 6)


def test_invalid_inputs_are_refused():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 3], [0, 1], num_classes=3)
    with pytest.raises(ValueError, match="2 labels but 1"):
        confusion_matrix([0, 1], [0], num_classes=2)
    with pytest.raises(ValueError, match="empty"):
        recognition_metrics(np.zeros((2, 2), dtype=int))
    with pytest.raises(ValueError, match="class names"):
        recognition_metrics(np.eye(2, dtype=int), ["only one"])
