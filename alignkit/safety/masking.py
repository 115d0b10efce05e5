"""Masking harmful words in text a person will read (reports, red-team tables).

Readers need to see *that* a completion was offensive and roughly how, without the report
itself becoming the offensive text: flagged words keep their first letter, the rest of
their letters become bullets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

MASK_THRESHOLD = 0.5  # profanity_check probability at which a word is masked
MASK_CHAR = "•"


_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
_WORD_HARM: dict[str, float] = {}


def mask_harmful(text: str) -> str:
    """Mask the words a profanity judge flags (probability ≥ 0.5): ``idiot`` → ``i••••``.

    The report shows base and aligned completions side by side; readers need to see *that*
    a completion was offensive and roughly how, without the report itself becoming the
    offensive text. Only letters are replaced, so length and punctuation survive.
    """
    return mask_texts([text])[0]


def mask_texts(texts: Sequence[str]) -> list[str]:
    """``mask_harmful`` over many texts with one judge call for all their words."""
    words = {m.group(0).lower() for t in texts for m in _WORD.finditer(t)}
    _score_words(words)

    def sub(m: re.Match[str]) -> str:
        w = m.group(0)
        return _mask_word(w) if _WORD_HARM.get(w.lower(), 0.0) >= MASK_THRESHOLD else w

    return [_WORD.sub(sub, t) for t in texts]


def _score_words(words: Iterable[str]) -> None:
    """Score unseen words with profanity_check in one batch and remember them."""
    todo = sorted(w for w in words if w not in _WORD_HARM)
    if not todo:
        return
    from profanity_check import predict_prob

    for w, p in zip(todo, predict_prob(todo), strict=True):
        _WORD_HARM[w] = float(p)


def _mask_word(word: str) -> str:
    return word[0] + "".join(MASK_CHAR if c.isalpha() else c for c in word[1:])
