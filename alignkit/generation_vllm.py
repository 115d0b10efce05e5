"""PPO rollouts sampled by vLLM (optional; ``generate.engine: vllm``).

vLLM only picks the tokens. Its log-probs come from other kernels (and bf16), so PPO's
"old" log-probs — and the values — are recomputed by one forward of the policy itself, as
OpenRLHF does: the ratio is then exactly 1 before the first update. The policy's LoRA
adapter reaches vLLM as a PEFT folder written after each update (a few MB) and passed as a
new ``LoRARequest``; the base weights are loaded once. vLLM is not a dependency: it is
imported when this engine is built, and nothing else needs it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import Tensor

from alignkit.generation import Generation
from alignkit.models.policy import Policy
from alignkit.rl.rollout import response_forward


def _vllm():
    try:
        import vllm
        from vllm.lora.request import LoRARequest
    except ImportError as e:
        raise RuntimeError("generate.engine 'vllm' needs vLLM on a CUDA machine — "
                           "`pip install vllm`, or set generate.engine=native") from e
    return vllm, LoRARequest


class VLLMSampler:
    """Samples like ``generation.sample`` (same arguments, same ``Generation``) with vLLM."""

    def __init__(self, policy: Policy, model_path: str, adapter_dir: Path,
                 gpu_memory: float = 0.3, seed: int = 0) -> None:
        if not policy.use_lora:
            raise ValueError("generate.engine 'vllm' needs model.use_lora: true — only the "
                             "adapter travels to vLLM after each update")
        vllm, self._lora_request = _vllm()
        self._sampling_params = vllm.SamplingParams
        lora = policy.lm.peft_config["default"]
        self.llm = vllm.LLM(model=model_path, dtype="bfloat16", seed=seed,
                            gpu_memory_utilization=gpu_memory, enable_lora=True,
                            max_lora_rank=max(8, lora.r))
        self.adapter_dir = Path(adapter_dir)
        self.version: int | None = None
        self._request = None

    def sync(self, policy: Policy, version: int) -> None:
        """Hand vLLM the adapter of ``version`` (once per version)."""
        if version == self.version:
            return
        path = self.adapter_dir / f"v{version:05d}"
        policy.lm.save_pretrained(path)
        for old in self.adapter_dir.glob("v*"):  # keep this one and the one before
            if old.name < f"v{version - 1:05d}":
                shutil.rmtree(old, ignore_errors=True)
        # a fresh name and id per version: vLLM caches adapters by id
        self._request = self._lora_request(f"alignkit-v{version}", version + 1, str(path))
        self.version = version

    @torch.no_grad()
    def sample(self, policy: Policy, query_ids: Tensor, query_mask: Tensor,
               max_new_tokens: int, stop_ids: list[int], pad_id: int,
               temperature: float = 1.0, top_p: float = 1.0, seed: int = 0) -> Generation:
        prompts = [{"prompt_token_ids": ids[m.bool()].tolist()}
                   for ids, m in zip(query_ids, query_mask, strict=True)]
        params = [self._sampling_params(temperature=temperature, top_p=top_p,
                                         max_tokens=max_new_tokens, stop_token_ids=stop_ids,
                                         seed=seed * 1_000_003 + i, detokenize=False)
                  for i in range(len(prompts))]
        outs = self.llm.generate(prompts, params, use_tqdm=False, lora_request=self._request)
        rows, ended = [], []
        for out in outs:
            c = out.outputs[0]
            toks = list(c.token_ids)[:max_new_tokens]
            stopped = c.finish_reason == "stop"
            if stopped and (not toks or toks[-1] not in stop_ids):  # the stop token is ours
                toks = (toks + [c.stop_reason if isinstance(c.stop_reason, int)
                                else stop_ids[0]])[:max_new_tokens]
            rows.append(toks)
            ended.append(stopped)
        return completions_to_generation(policy, query_ids, query_mask, rows, ended, pad_id,
                                         temperature)


def completions_to_generation(policy: Policy, query_ids: Tensor, query_mask: Tensor,
                              rows: list[list[int]], ended: list[bool], pad_id: int,
                              temperature: float) -> Generation:
    """Token lists from any sampler → a ``Generation`` whose log-probs and values are the
    policy's own (one forward with the adapters on)."""
    width = max(1, max(len(r) for r in rows))
    dev = policy.device
    response = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width)
    for i, r in enumerate(rows):
        response[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1.0
    q, qm, response, mask = (query_ids.to(dev), query_mask.to(dev), response.to(dev),
                             mask.to(dev))
    logp, _, values = response_forward(policy, q, qm, response, mask, temperature,
                                       with_values=True)
    return Generation(query_ids=q, query_mask=qm, response_ids=response, response_mask=mask,
                      logprobs=logp * mask, values=values * mask,
                      ended=torch.tensor(ended, dtype=torch.bool, device=dev))


def make_sampler(engine: str, policy: Policy, model_name: str, adapter_dir: Path,
                 gpu_memory: float = 0.3, seed: int = 0) -> VLLMSampler | None:
    """The rollout sampler ``generate.engine`` asks for; None = alignkit's own."""
    if engine == "native":
        return None
    from alignkit.models.loading import model_folder

    return VLLMSampler(policy, model_folder(model_name), adapter_dir, gpu_memory, seed)
