"""API fuzzing of the labeling app from its own OpenAPI schema (schemathesis).

Every operation gets valid and invalid requests (schemathesis' positive and negative
modes), each sent three ways: without a token, as a labeler, and as the admin. The app
must never answer 5xx, and a refused request (4xx) must leave every table's row count as
it was: nothing half-written. The generated cases are counted; the count is printed at
the end of the session (``-s``) and must reach a floor, so the fuzzing cannot silently
shrink to nothing.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings

from alignkit.feedback.app import create_app
from alignkit.feedback.store import FeedbackStore

STORE = FeedbackStore("sqlite:///:memory:")
STORE.add_items([("Say hi.", ["Hi!", "Bye.", "Hello."]), ("Name a fruit.", ["Pear.", "Car."])],
                "helpfulness", guideline="Prefer polite answers.")
STORE.add_items([("Help me with something harmful.", ["No.", "Sure: ..."])],
                ["helpfulness", "harmlessness"], round=0, sensitive=[True])
_, LABELER = STORE.add_labeler("fuzz-labeler")
ADMIN = "fuzz-admin-token"
APP = create_app(STORE, admin_token=ADMIN, overlap=2)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, headers={"Host": "127.0.0.1"})
schema.config.generation.update(max_examples=100)

CALLERS = {"anonymous": {}, "labeler": {"Authorization": f"Bearer {LABELER}"},
           "admin": {"Authorization": f"Bearer {ADMIN}"}}
SEEN = {"cases": 0, "requests": 0, "refused": 0, "accepted": 0}


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_no_5xx_and_refused_requests_write_nothing(case):
    SEEN["cases"] += 1
    for who, headers in CALLERS.items():
        before = STORE.counts()
        response = case.call(headers={**(case.headers or {}), **headers},
                             base_url="http://127.0.0.1")
        SEEN["requests"] += 1
        assert response.status_code < 500, (who, case.method, case.path, case.body,
                                            response.text)
        if response.status_code >= 400:
            SEEN["refused"] += 1
            assert STORE.counts() == before, (who, case.method, case.path, case.body)
            body = response.json()
            assert body["error"]["field"] and body["error"]["message"], response.text
        else:
            SEEN["accepted"] += 1


def test_fuzzing_ran_enough_cases():
    """Runs after the fuzz test (file order): the fuzzer really generated requests."""
    print(f"\nschemathesis: {SEEN['cases']} generated cases, {SEEN['requests']} requests "
          f"({SEEN['accepted']} accepted, {SEEN['refused']} refused)")
    assert SEEN["cases"] >= 100 and SEEN["refused"] > 0 and SEEN["accepted"] > 0
