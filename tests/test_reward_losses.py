import math

import torch

from alignkit.reward.losses import bradley_terry_loss, calibration_bins, pair_accuracy


def test_bradley_terry_hand_values():
    c, r = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.0])
    expected = (-math.log(1 / (1 + math.exp(-1))) + math.log(2)) / 2
    assert math.isclose(float(bradley_terry_loss(c, r)), expected, rel_tol=1e-6)
    # a margin of 1 turns the first pair into a coin flip: -log(0.5)
    m = torch.tensor([1.0, 0.0])
    assert math.isclose(float(bradley_terry_loss(c, r, m)), math.log(2), rel_tol=1e-6)
    centred = bradley_terry_loss(c, r, center_coef=0.5)
    assert math.isclose(float(centred), expected + 0.5 * (4 + 0 + 1 + 0) / 4, rel_tol=1e-6)


def test_pair_accuracy_counts_ties_half():
    assert pair_accuracy(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 1.0, 2.0])) == 0.5


def test_calibration_perfect_and_overconfident():
    # σ(0) = 0.5 predicted, outcome frequencies 1 and 0 mirrored: perfectly calibrated.
    ece, bins = calibration_bins(torch.zeros(4), torch.zeros(4), bins=10)
    assert ece < 1e-6 and sum(b["n"] for b in bins) == 8
    # confident and always right: p≈1 for chosen, mirrored p≈0 never wins -> ECE≈0
    ece, _ = calibration_bins(torch.full((4,), 20.0), torch.zeros(4))
    assert ece < 1e-6
    # confident and always wrong: ECE ≈ 1
    ece, _ = calibration_bins(torch.zeros(4), torch.full((4,), 20.0))
    assert ece > 0.99
