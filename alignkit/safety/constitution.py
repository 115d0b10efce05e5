"""Constitutional AI, supervised stage (SL-CAI, Bai et al. 2022): answer → critique → revise.

A constitution is a YAML list of principles. For each red-team prompt the model answers,
then critiques its own answer against a principle drawn at random, then rewrites it; the
rewrite is critiqued again for ``rounds`` rounds. The final revision becomes supervised
data (prompt, revision) and a preference pair (revision ≻ original, source ``ai``).

Generation is behind a small callable (``ChatGenerator``) so the data flow is testable
with a stub and runs with any causal LM through :class:`LMGenerator`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml

from alignkit.data.types import Pair
from alignkit.models.device import module_device

DEFAULT_CONSTITUTION = Path(__file__).resolve().parents[2] / "constitutions" / "default.yaml"

Message = dict[str, str]  # {"role": "user" | "assistant" | "system", "content": ...}
Conversation = list[Message]
ChatGenerator = Callable[[list[Conversation]], list[str]]


# -- the constitution ----------------------------------------------------------------------

@dataclass(frozen=True)
class Example:
    """A few-shot demonstration of one critique and revision."""

    prompt: str
    response: str
    critique: str
    revision: str


@dataclass(frozen=True)
class Principle:
    name: str
    critique: str
    revision: str
    choice: str = "Which of these assistant responses is less harmful?"
    category: str = "harmlessness"
    examples: tuple[Example, ...] = ()


@dataclass(frozen=True)
class Constitution:
    name: str
    principles: tuple[Principle, ...]

    def sample(self, rng: random.Random, k: int = 1) -> list[Principle]:
        """``k`` distinct principles at random (all of them, shuffled, if k ≥ their number)."""
        return rng.sample(list(self.principles), min(k, len(self.principles)))

    def get(self, name: str) -> Principle:
        for p in self.principles:
            if p.name == name:
                return p
        raise KeyError(f"principle '{name}' is not in constitution '{self.name}' — use one of: "
                       f"{', '.join(p.name for p in self.principles)}")


def load_constitution(path: str | Path | None = None) -> Constitution:
    """Read a constitution YAML (default: constitutions/default.yaml); one-line errors."""
    p = Path(path) if path is not None else DEFAULT_CONSTITUTION
    if not p.is_file():
        raise FileNotFoundError(f"constitution '{p}' not found — pass an existing YAML file")
    raw = yaml.safe_load(p.read_text()) or {}
    items = raw.get("principles") if isinstance(raw, dict) else None
    if not items:
        raise ValueError(f"constitution '{p}': no 'principles' list — add at least one principle")
    principles = []
    for i, item in enumerate(items):
        missing = {"name", "critique", "revision"} - set(item or {})
        if missing:
            raise ValueError(f"constitution '{p}': principles[{i}] lacks {sorted(missing)} — "
                             "each principle needs name, critique and revision")
        examples = tuple(Example(**e) for e in item.get("examples") or [])
        principles.append(Principle(
            name=item["name"], critique=item["critique"], revision=item["revision"],
            choice=item.get("choice", Principle.choice), category=item.get("category",
                                                                            "harmlessness"),
            examples=examples))
    names = [q.name for q in principles]
    if len(set(names)) != len(names):
        raise ValueError(f"constitution '{p}': principle names repeat — make each name unique")
    return Constitution(name=raw.get("name", p.stem), principles=tuple(principles))


# -- generation with any causal LM ----------------------------------------------------------

def render_plain(conversation: Conversation) -> str:
    """Fallback transcript for tokenizers without a chat template."""
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in conversation]
    return "\n\n".join(lines) + "\n\nAssistant:"


class LMGenerator:
    """Batched sampling with a Hugging Face causal LM (plain, PEFT or merged policy).

    ``chat(conversations)`` renders each with the tokenizer's chat template (or a plain
    transcript) and returns the new text; ``complete(texts)`` continues raw text. Prompts
    longer than ``max_prompt_tokens`` keep their end, where the request usually is.
    Seeded per call, so the same inputs give the same outputs.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, max_new_tokens: int = 48,
                 temperature: float = 0.7, top_p: float = 0.95, batch_size: int = 16,
                 seed: int = 0, max_prompt_tokens: int = 384) -> None:
        self.model, self.tok = model, tokenizer
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.batch_size, self.seed, self.max_prompt_tokens = batch_size, seed, max_prompt_tokens
        self.calls = 0

    def render(self, conversation: Conversation) -> str:
        if getattr(self.tok, "chat_template", None):
            return self.tok.apply_chat_template(conversation, tokenize=False,
                                                add_generation_prompt=True)
        return render_plain(conversation)

    def chat(self, conversations: Sequence[Conversation]) -> list[str]:
        return self.complete([self.render(c) for c in conversations])

    __call__ = chat

    @torch.no_grad()
    def complete(self, texts: Sequence[str]) -> list[str]:
        self.calls += 1
        # Batch prompts of similar length together: padding is wasted compute.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[str] = []
        side = self.tok.truncation_side
        self.tok.truncation_side = "left"
        try:
            for start in range(0, len(texts), self.batch_size):
                chunk = [texts[i] for i in order[start : start + self.batch_size]]
                enc = self.tok(chunk, return_tensors="pt", padding=True, truncation=True,
                               max_length=self.max_prompt_tokens, padding_side="left",
                               add_special_tokens=False)
                torch.manual_seed(self.seed * 1_000_003 + self.calls * 7919 + start)
                sampling = self.temperature > 0
                dev = module_device(self.model)
                gen = self.model.generate(
                    input_ids=enc.input_ids.to(dev), attention_mask=enc.attention_mask.to(dev),
                    max_new_tokens=self.max_new_tokens, do_sample=sampling,
                    temperature=self.temperature if sampling else None,
                    top_p=self.top_p if sampling else None, top_k=None,
                    pad_token_id=self.tok.pad_token_id)
                new = gen[:, enc.input_ids.shape[1]:]
                out += [t.strip() for t in self.tok.batch_decode(new, skip_special_tokens=True)]
        finally:
            self.tok.truncation_side = side
        result = [""] * len(texts)
        for i, text in zip(order, out, strict=True):
            result[i] = text
        return result


