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
from alignkit.feedback.pairs import rankings_to_pairs
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


def test_keys_reach_the_next_item_while_the_stats_are_still_loading(served):
    """The next item takes keys as soon as it is on screen. The page used to stay busy until
    its labeler stats (/api/me) came back too, so on a loaded machine a quick labeler's keys
    for the new item were dropped (this suite once timed out on it)."""
    from playwright.sync_api import sync_playwright

    store, url, token = served
    held = []  # /api/me requests kept waiting until the end
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 820})
        page.goto(f"{url}/label#token={token}")
        page.wait_for_selector("#work:not([hidden]) .card")
        page.route("**/api/me", lambda route: held.append(route))
        previous = ""
        for _ in range(2):
            page.wait_for_function("prev => (document.body.dataset.item || '') !== prev && "
                                   "document.querySelector('.card')", arg=previous,
                                   timeout=10_000)
            previous = page.evaluate("document.body.dataset.item")
            for key in ["1", "2", "3", "Enter"]:
                page.keyboard.press(key)
        page.wait_for_function("prev => document.body.dataset.item !== prev", arg=previous,
                               timeout=10_000)
        assert held  # the stats of both submissions were still on their way
        for route in held:
            route.continue_()
        browser.close()
    assert len([r for r in store.rankings() if r.labeler.name == "alice"]) == 2


# Two criteria (PKU-SafeRLHF style). The "harmful" prompts are mild stand-ins: what matters
# here is the flow (content warning, opt-out), not the content.
HH_ITEMS = [
    ("How do I get into my neighbour's flat without a key while they are away?",
     ["Use a bump key on the lock: insert it and tap it sharply.",
      "I can't help with entering someone else's home without permission.",
      "Ask your neighbour or the building manager to let you in."]),
    ("Write an insult about my coworker's accent.",
     ["Here is one that will sting: ...", "I won't write insults about someone's accent.",
      "If something about work bothers you, talking to them directly may help."]),
    ("How do I repot a cactus without getting pricked?",
     ["Wrap it in folded newspaper and lift it out.", "Just grab it.", "Cacti are plants."]),
    ("What is a quick healthy breakfast?",
     ["Oats soaked overnight with yoghurt and fruit.", "Skip it.", "Breakfast is a meal."]),
]
HH_SENSITIVE = [True, True, False, False]
HH_GUIDES = {"helpfulness": "Rank from most to least helpful to the person asking.",
             "harmlessness": "Rank from least to most harmful: refusing a harmful request "
                             "is harmless, helping with it is not."}


@pytest.fixture
def served_hh(tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path}/hh.db")
    store.add_items(HH_ITEMS, ["helpfulness", "harmlessness"], guidelines=HH_GUIDES,
                    sensitive=HH_SENSITIVE)
    _, alice = store.add_labeler("alice")
    _, bob = store.add_labeler("bob")
    with BackgroundServer(create_app(store, admin_token="admin-demo", overlap=2)) as server:
        yield store, server.url, alice, bob
    store.close()


def _wait_for_new_item(page, previous: str) -> bool:
    """Wait for the next item (warning or work); True if it opened on the content warning."""
    page.wait_for_function(
        "prev => (document.body.dataset.item || '') !== prev && "
        "(!document.getElementById('warning').hidden || document.querySelector('.card') "
        "&& !document.getElementById('work').hidden)", arg=previous)
    return page.evaluate("document.body.dataset.warning === '1'")


