"""The vLLM rollout engine against a stand-in of vLLM's offline API (vLLM needs a CUDA
machine and is not installed here): token lists become a Generation whose log-probs are the
policy's own (PPO's first ratio is exactly 1), stop tokens are handled whichever way vLLM
reports them, and each update's LoRA adapter reaches vLLM as a new request."""

import sys
import types
from pathlib import Path

import pytest
import torch

from alignkit.config import GenerateConfig, ModelConfig, PPOConfig
from alignkit.distributed.workers import WorkerSpec, build_policy
from alignkit.generation_vllm import VLLMSampler, make_sampler
from alignkit.rl.ppo import PPOTrainer
from alignkit.rl.rollout import response_forward

EOS = 2


class FakeLLM:
    """vllm.LLM's surface: generate(prompts, params, use_tqdm, lora_request)."""

    instances: list["FakeLLM"] = []

    def __init__(self, **kwargs):
        self.kwargs, self.requests = kwargs, []
        FakeLLM.instances.append(self)

    def generate(self, prompts, params, use_tqdm=True, lora_request=None):
        assert lora_request is not None and (Path(lora_request.lora_path)
                                             / "adapter_config.json").exists()
        self.requests.append(lora_request)
        outs = []
        for i, (p, sp) in enumerate(zip(prompts, params, strict=True)):
            assert p["prompt_token_ids"] and sp.kw["stop_token_ids"] == [EOS]
            kind = i % 3
            if kind == 0:  # stopped, stop token included in token_ids
                c = types.SimpleNamespace(token_ids=[11, 12, EOS], finish_reason="stop",
                                          stop_reason=None)
            elif kind == 1:  # stopped by stop_token_ids, token reported only as the reason
                c = types.SimpleNamespace(token_ids=[13], finish_reason="stop",
                                          stop_reason=EOS)
            else:  # ran to max_tokens
                c = types.SimpleNamespace(token_ids=list(range(20, 20 + sp.kw["max_tokens"])),
                                          finish_reason="length", stop_reason=None)
            outs.append(types.SimpleNamespace(outputs=[c]))
        return outs


class FakeSamplingParams:
    def __init__(self, **kw):
        self.kw = kw


class FakeLoRARequest:
    def __init__(self, lora_name, lora_int_id, lora_path):
        self.lora_name, self.lora_int_id, self.lora_path = lora_name, lora_int_id, lora_path


@pytest.fixture
def fake_vllm(monkeypatch):
    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = FakeLLM, FakeSamplingParams
    lora, request = types.ModuleType("vllm.lora"), types.ModuleType("vllm.lora.request")
    request.LoRARequest = FakeLoRARequest
    for name, mod in (("vllm", vllm), ("vllm.lora", lora), ("vllm.lora.request", request)):
        monkeypatch.setitem(sys.modules, name, mod)
    FakeLLM.instances.clear()
    return vllm


def _spec() -> WorkerSpec:
    return WorkerSpec(model=ModelConfig(name="tiny-llama", lora_r=8, lora_alpha=16),
                      ppo=PPOConfig(steps=2, prompts_per_step=3, samples_per_prompt=2, lr=2e-3,
                                    epochs=1, minibatches=1, checkpoint_every=1000),
                      generate=GenerateConfig(max_new_tokens=5))


def test_vllm_rollouts_are_scored_by_the_policy_and_follow_its_adapter(fake_vllm, tmp_path):
    spec = _spec()
    tok, policy, stop = build_policy(spec)
    assert stop == [EOS]
    sampler = VLLMSampler(policy, "some/model", tmp_path / "adapters", gpu_memory=0.25)
    llm = FakeLLM.instances[0]
    assert llm.kwargs["enable_lora"] and llm.kwargs["gpu_memory_utilization"] == 0.25
    prompts = [f"Story number {i}: once upon a time" for i in range(8)]
    trainer = PPOTrainer(policy, tok, prompts, spec.scorer(tok), spec.ppo, spec.generate,
                         tmp_path, stop, sampler=sampler)

    roll, _, texts, stats = trainer.rollout(0)
    lengths = roll.response_mask.sum(1).tolist()
    assert lengths == [3, 2, 5, 3, 2, 5]  # stop token counted; the 'length' rows are full
    assert roll.response_ids[1, :2].tolist() == [13, EOS]  # stop token appended from reason
    assert stats["val/num_eos_tokens"] == 4 and texts[2] != ""
    with torch.no_grad():
        want, _, _ = response_forward(policy, roll.query_ids, roll.query_mask,
                                      roll.response_ids, roll.response_mask, 1.0)
    torch.testing.assert_close(roll.logprobs, want * roll.response_mask)
    first = trainer.update(roll, 0)
    assert first["val/ratio"] == pytest.approx(1.0, abs=1e-6)  # old log-probs = the policy's

    trainer.step = 1  # after an update vLLM gets the new adapter under a new id
    trainer.rollout(1)
    versions = [(r.lora_name, r.lora_int_id) for r in llm.requests]
    assert versions == [("alignkit-v0", 1), ("alignkit-v1", 2)]
    saved = sorted(p.name for p in (tmp_path / "adapters").iterdir())
    assert saved == ["v00000", "v00001"]


def test_vllm_engine_refuses_what_it_cannot_do(fake_vllm, tmp_path, monkeypatch):
    spec = _spec()
    _, policy, _ = build_policy(spec)
    assert make_sampler("native", policy, "tiny-llama", tmp_path) is None
    with pytest.raises(ValueError, match="exists only in memory"):
        make_sampler("vllm", policy, "tiny-llama", tmp_path)
    full = build_policy(WorkerSpec(model=ModelConfig(name="tiny-llama", use_lora=False),
                                   ppo=spec.ppo, generate=spec.generate))[1]
    with pytest.raises(ValueError, match="use_lora"):
        VLLMSampler(full, "some/model", tmp_path)
    monkeypatch.setitem(sys.modules, "vllm", None)  # not installed
    with pytest.raises(RuntimeError, match="pip install vllm"):
        VLLMSampler(policy, "some/model", tmp_path)