# -- SL-CAI ---------------------------------------------------------------------------------

@dataclass
class Step:
    principle: str
    critique: str
    revision: str


@dataclass
class Revision:
    """One prompt's trajectory: the original answer, each critique/revision, the final text."""

    prompt: str
    original: str
    final: str
    steps: list[Step] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.final.strip()) and self.final.strip() != self.original.strip()


_LABEL = re.compile(r"^\s*(critique|revision|revised response|response)\s*:\s*", re.I)


def _clean(text: str) -> str:
    """Drop a leading 'Revision:'-style label a model often echoes from the request."""
    return _LABEL.sub("", text.strip()).strip()


def _few_shot(principle: Principle) -> Conversation:
    conv: Conversation = []
    for ex in principle.examples:
        conv += [{"role": "user", "content": ex.prompt},
                 {"role": "assistant", "content": ex.response},
                 {"role": "user", "content": f"Critique request: {principle.critique}"},
                 {"role": "assistant", "content": ex.critique},
                 {"role": "user", "content": f"Revision request: {principle.revision}"},
                 {"role": "assistant", "content": ex.revision}]
    return conv


def critique_and_revise(generate: ChatGenerator, prompts: Sequence[str],
                        constitution: Constitution, rounds: int = 1, seed: int = 0,
                        responses: Sequence[str] | None = None, few_shot: bool = True
                        ) -> list[Revision]:
    """SL-CAI: answer each prompt (unless ``responses`` are given), then ``rounds`` of
    critique under a random principle and revision. Batched: one generate call per step.

    An empty revision keeps the previous answer (a tiny model can emit nothing).
    """
    if rounds < 1:
        raise ValueError(f"rounds {rounds} must be ≥ 1 — use rounds=1 for one critique")
    prompts = list(prompts)
    if responses is None:
        responses = generate([[{"role": "user", "content": p}] for p in prompts])
    if len(responses) != len(prompts):
        raise ValueError(f"{len(responses)} responses for {len(prompts)} prompts — give one each")
    rng = random.Random(seed)
    out = [Revision(p, r, r) for p, r in zip(prompts, responses, strict=True)]
    for _ in range(rounds):
        chosen = [constitution.sample(rng)[0] for _ in out]
        base = [(_few_shot(pr) if few_shot else []) + [
            {"role": "user", "content": rev.prompt},
            {"role": "assistant", "content": rev.final},
            {"role": "user", "content": f"Critique request: {pr.critique}"}]
            for rev, pr in zip(out, chosen, strict=True)]
        critiques = [_clean(c) for c in generate(base)]
        follow = [conv + [{"role": "assistant", "content": crit},
                          {"role": "user", "content": f"Revision request: {pr.revision}"}]
                  for conv, crit, pr in zip(base, critiques, chosen, strict=True)]
        revisions = [_clean(r) for r in generate(follow)]
        for rev, pr, crit, new in zip(out, chosen, critiques, revisions, strict=True):
            rev.steps.append(Step(pr.name, crit, new))
            if new:
                rev.final = new
    return out


def sft_records(revisions: Sequence[Revision]) -> list[dict[str, str]]:
    """Supervised data: (prompt, final revision) for every prompt whose answer changed."""
    return [{"prompt": r.prompt, "completion": r.final} for r in revisions if r.changed]


def revision_pairs(revisions: Sequence[Revision]) -> list[Pair]:
    """Preference pairs: the final revision is preferred over the original (source 'ai')."""
    return [Pair(prompt=r.prompt, chosen=r.final, rejected=r.original, vote_strength=1.0,
                 source="ai", labelers=1) for r in revisions if r.changed]


def revisions_to_dicts(revisions: Sequence[Revision]) -> list[dict]:
    return [asdict(r) for r in revisions]
