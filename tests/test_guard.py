"""The Guard callback: evaluation cadence, actions (raise β, stop, rollback) and the report."""

import json
from types import SimpleNamespace

import torch
from torch import nn

from alignkit.guard.config import GuardConfig
from alignkit.guard.guard import Guard, HeldoutResult
from alignkit.rl.kl_control import FixedKL


class _Policy(nn.Module):
    """Stands in for Policy: one weight that 'training' moves."""

    def __init__(self) -> None:
        super().__init__()
        self.lora_w = nn.Parameter(torch.zeros(2))

    def adapter_state(self):
        return {k: v.detach().clone() for k, v in self.state_dict().items()}


def _trainer(tmp_path, beta=0.0):
    return SimpleNamespace(policy=_Policy(), kl_ctl=FixedKL(beta), ckpt_dir=tmp_path / "ck",
                           step=0)


PROMPTS = [f"p{i}" for i in range(4)]
TEXTS = [f"answer number {i} to prompt {i}" for i in range(4)]


def _stats(step, kl=1.0, proxy=0.0, gold=0.5, length=10.0):
    return {"step": step, "objective/kl": kl, "objective/scores": proxy, "objective/gold": gold,
            "objective/entropy": 20.0, "response/length": length, "val/num_eos_tokens": 2,
            "kl_coef": 0.0}


def test_every_skips_steps_and_disabled_does_nothing(tmp_path):
    g = Guard(GuardConfig(every=2, heldout_prompts=0), log=None)
    for s in range(1, 6):
        assert g(_stats(s), PROMPTS, TEXTS) is None
    assert [r["step"] for r in g.evaluations] == [2, 4]
    off = Guard(GuardConfig(enabled=False), log=None)
    assert off(_stats(1, kl=99.0), PROMPTS, TEXTS) is None and off.evaluations == []


def test_kl_alarm_raises_beta_then_stops_at_the_ceiling(tmp_path):
    tr = _trainer(tmp_path, beta=0.0)
    g = Guard(GuardConfig(kl_budget=5.0, raise_beta_min=0.1, max_beta=0.4), tr, log=None)
    assert g(_stats(1, kl=2.0), PROMPTS, TEXTS) is None and tr.kl_ctl.value == 0.0
    assert g(_stats(2, kl=6.0), PROMPTS, TEXTS) is None and tr.kl_ctl.value == 0.1  # 0 → min
    assert g(_stats(3, kl=7.0), PROMPTS, TEXTS) is None and tr.kl_ctl.value == 0.2
    assert g(_stats(4, kl=7.0), PROMPTS, TEXTS) is None and tr.kl_ctl.value == 0.4
    reason = g(_stats(5, kl=7.0), PROMPTS, TEXTS)
    assert reason and "max_beta" in reason
    actions = [a.action for a in g.alarms]
    assert actions == ["raise_beta 0 → 0.1", "raise_beta 0.1 → 0.2", "raise_beta 0.2 → 0.4",
                       "stop"]


def test_log_action_records_an_alarm_once_while_it_stays_on(tmp_path):
    g = Guard(GuardConfig(kl_budget=5.0, kl_action="log"), log=None)
    for s, kl in enumerate([6.0, 7.0, 8.0, 1.0, 9.0], start=1):
        assert g(_stats(s, kl=kl), PROMPTS, TEXTS) is None
    assert [a.step for a in g.alarms] == [1, 5]  # on at 1, off at 4, on again at 5


