"""The run config: every number has bounds, and every bad input is one line naming the field.

Regression tests for issue 14 defects 5-7, then property-based tests (hypothesis): any YAML
document, any bytes and any ``--set`` either load within the documented bounds or raise
ConfigError (one line naming the field) — never another exception.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import UnionType
from typing import Union, get_args, get_origin

import annotated_types as at
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from typer.testing import CliRunner

from alignkit.config import ConfigError, RunConfig, load_config, parse_override

ROOT = Path(__file__).resolve().parents[1]


def _numeric(annotation: object) -> bool:
    """int or float (bool excluded), possibly inside ``X | None``."""
    if annotation in (int, float):
        return True
    if get_origin(annotation) in (Union, UnionType):
        return any(_numeric(a) for a in get_args(annotation) if a is not type(None))
    return False


def _sections(model: type[BaseModel] = RunConfig, prefix: str = ""):
    """(dotted name, model class) of every section, the root included."""
    yield prefix, model
    for name, f in model.model_fields.items():
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
            yield from _sections(f.annotation, f"{prefix}{name}.")


def _numeric_fields():
    for prefix, model in _sections():
        for name, f in model.model_fields.items():
            if _numeric(f.annotation):
                yield f"{prefix}{name}", f


NUMERIC = list(_numeric_fields())


def _bounds(field) -> tuple[float | None, float | None]:
    lo = hi = None
    for m in field.metadata:
        if isinstance(m, (at.Ge, at.Gt)):
            lo = m.ge if isinstance(m, at.Ge) else m.gt
        if isinstance(m, (at.Le, at.Lt)):
            hi = m.le if isinstance(m, at.Le) else m.lt
    return lo, hi


def _within(value: float, field) -> bool:
    for m in field.metadata:
        if isinstance(m, at.Ge) and not value >= m.ge:
            return False
        if isinstance(m, at.Gt) and not value > m.gt:
            return False
        if isinstance(m, at.Le) and not value <= m.le:
            return False
        if isinstance(m, at.Lt) and not value < m.lt:
            return False
    return True


def _one_line(e: pytest.ExceptionInfo, field: str) -> None:
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert field in msg, msg


# --- defect 5: bounds ------------------------------------------------------------------------

def test_there_are_many_numeric_fields():
    assert len(NUMERIC) > 80  # the walk finds the nested sections, not just the root


@pytest.mark.parametrize("name", [n for n, _ in NUMERIC])
def test_every_numeric_field_has_a_lower_bound(name):
    field = dict(NUMERIC)[name]
    assert _bounds(field)[0] is not None, f"{name} has no lower bound"
    assert field.description, f"{name} has no one-line reason"


@pytest.mark.parametrize("key, value", [
    # the values the attack tried
    ("ppo.steps", -5), ("generate.k", 1), ("feedback.overlap", 0), ("generate.top_p", 7),
    ("threads", 0), ("feedback.port", 70000), ("reward.eval_fraction", 1.5),
    # and the others
    ("generate.top_p", 0), ("generate.temperature", 0), ("generate.prompts", 0),
    ("generate.max_new_tokens", 0), ("generate.batch_size", 0), ("model.lora_r", 0),
    ("model.lora_alpha", 0), ("model.lora_dropout", 1.0), ("model.tiny_layers", 0),
    ("model.tiny_hidden", 12), ("data.eval_prompts", 0), ("data.max_train_prompts", 0),
    ("data.seed", -1), ("feedback.labelers", 0), ("feedback.target_agreement", 1.0),
    ("feedback.ai_principles", 0), ("feedback.filter_threshold", 2), ("feedback.port", -1),
    ("feedback.wait_timeout_s", -1), ("reward.epochs", 0), ("reward.lr", 0),
    ("reward.batch_prompts", 0), ("reward.eval_fraction", -0.1), ("reward.eval_fraction", 1),
    ("reward.max_length", 0), ("reward.center_coef", -1), ("reward.seed", 2**32),
    ("ppo.prompts_per_step", 0), ("ppo.samples_per_prompt", 0), ("ppo.epochs", 0),
    ("ppo.minibatches", 0), ("ppo.lr", -1e-3), ("ppo.max_grad_norm", 0), ("ppo.kl_coef", -0.1),
    ("ppo.target_kl", 0), ("ppo.kl_horizon", 0), ("ppo.gamma", 1.5), ("ppo.lam", -0.1),
    ("ppo.cliprange", 0), ("ppo.cliprange_value", 0), ("ppo.vf_coef", -1),
    ("ppo.score_clip", 0), ("ppo.missing_eos_penalty", -1), ("ppo.checkpoint_every", 0),
    ("dpo.beta", 0), ("dpo.lr", 0), ("dpo.epochs", 0), ("dpo.batch_size", 0),
    ("dpo.max_prompt_tokens", 0), ("dpo.max_completion_tokens", 0),
    ("evaluate.samples_per_prompt", 0), ("evaluate.batch_size", 0), ("evaluate.bootstrap", 10),
    ("evaluate.show_samples", -1), ("target_gold", 1.5), ("seed", -3),
    ("guard.gold_stall", 5), ("guard.raise_beta_factor", 1.0), ("guard.length_drift", -1),
    ("distributed.worker_cpus", 0), ("distributed.max_weight_lag", -1),
])
def test_out_of_bounds_value_is_one_line_naming_the_field(key, value):
    with pytest.raises(ConfigError) as e:
        load_config(None, {key: value})
    _one_line(e, key)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("key", ["ppo.kl_coef", "guard.kl_budget", "reward.center_coef",
                                 "distributed.worker_gpus"])
def test_infinite_and_nan_floats_are_refused(key, value):
    with pytest.raises(ConfigError) as e:
        load_config(None, {key: value})
    _one_line(e, key)


@pytest.mark.parametrize("overrides, field", [
    ({"ppo.algorithm": "rloo", "ppo.samples_per_prompt": 1}, "ppo.samples_per_prompt"),
    ({"feedback.labelers": 2, "feedback.overlap": 3}, "feedback.overlap"),
    ({"ppo.prompts_per_step": 2, "ppo.samples_per_prompt": 2, "ppo.minibatches": 5},
     "ppo.minibatches"),
    ({"guard.raise_beta_min": 2.0, "guard.max_beta": 1.0}, "guard.raise_beta_min"),
    ({"ppo.unsafe_threshold": -2.0}, "ppo.unsafe_threshold"),  # needs cost_unsafe_only
])
def test_cross_field_bounds_name_the_field(overrides, field):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    _one_line(e, field)


def test_human_feedback_may_ask_more_rankings_than_simulated_labelers():
    cfg = load_config(None, {"feedback.source": "human", "feedback.overlap": 5})
    assert cfg.feedback.overlap == 5


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")))
def test_shipped_configs_load(path):
    assert isinstance(load_config(path), RunConfig)


def test_port_zero_means_a_free_port():
    assert load_config(None, {"feedback.port": 0}).feedback.port == 0


# --- defect 6: a non-UTF-8 file ------------------------------------------------------------------

def test_non_utf8_config_is_one_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_bytes(b"ppo:\n  steps: 3\nname: caf\xe9\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    _one_line(e, "UTF-8")
    assert str(p) in str(e.value)


def test_non_utf8_config_on_the_command_line_is_one_line(tmp_path):
    from alignkit.cli import app

    p = tmp_path / "c.yaml"
    p.write_bytes(b"\xff\xfe\x00garbage")
    r = CliRunner().invoke(app, ["run", "--config", str(p), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2, r.output
    assert "UTF-8" in r.output and "Traceback" not in r.output
    assert isinstance(r.exception, SystemExit)  # typer.Exit(2), nothing uncaught
    assert not (tmp_path / "o").exists()  # writes nothing


# --- defect 7: --set that collides with a value ------------------------------------------------

@pytest.mark.parametrize("sets, field", [
    (["ppo=5", "ppo.steps=3"], "ppo"),
    (["model.name.x=1"], "model.name"),
    (["steps.x=1"], "steps"),
    (["ppo.steps.x=1"], "ppo.steps"),
    (["nope.x=1"], "nope"),
    (["ppo.steps=[1"], "ppo.steps"),
    (["ppo..steps=1"], "ppo..steps"),
    (["=3"], "="),
    (["ppo.steps"], "ppo.steps"),
])
def test_colliding_or_malformed_set_is_one_line(sets, field):
    with pytest.raises(ConfigError) as e:
        load_config(None, dict(parse_override(s) for s in sets))
    _one_line(e, field)


def test_colliding_set_on_the_command_line_is_one_line(tmp_path):
    from alignkit.cli import app

    for sets, field in ((["ppo=5", "ppo.steps=3"], "ppo"), (["model.name.x=1"], "model.name")):
        args = ["run", "--config", str(ROOT / "configs/tiny.yaml"), "--out", str(tmp_path / "o")]
        for s in sets:
            args += ["--set", s]
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
        assert f"'{field}'" in r.output and "Traceback" not in r.output
        assert not (tmp_path / "o").exists()


def test_set_into_a_yaml_scalar_section_is_one_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("ppo: 5\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, {"ppo.steps": 3})
    _one_line(e, "ppo")


def test_set_overrides_the_yaml_value(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("ppo:\n  steps: 7\n  lr: 0.01\n")
    cfg = load_config(p, dict(parse_override(s) for s in ["ppo.steps=3", "generate.k=5"]))
    assert (cfg.ppo.steps, cfg.ppo.lr, cfg.generate.k) == (3, 0.01, 5)


# --- property-based: nothing but a RunConfig within bounds or one ConfigError -------------------

FIELD_NAMES = [n for n, _ in NUMERIC] + [
    f"{p}{n}" for p, m in _sections() for n in m.model_fields] + ["nope", "ppo.nope", ""]
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(-3, 70000)
           | st.floats(allow_nan=True, allow_infinity=True) | st.floats(-2, 2)
           | st.text(max_size=12) | st.sampled_from(["ppo", "rloo", "k3", "human", "1e400"]))
VALUES = st.recursive(SCALARS, lambda c: st.lists(c, max_size=3)
                      | st.dictionaries(st.text(max_size=8) | st.sampled_from(FIELD_NAMES), c,
                                        max_size=3), max_leaves=8)


def _nest(flat: dict[str, object]) -> dict:
    """{'ppo.steps': 3} → {'ppo': {'steps': 3}}, last writer wins on collisions."""
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = value
    return out


def _check_loaded(cfg: RunConfig) -> None:
    """Every numeric field of a loaded config lies within its documented bounds."""
    for name, field in NUMERIC:
        value: object = cfg
        for part in name.split("."):
            value = getattr(value, part)
        if value is None:
            continue
        assert isinstance(value, (int, float)) and not isinstance(value, bool), name
        assert math.isfinite(value), name
        assert _within(value, field), f"{name}={value!r} is outside its bounds"


def _check_error(e: ConfigError) -> None:
    msg = str(e)
    assert msg and "\n" not in msg and "'" in msg, msg  # one line that quotes a name


def _load_or_refuse(path: Path | None, overrides: dict | None = None) -> None:
    try:
        cfg = load_config(path, overrides)
    except ConfigError as e:
        _check_error(e)
    else:
        _check_loaded(cfg)


PROPERTY = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@PROPERTY
@given(st.dictionaries(st.sampled_from(FIELD_NAMES), VALUES, max_size=6))
def test_any_yaml_document_loads_within_bounds_or_fails_in_one_line(tmp_path, flat):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(_nest(flat), allow_unicode=True))
    _load_or_refuse(p)


@PROPERTY
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_load_within_bounds_or_fail_in_one_line(tmp_path, blob):
    p = tmp_path / "c.yaml"
    p.write_bytes(blob)
    _load_or_refuse(p)


@PROPERTY
@given(st.lists(st.tuples(st.sampled_from(FIELD_NAMES) | st.text(max_size=10),
                          st.text(max_size=12) | VALUES.map(lambda v: yaml.safe_dump(v).strip())),
                max_size=4),
       st.booleans())
def test_any_set_loads_within_bounds_or_fails_in_one_line(tmp_path, sets, with_file):
    path = ROOT / "configs/tiny.yaml" if with_file else None
    try:
        overrides = dict(parse_override(f"{k}={v}") for k, v in sets)
    except ConfigError as e:
        _check_error(e)
        return
    _load_or_refuse(path, overrides)
