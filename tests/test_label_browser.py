"""The real labeler page in headless Chromium: rank three items by keyboard.

Also saves the screenshots shown in the README (docs/labeler.png, docs/admin.png). The
texts are benign on purpose: harmful prompt sets never appear in the labeling UI.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from alignkit.feedback.app import create_app
from alignkit.feedback.serve import BackgroundServer
from alignkit.feedback.simulate import simulate_feedback
from alignkit.feedback.store import FeedbackStore

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
DOCS = Path(__file__).resolve().parents[1] / "docs"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium package"),
]

# Completions listed best first; the simulated labelers' goodness follows that order.
ITEMS = [
    ("How do I keep fresh basil from wilting?",
     ["Trim the stems and stand them in a glass of water at room temperature, loosely "
      "covered with a bag.", "Keep it in the fridge in a sealed box.", "Basil is a herb."]),
    ("Suggest a name for a friendly orange cat.",
     ["Marmalade — warm, sweet and a little sticky, like the cat.", "Cat.", "Number 7."]),
    ("What is a good way to start learning to draw?",
     ["Draw simple objects from life for ten minutes a day and keep every page.",
      "Buy expensive pencils first.", "Drawing is hard."]),
    ("How long should I boil an egg for a runny yolk?",
     ["About six minutes from boiling, then straight into cold water.", "Twenty minutes.",
      "Eggs are round."]),
    ("Give me a tip for a first job interview.",
     ["Prepare two short stories that show how you solved a real problem.",
      "Arrive whenever suits you.", "Interviews exist."]),
    ("How can I make my houseplants happier in winter?",
     ["Move them closer to a bright window and water less often.",
      "Water them twice as much.", "Plants are green."]),
]


def goodness(texts: list[str]) -> np.ndarray:
    score = {c: 1.0 - 0.4 * k for _, comps in ITEMS for k, c in enumerate(comps)}
    return np.array([min(max(score[t], 0.02), 0.98) for t in texts])


@pytest.fixture
def served(tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path}/feedback.db")
    store.add_items(ITEMS, "helpfulness", guideline="Rank from most to least helpful: prefer "
                    "answers that are correct, specific and kind. Ties are allowed.")
    # Other labelers, honestly marked as simulated: two careful ones and one at random.
    simulate_feedback(store, goodness, n_labelers=2, overlap=2, target_agreement=0.85)
    simulate_feedback(store, goodness, n_labelers=1, overlap=1, target_agreement=0.5,
                      name_prefix="simulated-noisy")
    _, token = store.add_labeler("alice")
    with BackgroundServer(create_app(store, admin_token="admin-demo", overlap=4)) as server:
        yield store, server.url, token
    store.close()


def test_labeler_ranks_three_items_by_keyboard(served):
    from playwright.sync_api import sync_playwright

    store, url, token = served
    DOCS.mkdir(exist_ok=True)
    keys = [
        ["1", "1", "3"],  # a tie for first place
        ["ArrowDown", "1", "2", "3"],  # start on the second card
        ["f", "3", "2", "1"],  # flagged, ranked bottom-up
    ]
    shown: list[list[int]] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 820})
        page.goto(f"{url}/label#token={token}")
        page.wait_for_selector("#work:not([hidden]) .card")
        assert "#token" not in page.url  # taken out of the address bar
        previous = ""
        for n, sequence in enumerate(keys, 1):
            # Wait until the next item is on screen (not the one just submitted).
            page.wait_for_function("prev => (document.body.dataset.item || '') !== prev && "
                                   "document.querySelector('.card')", arg=previous)
            previous = page.evaluate("document.body.dataset.item")
            shown.append([int(c) for c in page.locator(".card").evaluate_all(
                "cards => cards.map(c => c.dataset.cid)")])
            for key in sequence:
                page.keyboard.press(key)
            if n == 1:  # the tie, before any "saved" notice
                page.screenshot(path=str(DOCS / "labeler.png"))
            page.keyboard.press("Enter")
            page.wait_for_function("n => document.getElementById('who').textContent"
                                   ".endsWith('ranked ' + n)", arg=n)

        admin = browser.new_page(viewport={"width": 1200, "height": 900})
        admin.goto(f"{url}/admin#token=admin-demo")
        admin.wait_for_selector("#dash:not([hidden]) #labelers tr")
        assert "alice" in admin.locator("#labelers").inner_text()
        admin.screenshot(path=str(DOCS / "admin.png"), full_page=True)
        browser.close()

    mine = [r for r in store.rankings() if r.labeler.name == "alice"]
    assert len(mine) == 3
    a, b, c = shown[0]
    assert mine[0].ranks == {a: 1, b: 1, c: 3} and not mine[0].flagged_unsafe
    a, b, c = shown[1]
    # ArrowDown selects B: 1 -> B, then the next unranked (C) gets 2, then A gets 3.
    assert mine[1].ranks == {b: 1, c: 2, a: 3}
    a, b, c = shown[2]
    assert mine[2].ranks == {a: 3, b: 2, c: 1} and mine[2].flagged_unsafe
    assert all(r.labeler.kind == "human" for r in mine)
    assert (DOCS / "labeler.png").stat().st_size > 10_000
    assert (DOCS / "admin.png").stat().st_size > 10_000
