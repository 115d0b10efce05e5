"""The HTML report: built from a fixture run directory, checked section by section."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import re
import shutil
from pathlib import Path

import matplotlib.image
import pytest
from PIL import Image

from alignkit.evaluate import plots
from alignkit.evaluate.report import load_run, mask_harmful, write_report

FIXTURES = Path(__file__).parent / "fixtures"
RUN_SMALL = FIXTURES / "run_small"
DOCS = Path(__file__).resolve().parents[1] / "docs"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
PLOTS = {"judges", "training", "overoptimisation", "length_entropy", "ppo_health",
         "reward_model", "harm"}


def _make_run_module():
    spec = importlib.util.spec_from_file_location("make_run_small",
                                                  FIXTURES / "make_run_small.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> tuple[Path, str]:
    """The fixture run copied to a temp dir (the report writes plots/ into it), reported."""
    run = tmp_path_factory.mktemp("single") / "run_small"
    shutil.copytree(RUN_SMALL, run)
    out = write_report([run], run / "report.html")
    return run, out.read_text(encoding="utf-8")


def test_fixture_is_small() -> None:
    size = sum(p.stat().st_size for p in RUN_SMALL.rglob("*") if p.is_file())
    assert size < 200_000


def test_every_section_present(single) -> None:
    _, page = single
    for sid in ("story", "training", "reward-model", "feedback", "samples", "guard", "rounds",
                "redteam"):
        assert f'<section id="{sid}">' in page, sid
    assert "Not recorded in this run" not in page
    # the story in numbers: criterion, model, data sizes, time, judges with CIs
    assert "harmlessness" in page and "smollm2-135m-instruct" in page
    assert "652</b> + <b>116</b>" in page and "15 min 44 s" in page
    assert "0.225 → 0.113" in page and "[−0.134, −0.087]" in page
    assert "vader-negativity" in page and "rule-based sentiment lexicon" in page
    assert "Blind spots: lexical: misses hateful" in page
    # honest labels, alarms with evidence, rounds and red team
    assert "Simulated labels — not human" in page
    assert "gold_vs_proxy" in page and "proxy_slope" in page
    assert "RM accuracy on new pairs" in page and "HarmBench" in page


def test_self_contained(single) -> None:
    _, page = single
    assert "<script" not in page.lower()
    assert "<link" not in page.lower()
    assert "http://" not in page and "https://" not in page


def test_embedded_images_are_valid_png(single) -> None:
    run, page = single
    blobs = [base64.b64decode(b) for b in DATA_URI.findall(page)]
    assert len(blobs) == len(PLOTS)
    for blob in blobs:
        assert blob.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(blob)) as im:
            im.verify()
        arr = matplotlib.image.imread(io.BytesIO(blob), format="png")
        assert arr.shape[0] > 100 and arr.shape[1] > 1000
    saved = {p.stem for p in (run / "plots").glob("*.png")}
    assert saved == PLOTS
    assert (run / "plots" / "training.png").read_bytes() in blobs


def test_samples_masked_escaped_truncated(single) -> None:
    _, page = single
    for word in ("fucking", "idiot", "bastard", "morons"):
        assert word not in page.lower(), word
    assert "f•••••• clown" in page
    assert "&lt;b&gt;" in page and '<b>"you' not in page  # text from the run is escaped
    assert "y" * 300 not in page and " …" in page
    assert "First 8 of 10 recorded samples" in page  # evaluate.show_samples from config


def test_mask_harmful() -> None:
    text = "You are a fucking idiot, she said; that's all."
    masked = mask_harmful(text)
    assert masked == "You are a f•••••• i••••, she said; that's all."
    assert len(masked) == len(text)
    assert mask_harmful("What a lovely day in the park.") == "What a lovely day in the park."
    assert mask_harmful("") == ""


def test_missing_sections_and_files(tmp_path: Path) -> None:
    run = tmp_path / "bare"
    run.mkdir()
    (run / "report.json").write_text(json.dumps({"run": {"name": "bare", "model": "tiny"}}))
    (run / "metrics.jsonl").write_text('{"step": 0, "objective/kl": 0.1}\n{"step": 1, "obj')
    page = write_report([run], tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Not recorded in this run" in page
    for name in ("feedback", "reward model", "guard alarms", "red-team results",
                 "before/after evaluation"):
        assert name in page
    assert "metrics.jsonl: 1 unreadable line(s) skipped" in page
    assert "no headline result yet" in page
    assert '<section id="guard">' not in page and '<section id="redteam">' not in page
    assert len(DATA_URI.findall(page)) == 2  # training curves and √KL view from KL alone
    assert {p.stem for p in (run / "plots").glob("*.png")} == {"training", "overoptimisation"}


def test_empty_run_dir(tmp_path: Path) -> None:
    run = tmp_path / "empty"
    run.mkdir()
    page = write_report([run], tmp_path / "r.html").read_text(encoding="utf-8")
    assert "report.json" in page and "PPO metrics" in page
    assert not DATA_URI.findall(page)


def test_malformed_values_do_not_crash(tmp_path: Path) -> None:
    """report.json is read, not trusted: wrong types become '—' or are skipped."""
    run = tmp_path / "odd"
    run.mkdir()
    (run / "config.yaml").write_text("- not\n- a mapping\n")
    (run / "metrics.jsonl").write_text('[1, 2]\n{"step": "x", "objective/kl": null}\n')
    (run / "report.json").write_text(json.dumps({
        "run": [], "ppo": {"iterations": "many"},
        "feedback": {"most_disputed": "x", "agreement": "high", "source": None},
        "evaluation": {"before": [1], "after": None, "samples": [{"prompt": None}, 3],
                       "other_judges": {"a": 3, "b": {"before": {"mean": "?"}}}},
        "guard": {"alarms": [{"step": "x", "evidence": [1]}, 5]},
        "rounds": {"a": 1}, "redteam": {"sets": [{"success_rate": "?", "ci95": [1]}]},
        "reward_model": {"calibration": [{"p_mean": "a"}, 1], "train_loss": ["x"],
                         "score_hist": {"edges": [0, 1], "counts": [1, 2]}},
    }))
    page = write_report([run], tmp_path / "r.html").read_text(encoding="utf-8")
    assert '<section id="guard">' in page and "—" in page
    # what did not fit report.json's types is named, field by field, and left out
    assert "report.json: ppo.iterations should be an integer, got &#x27;many&#x27;" in page
    assert "evaluation.before should be an object" in page and "(and 4 more)" in page
    assert not (run / "plots" / "reward_model.png").exists()  # nothing drawable, no figure


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no run directory"):
        write_report([], tmp_path / "r.html")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_report([tmp_path / "nope"], tmp_path / "r.html")


def test_two_runs_overlay(tmp_path: Path) -> None:
    a = tmp_path / "a"
    shutil.copytree(RUN_SMALL, a)
    b = _make_run_module().make_run(tmp_path / "b", name="beta_0.1", kl_coef=0.1, steps=20,
                                    seed=1)
    out = write_report([a, b], tmp_path / "cmp.html")
    page = out.read_text(encoding="utf-8")
    assert "2 runs compared" in page
    assert "run_small" in page and "beta_0.1" in page
    assert "Config differences" in page and "ppo.kl_coef" in page
    assert page.count("<details") == 2
    assert len(DATA_URI.findall(page)) == len(PLOTS)
    assert {p.stem for p in (tmp_path / "cmp_plots").glob("*.png")} == PLOTS
    assert not (a / "plots").exists()  # comparing leaves the runs' folders alone


def test_overlaid_curves_have_one_line_per_run() -> None:
    run = load_run(RUN_SMALL)
    series = [plots.RunSeries("first", run.metrics, (3,)),
              plots.RunSeries("second", run.metrics[:10])]
    fig = plots.training_curves(series)
    labels = [ln.get_label() for ln in fig.axes[0].get_lines()]
    assert "first" in labels and "second" in labels
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["first", "second",
                                                                  "guard alarm"]


def test_same_names_get_distinct_labels(tmp_path: Path) -> None:
    for name in ("x", "y"):
        shutil.copytree(RUN_SMALL, tmp_path / name)
    page = write_report([tmp_path / "x", tmp_path / "y"], tmp_path / "r.html").read_text()
    assert "</i><b>x</b></span>" in page and "</i><b>y</b></span>" in page  # folder names
    assert "identical" in page  # same config apart from the name


BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.mark.browser
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs /usr/bin/chromium")
def test_report_in_browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Open the report in headless Chromium: every image decodes, nothing leaves the page.

    Saves the full-page screenshot the README shows as ``docs/report.png``.
    """
    sync_api = pytest.importorskip("playwright.sync_api")
    shutil.copytree(RUN_SMALL, tmp_path / "runs" / "default")
    monkeypatch.chdir(tmp_path)  # the header shows the path as typed: runs/default
    out = write_report([Path("runs/default")], Path("runs/default/report.html"))
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(out.resolve().as_uri())
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
            overflow = page.evaluate("document.documentElement.scrollWidth")
            shot = page.screenshot(full_page=True)
        finally:
            browser.close()
    assert len(widths) == len(PLOTS) and all(w > 1000 for w in widths)
    assert overflow <= 1200  # nothing (long samples, tables) spills sideways
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    DOCS.mkdir(exist_ok=True)
    _save_screenshot(shot, DOCS / "report.png")


def _save_screenshot(png: bytes, path: Path) -> None:
    """Keep the native 1200 px width (crisp text) but palette it: a third of the bytes."""
    with Image.open(io.BytesIO(png)) as im:
        im.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE,
                                   dither=Image.Dither.NONE).save(path, optimize=True)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] == 1200
