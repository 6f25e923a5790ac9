import numpy as np
import pytest
import torch

from lorakit.data import make_dataset
from lorakit.metrics import (
    attribute_accuracy,
    frechet_distance,
    image_vendi,
    nearest_train_distance,
    object_area,
    paired_share_difference_ci,
    position_spread,
    precision_recall_density_coverage,
    proportion_ci,
    vendi_score,
)

rng = np.random.default_rng(0)


def test_frechet_known_answers():
    x = rng.normal(size=(4000, 3))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    # Same covariance, mean shifted by (3, 0, 0): the distance is |shift|^2 = 9.
    assert frechet_distance(x, x + np.array([3.0, 0, 0])) == pytest.approx(9.0, rel=1e-6)
    # Two isotropic Gaussians N(0, I) and N(0, 4I) in 3-d: 3 * (1 + 4 - 2*2) = 3.
    a, b = rng.normal(size=(200_000, 3)), 2 * rng.normal(size=(200_000, 3))
    assert frechet_distance(a, b) == pytest.approx(3.0, rel=0.02)


def test_vendi_known_answers():
    v = rng.normal(size=(1, 8))
    assert vendi_score(np.repeat(v, 10, axis=0)) == pytest.approx(1.0, abs=1e-6)
    assert vendi_score(np.eye(7)) == pytest.approx(7.0, rel=1e-6)
    # two orthogonal groups of identical samples: two effective samples
    assert vendi_score(np.array([[1, 0]] * 5 + [[0, 1]] * 5, dtype=float)) == pytest.approx(2.0, rel=1e-6)
    with pytest.raises(ValueError, match="non-zero"):
        vendi_score(np.zeros((3, 4)))


def test_prdc_known_answers():
    real = rng.normal(size=(300, 4))
    same = precision_recall_density_coverage(real, real, k=5)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    # every real ball holds its centre and its k nearest neighbours: density (k+1)/k exactly
    assert same["density"] == pytest.approx(6 / 5)
    fresh = precision_recall_density_coverage(real, rng.normal(size=(300, 4)), k=5)
    assert fresh["density"] == pytest.approx(1.0, abs=0.2) and fresh["coverage"] > 0.85
    far = precision_recall_density_coverage(real, real + 100.0, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # Fakes that all sit at one real point: precise, but cover almost nothing.
    collapsed = precision_recall_density_coverage(real, np.repeat(real[:1], 50, axis=0) + 1e-9, k=5)
    assert collapsed["precision"] == 1.0 and collapsed["coverage"] < 0.05
    with pytest.raises(ValueError, match="more than k"):
        precision_recall_density_coverage(real[:3], real[:3], k=5)


def test_nearest_train_distance_known_answers():
    train = make_dataset(20, seed=0).images
    d = nearest_train_distance(train[:5], train)
    assert torch.allclose(d, torch.zeros(5), atol=1e-6)
    white = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    black = torch.zeros((1, 3, 32, 32), dtype=torch.uint8)
    assert nearest_train_distance(white, black).item() == pytest.approx(1.0)


def test_attribute_accuracy_on_real_images(classifier):
    data = make_dataset(60, seed=11)
    right = attribute_accuracy(data.images, data.captions, classifier)
    assert right["colour"] == 1.0 and right["shape"] >= 0.98 and right["all"] >= 0.95
    wrong = attribute_accuracy(data.images, ["a large orange star"] * 60, classifier)
    assert wrong["colour"] == 0.0 and wrong["shape"] == 0.0
    with pytest.raises(ValueError, match="one prompt per image"):
        attribute_accuracy(data.images, ["a red circle"] * 3, classifier)


def test_image_vendi_known_answers():
    blank = torch.full((3, 32, 32), 228, dtype=torch.uint8)  # the background
    a, b = blank.clone(), blank.clone()
    a[:, :4, :4] = 0  # objects in disjoint places: orthogonal foreground vectors
    b[:, -4:, -4:] = 0
    assert image_vendi(torch.stack([a, a, a, a])) == pytest.approx(1.0)
    assert image_vendi(torch.stack([a, b])) == pytest.approx(2.0)
    assert image_vendi(torch.stack([a, a, b, b])) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="non-zero"):
        image_vendi(torch.stack([blank, a]))  # an empty image has no foreground to compare


