"""The fused head log-prob equals log-softmax + gather (values, entropies, gradients)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from alignkit.models.policy import head_logprobs


def _reference(head: nn.Linear, h: torch.Tensor, tok: torch.Tensor, tau: float):
    ls = torch.log_softmax(head(h) / tau, dim=-1)
    return ls.gather(1, tok[:, None]).squeeze(1), -(ls.exp() * ls).sum(-1)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("tau", [1.0, 0.7])
def test_fused_head_matches_log_softmax_in_float64(bias: bool, tau: float) -> None:
    torch.manual_seed(0)
    N, D, V = 150, 8, 300  # N spans several row chunks
    head = nn.Linear(D, V, bias=bias).double()
    with torch.no_grad():
        head.weight.mul_(5)  # peaked distributions
    h = torch.randn(N, D, dtype=torch.float64, requires_grad=True)
    tok = torch.randint(0, V, (N,))
    g = torch.randn(N, dtype=torch.float64)

    lp, ent = head_logprobs(head, h, tok, tau, with_entropy=True)
    (lp * g).sum().backward()
    got = [h.grad.clone()] + [p.grad.clone() for p in head.parameters()]
    h.grad = None
    head.zero_grad()
    lp_ref, ent_ref = _reference(head, h, tok, tau)
    (lp_ref * g).sum().backward()
    want = [h.grad] + [p.grad for p in head.parameters()]

    torch.testing.assert_close(lp, lp_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(ent, ent_ref, rtol=0, atol=1e-12)
    assert not ent.requires_grad
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_frozen_head_and_no_grad_paths() -> None:
    torch.manual_seed(1)
    head = nn.Linear(4, 50, bias=False).double().requires_grad_(False)
    h = torch.randn(70, 4, dtype=torch.float64, requires_grad=True)
    tok = torch.randint(0, 50, (70,))
    lp, ent = head_logprobs(head, h, tok, with_entropy=False)
    assert ent is None
    lp.sum().backward()  # only the hidden states get a gradient
    h2 = h.detach().clone().requires_grad_(True)
    _reference(head, h2, tok, 1.0)[0].sum().backward()
    torch.testing.assert_close(h.grad, h2.grad, rtol=0, atol=1e-12)
    with torch.no_grad():
        lp0, _ = head_logprobs(head, h, tok, with_entropy=False)
    torch.testing.assert_close(lp0, lp.detach(), rtol=0, atol=0)


def test_backward_twice_is_a_clear_error() -> None:
    head = nn.Linear(4, 20).double()
    h = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    lp, _ = head_logprobs(head, h, torch.zeros(5, dtype=torch.long), with_entropy=False)
    lp.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        lp.sum().backward()


def test_buffers_are_reused_not_accumulated_across_row_counts() -> None:
    """Minibatches keep different numbers of masked-in rows: one buffer per role stays."""
    from alignkit.models import policy as P

    head = nn.Linear(4, 30).double()
    for n in (200, 90, 150, 0):
        h = torch.randn(n, 4, dtype=torch.float64, requires_grad=True)
        lp, _ = head_logprobs(head, h, torch.zeros(n, dtype=torch.long))
        lp.sum().backward()
    keys = [k for k in P._pool if k[1] == 30 and k[2] == torch.float64]
    assert sorted(k[0] for k in keys) == ["logits", "softmax"]
    assert P._pool[("softmax", 30, torch.float64, torch.device("cpu"))].size(0) == 200


def test_improbable_tokens_keep_exact_log_probs_in_float32() -> None:
    """A token far below the max (p ≈ e^-200, 0 in float32) still gets its exact log-prob."""
    head = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[100.0, 0.0], [-100.0, 0.0], [0.0, 1.0]]))
    h = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    tok = torch.tensor([1, 0, 2])
    lp, _ = head_logprobs(head, h, tok, with_entropy=False)
    want = torch.log_softmax(head(h).double(), -1).gather(1, tok[:, None]).squeeze(1)
    torch.testing.assert_close(lp.double(), want, rtol=1e-6, atol=1e-5)
    assert lp[0].item() == pytest.approx(-200.0, abs=1e-3)


def test_half_precision_falls_back_to_float32_logits() -> None:
    head = nn.Linear(4, 20).bfloat16()
    h = torch.randn(6, 4).bfloat16()
    tok = torch.arange(6)
    lp, _ = head_logprobs(head, h, tok, with_entropy=False)
    want = torch.log_softmax(head(h).float(), -1).gather(1, tok[:, None]).squeeze(1)
    assert lp.dtype == torch.float32
    torch.testing.assert_close(lp, want)


@pytest.mark.parametrize("bias", [False, True])
def test_bf16_products_stay_near_float64_and_repeat_bit_for_bit(bias: bool) -> None:
    """``product_dtype=bf16``: log-probs, entropies and the gradients within bf16's rounding
    of the float64 answer (8 mantissa bits on operands of a 64-term sum), and the same
    function twice gives the same bits (PPO's first ratio is exactly 1)."""
    torch.manual_seed(3)
    N, D, V = 600, 64, 1000  # N spans two row chunks
    head = nn.Linear(D, V, bias=bias)
    h = torch.randn(N, D, requires_grad=True)
    tok = torch.randint(0, V, (N,))
    g = torch.randn(N)

    lp, ent = head_logprobs(head, h, tok, with_entropy=True, product_dtype=torch.bfloat16)
    assert lp.dtype == ent.dtype == torch.float32
    (lp * g).sum().backward()
    got = [h.grad.clone()] + [p.grad.clone() for p in head.parameters()]
    lp2, _ = head_logprobs(head, h.detach(), tok, with_entropy=False,
                           product_dtype=torch.bfloat16)
    torch.testing.assert_close(lp2, lp.detach(), rtol=0, atol=0)

    head64 = nn.Linear(D, V, bias=bias).double()
    head64.load_state_dict(head.state_dict())
    h64 = h.detach().double().requires_grad_(True)
    lp_ref, ent_ref = _reference(head64, h64, tok, 1.0)
    (lp_ref * g.double()).sum().backward()
    want = [h64.grad] + [p.grad for p in head64.parameters()]
    err = (lp.double() - lp_ref).abs()
    assert err.mean() < 0.05 and err.max() < 0.3  # logits ~±3: bf16 steps of ~0.01
    assert err.max() > 1e-3  # it did round: the fp32 path is within ~1e-6
    torch.testing.assert_close(ent.double(), ent_ref, rtol=0, atol=0.1)
    for a, b in zip(got, want, strict=True):
        assert (a.double() - b).norm() < 0.02 * b.norm()


def test_a_frozen_weights_low_precision_copy_follows_in_place_writes() -> None:
    """The cached bf16 copy of a frozen head is reused, and redone after an in-place write
    (a checkpoint load, an optimizer step) bumps the weight's version counter."""
    from alignkit.models.policy import _low_precision_copy

    w = torch.randn(50, 8).requires_grad_(False)
    first = _low_precision_copy(w, torch.bfloat16)
    assert _low_precision_copy(w, torch.bfloat16) is first
    with torch.no_grad():
        w.add_(1.0)
    again = _low_precision_copy(w, torch.bfloat16)
    assert again is not first
    torch.testing.assert_close(again, w.bfloat16(), rtol=0, atol=0)
    trained = torch.randn(50, 8, requires_grad=True)
    assert _low_precision_copy(trained, torch.bfloat16) is not _low_precision_copy(
        trained, torch.bfloat16)
