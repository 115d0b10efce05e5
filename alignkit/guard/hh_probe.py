"""The guard's helpful-and-harmless probe: fixed benign and harmful requests (kept out of
training and out of the evaluation sets), sampled with a fixed seed at every evaluation, so
a change in refusals is a change of the policy. It feeds the over-refusal and
refusal-marker-hacking detectors (:mod:`alignkit.guard.hh_detectors`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from alignkit.safety.refusal import refusal_judges

if TYPE_CHECKING:
    from alignkit.rl.collect import RolloutCollector
    from alignkit.rl.ppo import PPOTrainer


@dataclass
class HHProbeResult:
    benign_refusal: float
    benign_refused: list[str]  # the benign replies judged refusals (evidence)
    harmful_replies: list[str]
    harmful_marked: list[bool]  # carries a refusal marker
    harmful_refused: list[bool]  # the judge sees a refusal (marker and no answer)


class HHProbe:
    def __init__(self, source: PPOTrainer | RolloutCollector, benign: list[str],
                 harmful: list[str], seed: int = 4243) -> None:
        if not benign or not harmful:
            raise ValueError("guard.hh_heldout_prompts: the probe needs benign and harmful "
                             "prompts — set it to 0 to turn the probe off")
        self.collector = getattr(source, "collector", source)
        self.benign, self.harmful, self.seed = list(benign), list(harmful), seed
        self.judge = refusal_judges()["zou-prefixes"]

    @torch.no_grad()
    def __call__(self) -> HHProbeResult:
        from alignkit.rl.collect import sample_with_reference

        c = self.collector
        prompts = self.benign + self.harmful
        s = sample_with_reference(c.policy, c.tok, prompts, c.gen_cfg, c.stop_ids,
                                  c.cfg.kl_estimator, self.seed, c.chat_template)
        texts = s.gen.texts(c.tok)
        refused = self.judge.refused(prompts, texts)
        nb = len(self.benign)
        return HHProbeResult(
            float(refused[:nb].mean()), [t for t, r in zip(texts[:nb], refused[:nb],
                                                           strict=True) if r],
            texts[nb:], [self.judge.markers.hit(t) for t in texts[nb:]],
            refused[nb:].tolist())
