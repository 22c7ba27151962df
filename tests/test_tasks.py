"""Each task's per-sample statistics and metric against values computed by hand."""

import numpy as np
import pytest

from workbench.evaluation.statistics import BETTER, bootstrap_interval, paired_bootstrap
from workbench.evaluation.tasks import SQNR_CAP, Classification, Custom, Fidelity, Regression, Segmentation, task_value


def test_classification_is_top1():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0]])
    stats = Classification().statistics(logits, np.array([0, 0, 0]))
    assert stats[:, 0].tolist() == [1.0, 0.0, 1.0] and task_value(Classification(), stats) == pytest.approx(2 / 3)


def test_segmentation_miou_is_the_ratio_of_summed_counts():
    # two 2x2 images, 2 classes; image 1 right everywhere, image 2 predicts class 1 on one pixel of class 0
    truth = np.array([[[0, 1], [1, 1]], [[0, 0], [0, 1]]])
    predicted = truth.copy()
    predicted[1, 0, 0] = 1
    logits = np.eye(2)[predicted] * 5.0  # one-hot logits of the predictions
    task = Segmentation(num_classes=2)
    stats = task.statistics(logits, truth)
    # class 0: intersection 1 + 2 = 3, union 1 + 3 = 4; class 1: intersection 3 + 1 = 4, union 3 + 2 = 5
    assert task_value(task, stats) == pytest.approx((3 / 4 + 4 / 5) / 2)
    assert task.secondary(stats.mean(axis=0))["pixel_accuracy"] == pytest.approx((1.0 + 0.75) / 2)
    absent = Segmentation(num_classes=3)  # a class in no image and no prediction does not count
    assert task_value(absent, absent.statistics(np.eye(3)[predicted] * 5.0, truth)) == pytest.approx((3 / 4 + 4 / 5) / 2)


def test_regression_mae_and_rmse():
    task = Regression()
    stats = task.statistics(np.array([[1.0], [2.0], [4.0]]), np.array([1.0, 1.0, 1.0]))
    assert task_value(task, stats) == pytest.approx(4 / 3) and not task.higher_is_better
    assert task.secondary(stats.mean(axis=0))["rmse"] == pytest.approx(np.sqrt((0 + 1 + 9) / 3))


def test_fidelity_needs_no_labels_and_caps_equal_outputs():
    ref = np.array([[1.0, 2.0], [3.0, 4.0]])
    stats = Fidelity().statistics(ref + np.array([[0.1, 0.0], [0.0, 0.0]]), None, ref)
    assert stats[0, 0] == pytest.approx(10 * np.log10(5 / 0.01)) and stats[1, 0] == SQNR_CAP
    assert stats[1, 1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="compares with the FP32 model's outputs"):
        Fidelity().statistics(ref, None)


def test_a_users_metric_gets_intervals_and_paired_verdicts_for_free():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)

    def f1_like(outputs, labels):  # any per-sample score
        return (np.argmax(outputs, axis=-1) == labels).astype(float) * 2.0

    task = Custom(score=f1_like, metric_name="double_top1")
    good = np.eye(2)[labels] + rng.normal(0, 0.3, (400, 2))
    bad = np.eye(2)[labels] + rng.normal(0, 1.5, (400, 2))
    s_good, s_bad = task.statistics(good, labels), task.statistics(bad, labels)
    low, high = bootstrap_interval(s_good, task.value)
    assert low <= task_value(task, s_good) <= high and task.metric == "double_top1"
    assert paired_bootstrap(s_good, s_bad, task.value, task.higher_is_better).verdict() == BETTER
    with pytest.raises(ValueError, match="give one per sample"):
        Custom(score=lambda o, y: np.zeros(3)).statistics(good, labels)


def test_a_segmentation_models_sim_gets_miou_with_an_interval_and_a_paired_verdict():
    """A per-pixel model through the sim with the library API: mIoU of FP32 and W8A8 and W2 sims, compared on the same images."""
    import keras

    from workbench import QuantizationSimModel, QuantSettings, forward_pass_over, score_task

    rng = np.random.default_rng(0)
    masks = (rng.uniform(size=(64, 8, 8)) > 0.5).astype(np.int32)
    images = (masks[..., None] * 2.0 - 1.0 + rng.normal(0, 0.6, (64, 8, 8, 1))).astype(np.float32)
    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 1))
    model = keras.Model(i, keras.layers.Conv2D(2, 1, name="head")(keras.layers.Conv2D(4, 3, padding="same", activation="relu")(i)))
    model.compile(keras.optimizers.Adam(0.03), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, masks, epochs=40, batch_size=16, verbose=0)
    batches = [(images[k : k + 16], masks[k : k + 16]) for k in range(0, 64, 16)]
    task = Segmentation(num_classes=2)
    fp32 = score_task(model, batches, task)
    assert fp32.value > 0.8 and fp32.low <= fp32.value <= fp32.high and "pixel_accuracy" in fp32.secondary
    scores = {}
    for bits in (8, 2):
        sim = QuantizationSimModel(model, QuantSettings(param_bw=bits, output_bw=bits))
        sim.compute_encodings(forward_pass_over([images]))
        scores[bits] = score_task(sim.model, batches, task)
    assert scores[8].against(fp32).verdict() != BETTER and scores[8].value > 0.8
    assert fp32.against(scores[2]).verdict() == BETTER  # 2 bits lose mIoU the paired test can see
    fidelity = score_task(sim.model, [b[0] for b in batches], Fidelity(), reference=model)  # no labels at all
    assert fidelity.value < SQNR_CAP and fidelity.low <= fidelity.value <= fidelity.high


@pytest.mark.parametrize(
    "task", [Classification(), Segmentation(num_classes=3), Regression(), Fidelity(), Custom(), Custom(training_loss="mse")]
)
def test_whether_a_task_trains_is_known_without_its_loss(task):
    """The config checks ask ``has_loss`` before Keras is imported; it must say what ``loss`` then gives."""
    assert task.has_loss() == (task.loss(True) is not None)