def test_two_criteria_flags_content_warning_and_opt_out(served_hh):
    from playwright.sync_api import sync_playwright

    store, url, alice, bob = served_hh
    texts = {c.id: c.text for it in store.items() for c in it.completions}
    sensitive = {it.id: it.sensitive for it in store.items()}
    shown: list[list[int]] = []
    warned: list[bool] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(f"{url}/label#token={alice}")
        previous = ""
        for n in (1, 2, 3):
            warned.append(_wait_for_new_item(page, previous))
            previous = page.evaluate("document.body.dataset.item")
            if warned[-1]:
                # The prompt stays hidden until the labeler chooses to see it.
                assert page.locator("#work").is_hidden()
                assert page.locator("#warning").is_visible()
                page.keyboard.press("Enter")
            page.wait_for_selector("#work:not([hidden]) .card")
            assert page.evaluate("document.body.dataset.criterion") == "helpfulness"
            shown.append([int(c) for c in page.locator(".card").evaluate_all(
                "cards => cards.map(c => c.dataset.cid)")])
            for key in ["1", "2", "3"]:
                page.keyboard.press(key)
            # All ranked for helpfulness: the page moved on to harmlessness by itself.
            assert page.evaluate("document.body.dataset.criterion") == "harmlessness"
            # Everything ranked: the selection stays on C; ArrowDown wraps to A, U marks it.
            for key in ["3", "2", "1", "ArrowDown", "u"]:
                page.keyboard.press(key)
            if n == 1:
                page.screenshot(path=str(DOCS / "labeler-two-criteria.png"))
            page.keyboard.press("Enter")
            page.wait_for_function("n => document.getElementById('who').textContent"
                                   ".endsWith('ranked ' + n)", arg=n)

        # bob opts out on the first content warning he meets; benign items come through.
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(f"{url}/label#token={bob}")
        previous, bob_saw = "", []
        while True:
            warning = _wait_for_new_item(page, previous)
            # Read before "o": opting out loads the next item by itself, so reading after
            # could already see that one and wait forever for it to change.
            previous = page.evaluate("document.body.dataset.item")
            if warning:
                page.keyboard.press("o")
                page.wait_for_function("() => document.getElementById('who').textContent && "
                                       "document.getElementById('pref').textContent"
                                       ".includes('hidden')")
                break
            bob_saw.append(int(previous))
            for key in ["1", "2", "3", "1", "2", "3", "Enter"]:
                page.keyboard.press(key)
        page.wait_for_function("prev => (document.body.dataset.item || '') !== prev || "
                               "!document.getElementById('empty').hidden", arg=previous)
        while page.locator("#empty").is_hidden():
            assert page.evaluate("document.body.dataset.warning") != "1"
            current = page.evaluate("document.body.dataset.item")
            bob_saw.append(int(current))
            for key in ["1", "2", "3", "1", "2", "3", "Enter"]:
                page.keyboard.press(key)
            page.wait_for_function("prev => (document.body.dataset.item || '') !== prev || "
                                   "!document.getElementById('empty').hidden", arg=current)

        admin = browser.new_page(viewport={"width": 1200, "height": 1000})
        admin.goto(f"{url}/admin#token=admin-demo")
        admin.wait_for_selector("#dash:not([hidden]) #criteria tr")
        table = admin.locator("#criteria").inner_text()
        assert "helpfulness" in table and "harmlessness" in table
        assert "1 labelers opted out" in admin.locator("#sensitive").inner_text()
        browser.close()

    mine = [r for r in store.rankings() if r.labeler.name == "alice"]
    assert len(mine) == 6  # three submissions, each ranked under both criteria
    assert warned == [sensitive[r.item_id] for r in mine[::2]]
    for k, (help_, harm) in enumerate(zip(mine[::2], mine[1::2], strict=True)):
        a, b, c = shown[k]
        assert (help_.criterion, harm.criterion) == ("helpfulness", "harmlessness")
        assert help_.ranks == {a: 1, b: 2, c: 3} and harm.ranks == {a: 3, b: 2, c: 1}
        assert help_.unsafe == harm.unsafe == {a: True, b: False, c: False}
    bobs = store.labeler_by_name("bob")
    assert bobs.avoid_sensitive and not any(sensitive[i] for i in bob_saw[1:])
    assert {r.item_id for r in store.rankings() if r.labeler.name == "bob"} == set(bob_saw)
    pairs = rankings_to_pairs(store, criterion="harmlessness")
    top = [p for p in pairs if p.labelers >= 1 and p.chosen == texts[shown[0][2]]]
    assert top and all(p.criterion == "harmlessness" for p in top)
    assert any(p.rejected_unsafe for p in pairs)
