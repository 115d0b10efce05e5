"""Bradley–Terry preference loss and the statistics that judge a reward model."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def bradley_terry_loss(r_chosen: Tensor, r_rejected: Tensor, margin: Tensor | None = None,
                       center_coef: float = 0.0) -> Tensor:
    """−log σ(r_c − r_r − m), averaged over pairs; P(c ≻ r) = σ(r_c − r_r) is the BT model.

    ``margin`` (Llama 2) asks for a larger gap where labelers agreed more strongly;
    ``center_coef``·mean(r²) keeps scores near zero so PPO's score scale is stable.
    """
    diff = r_chosen - r_rejected
    if margin is not None:
        diff = diff - margin
    loss = -F.logsigmoid(diff).mean()
    if center_coef:
        loss = loss + center_coef * torch.cat([r_chosen, r_rejected]).pow(2).mean()
    return loss


def pair_accuracy(r_chosen: Tensor, r_rejected: Tensor) -> float:
    """Share of pairs the model orders like the labelers (exact ties count half)."""
    diff = r_chosen - r_rejected
    return float(((diff > 0).float() + 0.5 * (diff == 0).float()).mean())


def calibration_bins(r_chosen: Tensor, r_rejected: Tensor, bins: int = 10
                     ) -> tuple[float, list[dict]]:
    """Expected calibration error of σ(r_c − r_r) as P(chosen wins), and its bins.

    Each pair is scored in a random orientation-free way: we evaluate the predicted
    probability p that the *first* of (chosen, rejected) wins, and its mirror 1 − p for
    (rejected, chosen), so the bins span [0, 1] and the outcome frequency is meaningful.
    """
    p = torch.sigmoid(r_chosen - r_rejected)
    probs = torch.cat([p, 1 - p])
    outcome = torch.cat([torch.ones_like(p), torch.zeros_like(p)])
    edges = torch.linspace(0, 1, bins + 1)
    ece, table = 0.0, []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (probs >= lo) & ((probs < hi) if hi < 1 else (probs <= hi))
        n = int(inside.sum())
        if n == 0:
            continue
        conf, acc = float(probs[inside].mean()), float(outcome[inside].mean())
        ece += n / probs.numel() * abs(conf - acc)
        table.append({"p_mean": conf, "acc": acc, "n": n})
    return ece, table


def cost_model_loss(c_worse: Tensor, c_better: Tensor, unsafe_worse: Tensor | None = None,
                    unsafe_better: Tensor | None = None, label_smoothing: float = 0.0) -> Tensor:
    """Safe RLHF's cost-model objective (Dai et al. 2023), averaged over pairs:

        −log σ(c_w − c_b) − Σ_{x∈{w,b}} [y_x log σ(c_x) + (1 − y_x) log σ(−c_x)],
        y = 1 − ε for an unsafe flag, ε for a safe one.

    The first term is Bradley–Terry on the harmlessness ranking (the *more harmful* reply w
    costs more); the other two are a classification term on the labelers' safe/unsafe flags
    that anchors the scale, so that cost > 0 means unsafe. With ε = 0 (Safe RLHF) it is
    −log σ(s·c), s = ±1, and pushes every safe reply's cost towards −∞ without bound; with
    ε > 0 its optimum is the finite logit(ε), so *all* safe replies settle near one cost.
    Why it matters: the ranking pairs say "refusal ≻ compliance" only on harmful requests,
    and a small cost model generalises that to "refusals cost less" everywhere — then
    R − λC rewards refusing benign requests too (measured on the default run: a benign
    refusal cost 2.5 less than a benign answer). A flag that is NaN (nobody said) drops its
    term for that reply."""
    loss = -F.logsigmoid(c_worse - c_better)
    for cost, unsafe in ((c_worse, unsafe_worse), (c_better, unsafe_better)):
        if unsafe is None:
            continue
        known = ~torch.isnan(unsafe)
        y = torch.where(unsafe > 0.5, 1.0 - label_smoothing, label_smoothing).to(cost.dtype)
        bce = y * F.logsigmoid(cost) + (1.0 - y) * F.logsigmoid(-cost)
        loss = loss - torch.where(known, bce, torch.zeros_like(cost))
    return loss.mean()


def safety_accuracy(costs: Tensor, unsafe: Tensor) -> float:
    """Share of flagged replies whose cost sign matches the flag (cost > 0 ⇔ unsafe)."""
    known = ~torch.isnan(unsafe)
    if not bool(known.any()):
        return float("nan")
    return int(((costs[known] > 0) == (unsafe[known] > 0.5)).sum()) / int(known.sum())
