"""The two-level inverse-CDF sampler draws from the given distribution, never from zeros."""

from __future__ import annotations

import torch

from alignkit.generation import _inverse_cdf_sample


def test_frequencies_match_probabilities_and_zero_mass_is_never_drawn() -> None:
    torch.manual_seed(0)
    V = 2500  # not a multiple of the 1024 block: the last block is padded
    probs = torch.zeros(3, V)
    probs[0, [3, 1023, 1024, 2499]] = torch.tensor([0.1, 0.2, 0.3, 0.4])  # block edges
    probs[1, 1500] = 1.0  # a single token in the middle block
    probs[2, :10] = 5.0  # unnormalised weights are fine
    g = torch.Generator().manual_seed(3)
    n = 4000
    draws = torch.stack([_inverse_cdf_sample(probs, g) for _ in range(n)])  # [n, 3]
    assert (probs.gather(1, draws.t()) > 0).all()
    assert (draws[:, 1] == 1500).all()
    freq = torch.bincount(draws[:, 0], minlength=V)[[3, 1023, 1024, 2499]].float() / n
    sd = (torch.tensor([0.1, 0.2, 0.3, 0.4]) * 0.9 / n).sqrt()
    assert ((freq - torch.tensor([0.1, 0.2, 0.3, 0.4])).abs() < 5 * sd).all(), freq
    counts = torch.bincount(draws[:, 2], minlength=V)[:10].float()
    assert counts.sum() == n and counts.min() > 300  # ≈ 400 each


def test_same_generator_same_draws() -> None:
    probs = torch.rand(4, 5000)
    a = _inverse_cdf_sample(probs, torch.Generator().manual_seed(7))
    b = _inverse_cdf_sample(probs, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