def test_proxy_gold_rollback_restores_best_gold_weights(tmp_path):
    tr = _trainer(tmp_path)
    state = tmp_path / "guard.json"
    g = Guard(GuardConfig(window=3, proxy_gold_action="rollback", kl_budget=100.0), tr,
              state_path=state, log=None)
    golds = [0.5, 0.6, 0.7, 0.6, 0.5, 0.4]
    reason = None
    for s, gold in enumerate(golds, start=1):
        tr.policy.lora_w.data.fill_(float(s))  # the weights of step s
        reason = g(_stats(s, kl=float(s), proxy=0.2 * s, gold=gold), PROMPTS, TEXTS)
        if reason:
            break
    # proxy rises 0.4 over steps 3-5 while gold falls 0.2: fires at step 5
    assert s == 5 and reason and "rolled back to step 3" in reason
    assert torch.equal(tr.policy.lora_w.data, torch.full((2,), 3.0))
    assert g.best["step"] == 3 and (tmp_path / "ck" / "best" / "state.pt").exists()
    saved = json.loads(state.read_text())
    assert saved["stopped"] == reason
    (alarm,) = [a for a in saved["alarms"] if a["detector"] == "proxy_gold"]
    assert alarm["step"] == 5 and alarm["action"].startswith("rollback to step 3")
    assert alarm["evidence"]["gold_best_step"] == 3
    assert set(alarm) >= {"detector", "step", "message", "evidence", "samples"}
    # resuming from the state file keeps the alarms and the best checkpoint; evaluations
    # after the step the trainer resumed at are dropped
    tr.step = 5
    g2 = Guard(GuardConfig(), tr, state_path=state, log=None)
    assert g2.load_state() and g2.best["step"] == 3 and len(g2.alarms) == len(g.alarms)
    tr.step = 4
    g3 = Guard(GuardConfig(), tr, state_path=state, log=None)
    assert g3.load_state() and [r["step"] for r in g3.evaluations] == [1, 2, 3, 4]
    assert g3.alarms == []


def test_heldout_numbers_replace_rollout_numbers_and_feed_length_detector(tmp_path):
    calls = []

    def heldout():
        n = len(calls) + 1
        calls.append(n)
        lengths = [5.0 * n, 6.0 * n, 7.0 * n, 8.0 * n]
        return HeldoutResult(proxy=0.1 * n, gold=0.5, kl=0.5, length=6.5 * n, prompts=PROMPTS,
                             texts=TEXTS, sample_proxy=[x / 10 for x in lengths],
                             sample_lengths=lengths)

    g = Guard(GuardConfig(length_action="stop", proxy_rise=10.0), heldout=heldout, log=None)
    assert g(_stats(1, proxy=9.0), PROMPTS, TEXTS) is None
    assert g.evaluations[0]["proxy"] == 0.1 and g.evaluations[0]["rollout_proxy"] == 9.0
    assert g(_stats(2), PROMPTS, TEXTS) is None
    reason = g(_stats(3), PROMPTS, TEXTS)  # length 6.5 → 19.5 with reward tracking it
    assert reason and reason.startswith("guard: length at step 3")


def test_ensemble_disagreement_from_member_scores(tmp_path):
    spread = iter([0.1, 0.1, 0.1, 0.5])

    def ensemble(prompts, texts):
        s = next(spread)
        return torch.tensor([[0.0] * len(texts), [2 * s] * len(texts)]).numpy()

    g = Guard(GuardConfig(ensemble_action="stop"), ensemble=ensemble, log=None)
    assert all(g(_stats(s), PROMPTS, TEXTS) is None for s in (1, 2, 3))
    assert abs(g.evaluations[0]["ensemble_std"] - 0.1) < 1e-6
    reason = g(_stats(4), PROMPTS, TEXTS)
    assert reason and "ensemble" in reason


def test_healthy_run_raises_no_alarm(tmp_path):
    tr = _trainer(tmp_path, beta=0.05)
    g = Guard(GuardConfig(proxy_gold_action="rollback", collapse_action="stop",
                          length_action="stop"), tr, log=None)
    for s in range(1, 13):
        texts = [f"answer {s} {i} is a fine and different reply {i * s}" for i in range(4)]
        assert g(_stats(s, kl=0.3 * s, proxy=0.05 * s, gold=0.5 + 0.02 * s,
                        length=10 + (s % 3)), PROMPTS, texts) is None
    assert g.alarms == [] and g.best["step"] == 12
    rep = g.report()
    assert rep["alarms"] == [] and rep["gao_fit"] is not None and rep["stopped"] is None
