"""Terminal chat driven by a scripted stdin: replies equal an independent greedy decode."""

import io

import pytest
import torch
import yaml
from rich.console import Console
from typer.testing import CliRunner

from alignkit.chat import ChatOptions, ChatSession, chat_loop
from alignkit.cli import app
from alignkit.config import RunConfig
from alignkit.models.loading import TINY, load_causal_lm, load_tokenizer
from alignkit.models.policy import Policy

NEW = 6


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory with a checkpoint whose adapters visibly change the model."""
    out = tmp_path_factory.mktemp("chat_run")
    cfg = RunConfig.model_validate({"name": "chat-test", "model": {"name": TINY, "lora_r": 4}})
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump()))
    tok = load_tokenizer(TINY)
    policy = Policy(load_causal_lm(TINY, tok, seed=cfg.seed), cfg.model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    step = out / "checkpoints" / "step_00001"
    step.mkdir(parents=True)
    torch.save({"weights": policy.adapter_state(), "step": 1}, step / "state.pt")
    (out / "checkpoints" / "latest").write_text(step.name)
    return out


def reference_reply(run_dir, history: list[dict], adapters: bool) -> str:
    """Greedy decode written independently of chat.py: template, argmax loop, no cache."""
    cfg = RunConfig.model_validate(yaml.safe_load((run_dir / "config.yaml").read_text()))
    tok = load_tokenizer(TINY)
    policy = Policy(load_causal_lm(TINY, tok, seed=cfg.seed), cfg.model)
    state = torch.load(run_dir / "checkpoints/step_00001/state.pt", weights_only=False)
    policy.load_state_dict(state["weights"], strict=False)
    text = tok.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
    new = []
    with torch.no_grad():
        for _ in range(NEW):
            if adapters:
                logits = policy.lm(input_ids=ids).logits
            else:
                with policy.reference():
                    logits = policy.lm(input_ids=ids).logits
            nxt = int(logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            new.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return tok.decode(new, skip_special_tokens=True).strip()


@pytest.fixture(scope="module")
def session(run_dir):
    return ChatSession.from_run(run_dir, ChatOptions(max_new_tokens=NEW), compare_base=True)


def test_two_turns_match_independent_greedy_decode(session, run_dir):
    session.reset()
    first = session.reply("Hello there")
    second = session.reply("Tell me more")
    h1 = [{"role": "user", "content": "Hello there"}]
    assert first["aligned"] == reference_reply(run_dir, h1, adapters=True)
    assert first["base"] == reference_reply(run_dir, h1, adapters=False)
    assert first["aligned"] != first["base"]  # the comparison shows what training changed
    h2 = h1 + [{"role": "assistant", "content": first["aligned"]},
               {"role": "user", "content": "Tell me more"}]
    assert second["aligned"] == reference_reply(run_dir, h2, adapters=True)
    # each side keeps its own conversation
    assert session.history["base"][1]["content"] == first["base"]
    assert len(session.history["aligned"]) == 4


def test_loop_quits_resets_and_prints_both_sides(session):
    session.reset()
    session.turns = 0
    buf = io.StringIO()
    console = Console(file=buf, width=400, color_system=None)
    script = io.StringIO("Hi\n\n/reset\n/bogus\nHi\n/quit\nnever read\n")
    assert chat_loop(session, script, console) == 2
    out = buf.getvalue()
    assert "conversation cleared" in out and "unknown command '/bogus'" in out
    assert "aligned" in out and "base (adapters off)" in out
    assert "never read" not in out and "bye (2 turns)" in out
    assert len(session.history["aligned"]) == 2  # reset dropped the first exchange


def test_sampling_is_seeded(session):
    session.opts = ChatOptions(max_new_tokens=NEW, temperature=1.0, seed=3)
    try:
        runs = []
        for _ in range(2):
            session.reset()
            session.turns = 0
            runs.append(session.reply("Hello")["aligned"])
        assert runs[0] == runs[1]
    finally:
        session.opts = ChatOptions(max_new_tokens=NEW)


def test_cli_with_scripted_stdin_until_eof(run_dir):
    res = CliRunner().invoke(app, ["chat", "--model", str(run_dir), "--max-new-tokens",
                                   str(NEW)], input="Hello there\n")
    assert res.exit_code == 0, res.output
    expected = reference_reply(run_dir, [{"role": "user", "content": "Hello there"}], True)
    assert "bot> " in res.output and "bye (1 turns)" in res.output
    assert expected.split()[0] in res.output


def test_cli_errors_are_one_line(run_dir, tmp_path):
    res = CliRunner().invoke(app, ["chat", "--model", str(run_dir), "--compare", "gpt4"])
    assert res.exit_code == 2 and "only 'base'" in res.output
    res = CliRunner().invoke(app, ["chat", "--model", str(tmp_path)], input="/quit\n")
    assert res.exit_code == 2 and "not a run directory" in res.output
