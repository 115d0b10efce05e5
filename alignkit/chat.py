"""Talk to a run's aligned policy in the terminal, optionally beside the base model.

The base model is the same module with adapters disabled (the PPO reference), so the
side-by-side view shows exactly what training changed, at no extra memory. Each side
keeps its own conversation: the base model never sees the aligned model's replies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from rich.console import Console
from rich.table import Table
from rich.text import Text

from alignkit.export import RunPolicy, load_run_policy

QUIT = ("/quit", "/exit")
HELP = "commands: /reset clears the conversation, /quit (or Ctrl-D) ends"


class LineSource(Protocol):
    def readline(self) -> str: ...


@dataclass
class ChatOptions:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0
    template: bool = True  # chat template when the tokenizer has one, else raw text

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1 (got {self.max_new_tokens})")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, 0 = greedy (got {self.temperature})")


@dataclass
class ChatSession:
    """A loaded policy and one conversation per side (aligned, and base when comparing)."""

    rp: RunPolicy
    opts: ChatOptions = field(default_factory=ChatOptions)
    compare_base: bool = False
    history: dict[str, list[dict[str, str]]] = field(
        default_factory=lambda: {"aligned": [], "base": []})
    turns: int = 0

    @classmethod
    def from_run(cls, run_dir: str | Path, opts: ChatOptions | None = None,
                 compare_base: bool = False) -> ChatSession:
        return cls(load_run_policy(run_dir), opts or ChatOptions(), compare_base)

    @property
    def sides(self) -> tuple[str, ...]:
        return ("aligned", "base") if self.compare_base else ("aligned",)

    def reset(self) -> None:
        for h in self.history.values():
            h.clear()

    def prompt_ids(self, messages: list[dict[str, str]]) -> torch.Tensor:
        """Token ids of the conversation so far, cut from the left to fit the context."""
        tok = self.rp.tokenizer
        if self.opts.template and tok.chat_template:
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = "\n".join(m["content"] for m in messages)
        ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
        limit = getattr(self.rp.policy.causal.config, "max_position_embeddings", 2048)
        return ids[:, -max(1, limit - self.opts.max_new_tokens):].to(self.rp.policy.device)

    @torch.no_grad()
    def generate(self, messages: list[dict[str, str]], base: bool = False) -> str:
        """One reply: greedy at temperature 0, else seeded sampling (reproducible)."""
        ids = self.prompt_ids(messages)
        pol, tok, o = self.rp.policy, self.rp.tokenizer, self.opts
        kwargs: dict = {"max_new_tokens": o.max_new_tokens, "eos_token_id": self.rp.stop_ids,
                        "pad_token_id": tok.pad_token_id, "do_sample": o.temperature > 0}
        if o.temperature > 0:
            kwargs.update(temperature=o.temperature, top_p=o.top_p, top_k=0)
            torch.manual_seed(o.seed + self.turns)
        mode = pol.reference() if base else pol.merged()
        with mode:
            out = pol.lm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
        return tok.decode(out[0, ids.size(1):], skip_special_tokens=True).strip()

    def reply(self, user: str) -> dict[str, str]:
        """Answer on every side; each side's history grows by the user turn and its reply."""
        answers = {}
        for side in self.sides:
            h = self.history[side]
            h.append({"role": "user", "content": user})
            answers[side] = self.generate(h, base=side == "base")
            h.append({"role": "assistant", "content": answers[side]})
        self.turns += 1
        return answers


def chat_loop(session: ChatSession, lines: LineSource, console: Console) -> int:
    """Read user lines until /quit or end of input; returns the number of turns answered."""
    name = session.rp.cfg.name
    console.print(f"[bold]chat[/bold] with run '{name}' ({session.rp.cfg.model.name}"
                  f"{', beside the base model' if session.compare_base else ''}) — {HELP}")
    while True:
        console.print("[bold cyan]you>[/bold cyan] ", end="")
        line = lines.readline()
        if not line:  # EOF (Ctrl-D or the end of a script)
            console.print()
            break
        text = line.strip()
        if not text:
            continue
        if text in QUIT:
            break
        if text == "/reset":
            session.reset()
            console.print("[dim]conversation cleared")
            continue
        if text.startswith("/"):
            console.print(f"[yellow]unknown command {text!r}[/yellow] — {HELP}")
            continue
        answers = session.reply(text)
        if session.compare_base:
            table = Table(show_header=True, expand=True)
            table.add_column("aligned")
            table.add_column("base (adapters off)")
            table.add_row(Text(answers["aligned"]), Text(answers["base"]))
            console.print(table)
        else:
            console.print(Text.assemble(("bot> ", "bold green"), answers["aligned"]))
    console.print(f"[dim]bye ({session.turns} turns)")
    return session.turns
