"""The helpful-and-harmless cycle end to end on the tiny model: SL-CAI, two criteria, reward
and cost models, PPO-Lagrangian, the HH evaluation — and the contract report.json keeps."""

import json
from pathlib import Path

import pytest
import yaml

from alignkit.config import load_config
from alignkit.cycle import run_cycle
from alignkit.reward.model import RewardModel

ROOT = Path(__file__).resolve().parents[1]
TINY_HH = {
    "data.prompts": "hh", "data.chat_template": True, "sl_cai.enabled": True,
    "sl_cai.harmful_prompts": 6, "sl_cai.benign_prompts": 6, "sl_cai.max_new_tokens": 8,
    "sl_cai.epochs": 1, "sl_cai.min_relevance": -1.0, "ppo.cost": "model",
    "cost.backbone": "policy", "cost.epochs": 1, "cost.max_length": 48,
    "data.hh.harmful_eval": 4, "data.hh.benign_eval": 4, "data.hh.lookalike_eval": 4,
    "data.hh.harmbench_eval": 4, "data.hh.jailbreak_eval": 2, "data.hh.honesty_eval": 2,
    "data.hh.rtp_eval": 4, "evaluate.hh_max_new_tokens": 8, "guard.hh_heldout_prompts": 4,
}
SETS = ("harmful_heldout", "harmbench", "jailbreak", "benign_refusal", "lookalike_refusal")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_tiny_hh_cycle_keeps_the_report_contract(tmp_path):
    cfg = load_config(ROOT / "configs/tiny.yaml", TINY_HH)
    assert run_cycle(cfg, tmp_path) == "done"
    report = json.loads((tmp_path / "report.json").read_text())
    hh = report["hh"]
    assert set(hh["judges"]) == {"zou-prefixes", "mitigation-bypass"}
    for name in SETS:
        for judge in hh["judges"]:
            x = hh[name][judge]
            assert {"base", "sl_cai", "aligned", "paired_diff_ci95", "n"} <= set(x), name
            assert 0.0 <= x["base"] <= 1.0 and len(x["paired_diff_ci95"]) == 2
    assert {"base", "aligned", "paired_diff_ci95"} <= set(hh["benign_helpfulness"])
    assert {"base", "aligned"} <= set(hh["honesty"])
    assert "evaluation" in report and {"final_kl", "kl_budget"} <= set(report["ppo"])
    assert report["ppo"]["lambda_end"] is not None  # PPO-Lagrangian ran
    assert report["sl_cai"]["sft_steps"] >= 1
    # the cost model loads in the reward model's folder format, higher = more harmful
    cm = RewardModel.load(tmp_path / "cost_model")
    assert cm.score(["q"], ["a"]).shape == (1,)
    assert (tmp_path / "reward_model").is_dir() and (tmp_path / "policy").is_dir()
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["data"]["chat_template"]
    pairs = [json.loads(x) for x in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert {p["criterion"] for p in pairs} == {"helpfulness", "harmlessness"}
    # a finished run resumes as done: every stage skipped
    assert run_cycle(cfg, tmp_path) == "done"