def test_position_spread_known_answers():
    assert position_spread([[5.0, 5.0]] * 4) == 0.0
    assert position_spread([[0.0, 0.0], [2.0, 0.0]]) == pytest.approx(1.0)
    assert position_spread([[0.0, 0.0], [0.0, 6.0], [6.0, 0.0], [6.0, 6.0]]) == pytest.approx(18 ** 0.5)


def test_object_area_known_answers():
    blank = torch.full((1, 3, 32, 32), 228, dtype=torch.uint8)
    half = blank.clone()
    half[:, 0, :16] = 20  # the top half red-ish: 512 of 1,024 pixels
    assert object_area(torch.cat([blank, half])).tolist() == [0.0, 0.5]
    data = make_dataset(200, seed=0)
    area = object_area(data.images)
    for shape in ("circle", "square", "triangle"):  # per shape, the two size bins do not overlap
        small = [float(a) for a, at in zip(area, data.attributes) if at.shape == shape and at.size == "small"]
        large = [float(a) for a, at in zip(area, data.attributes) if at.shape == shape and at.size == "large"]
        assert small and large and min(large) > max(small), shape


# -- the papers' own implementations agree (test-only dependencies: prdc, vendi-score) -----------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prdc_matches_naeem_et_al_reference_package(seed):
    prdc = pytest.importorskip("prdc")
    rng = np.random.default_rng(seed)
    real, fake = rng.normal(size=(120, 16)), rng.normal(0.3, 1.2, size=(90, 16))
    for k in (3, 5):
        ours = precision_recall_density_coverage(real, fake, k=k)
        ref = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
        assert ours.keys() == ref.keys()
        assert all(abs(ours[m] - float(ref[m])) <= 1e-6 for m in ours), (ours, ref)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vendi_matches_friedman_and_dieng_reference_package(seed):
    vendi = pytest.importorskip("vendi_score.vendi")
    rng = np.random.default_rng(seed)
    for x in (rng.normal(size=(40, 8)), np.abs(rng.normal(size=(25, 96))), np.repeat(rng.normal(size=(3, 5)), 4, 0)):
        assert vendi_score(x) == pytest.approx(float(vendi.score_X(x, q=1, normalize=True)), abs=1e-6)


def test_paired_share_difference_keeps_a_width_when_no_image_differs():
    same = np.ones(480)
    low, high = paired_share_difference_ci(same, same)
    gap = 1 - proportion_ci(same)[0]  # Wilson's distance below 1 for 480 of 480
    assert low == pytest.approx(-gap) and high == pytest.approx(gap) and gap > 0.005


def test_paired_share_difference_is_antisymmetric_and_holds_its_estimate():
    a = (np.random.default_rng(1).random(200) < 0.8).astype(float)
    b = a.copy()
    b[:12] = 1 - b[:12]  # 12 items differ
    low, high = paired_share_difference_ci(a, b)
    assert low < a.mean() - b.mean() < high
    assert paired_share_difference_ci(b, a) == pytest.approx((-high, -low))


def test_paired_share_difference_covers_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(2)
    hits = 0
    for _ in range(1000):  # 100 strongly correlated pairs: P(a) = 0.9, P(b) = 0.85, b right only where a is
        u = rng.random(100)
        a, b = (u < 0.9).astype(float), (u < 0.85).astype(float)
        low, high = paired_share_difference_ci(a, b)
        hits += low <= 0.05 <= high
    assert 0.92 <= hits / 1000 <= 0.99


def test_paired_share_difference_refuses_unpaired_or_non_binary_outcomes():
    with pytest.raises(ValueError, match="same length"):
        paired_share_difference_ci([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="0 or 1"):
        paired_share_difference_ci([1, 0.5], [1, 0])
