"""Data-parallel learners: the ranks' slices cover each minibatch once, and two gloo ranks
taking a PPO update on their halves end with the weights one learner gets on the whole
batch (the known answer: the single-process update)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alignkit.distributed.data_parallel import rank_slice
from alignkit.rl.ppo import PPOTrainer

ROOT = Path(__file__).resolve().parents[1]

# One rank of a 2-process gloo group (file rendezvous): the tiny policy, one rollout (seeded:
# the same on both ranks) and one PPO update on this rank's slices; writes its weights.
RANK_SCRIPT = r"""
import json, os, sys
import torch
import torch.distributed as dist
sys.path.insert(0, os.environ["TEST_DIR"])
from test_data_parallel import one_update
from alignkit.distributed.data_parallel import TorchDistributed

torch.set_num_threads(1)
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD"])
name = f"{world}_{rank}"
if world == 1:  # the single learner, in the same kind of process as the ranks
    weights, stats = one_update(os.environ["OUT"] + "/" + name)
else:
    dist.init_process_group("gloo", init_method="file://" + os.environ["STORE"], rank=rank,
                            world_size=world)
    weights, stats = one_update(os.environ["OUT"] + "/" + name, TorchDistributed())
    dist.destroy_process_group()
torch.save(weights, os.environ["OUT"] + f"/weights_{name}.pt")
json.dump(stats, open(os.environ["OUT"] + f"/stats_{name}.json", "w"))
"""


def one_update(out: str, data_parallel=None) -> tuple[dict, dict]:
    """Tiny policy, one seeded rollout, one PPO update (2 epochs × 2 minibatches)."""
    from alignkit.config import GenerateConfig, ModelConfig, PPOConfig
    from alignkit.distributed.workers import WorkerSpec, build_policy

    # fp32 on the CPU even where a GPU is: the known answer holds to float rounding, and
    # bf16 autocast would blur it (on a GPU the two ranks still agree bit for bit)
    spec = WorkerSpec(model=ModelConfig(name="tiny-llama", lora_r=8, lora_alpha=16,
                                        device="cpu", compute_dtype="float32"),
                      ppo=PPOConfig(prompts_per_step=7, samples_per_prompt=2, lr=2e-3,
                                    kl_coef=0.05, epochs=2, minibatches=2),
                      generate=GenerateConfig(max_new_tokens=8))
    tok, policy, stop = build_policy(spec)
    prompts = [f"Story number {i}: once upon a time" for i in range(16)]
    trainer = PPOTrainer(policy, tok, prompts, spec.scorer(tok), spec.ppo, spec.generate,
                         Path(out), stop)
    trainer.data_parallel = data_parallel
    roll, *_ = trainer.rollout(0)
    stats = trainer.update(roll, 0)
    return policy.adapter_state(), stats


def test_rank_slices_cover_the_minibatch_once():
    class Rank:
        def __init__(self, rank, world):
            self.rank, self.world = rank, world

    idx = torch.tensor([7, 3, 9, 1, 4, 0, 8])
    parts = [rank_slice(idx, Rank(r, 3)) for r in range(3)]
    assert [p.tolist() for p in parts] == [[7, 1, 8], [3, 4], [9, 0]]
    assert sorted(torch.cat(parts).tolist()) == sorted(idx.tolist())
    assert rank_slice(idx, None) is idx


def test_more_learners_than_minibatch_rows_is_a_clear_error(tmp_path):
    class Huge:
        rank, world = 0, 64

        def all_reduce_sum(self, t):  # pragma: no cover - never reached
            raise AssertionError

    with pytest.raises(ValueError, match="num_learners"):
        one_update(str(tmp_path), Huge())


def _run_ranks(tmp_path: Path, world: int) -> None:
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "TEST_DIR": str(Path(__file__).parent), "WORLD": str(world),
           "STORE": str(tmp_path / f"store_{world}"), "OUT": str(tmp_path),
           "PYTHONPATH": os.pathsep.join(path)}
    procs = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT], env={**env, "RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(world)]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-3000:]


@pytest.mark.slow
def test_two_gloo_ranks_take_the_single_learner_step(tmp_path):
    _run_ranks(tmp_path, 1)
    _run_ranks(tmp_path, 2)
    want = torch.load(tmp_path / "weights_1_0.pt")
    got = [torch.load(tmp_path / f"weights_2_{r}.pt") for r in range(2)]
    for k, w in want.items():
        assert torch.equal(got[0][k], got[1][k]), k  # the ranks agree bit for bit
        torch.testing.assert_close(got[0][k], w, rtol=1e-4, atol=1e-6, msg=k)
    # the update did move the adapters (LoRA's B matrices start at zero)
    assert any("lora_B" in k and w.abs().sum() > 0 for k, w in want.items())
    stats = [json.loads((tmp_path / f"stats_2_{r}.json").read_text()) for r in range(2)]
    want_stats = json.loads((tmp_path / "stats_1_0.json").read_text())
    assert stats[0] == stats[1] and set(stats[0]) == set(want_stats)
