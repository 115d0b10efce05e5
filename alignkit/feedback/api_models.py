"""The labeling API's request and response bodies (pydantic), as /openapi.json shows them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt


class ErrorBody(BaseModel):
    field: str = Field(description="What was wrong (e.g. 'ranks', 'item_id', 'authorization').")
    message: str = Field(description="One line: what was wrong and how to fix it.")


class ErrorOut(BaseModel):
    error: ErrorBody


class LabelerOut(BaseModel):
    id: int
    name: str
    kind: str
    ranked: int = Field(description="Items this labeler ranked (skips not counted).")
    skipped: int
    avoid_sensitive: bool = Field(description="Opted out of harmful prompts.")


class PreferencesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    avoid_sensitive: StrictBool = Field(description="true: never hand me harmful prompts.")


class CompletionOut(BaseModel):
    id: int = Field(description="Completion id: the key to use in `ranks` and `unsafe`.")
    text: str


class CriterionOut(BaseModel):
    name: str
    guideline: str


class ItemOut(BaseModel):
    id: int
    prompt: str
    criterion: str = Field(description="The first criterion (the only one in single-"
                           "criterion use).")
    guideline: str
    criteria: list[CriterionOut] = Field(description="Rank the completions once for each.")
    sensitive: bool = Field(description="A harmful request: show a content warning first.")
    completions: list[CompletionOut] = Field(
        description="In a random order fixed per labeler and item (position bias control)."
    )


class NextOut(BaseModel):
    item: ItemOut | None = Field(description="null when nothing is left for this labeler.")


class RankingIn(BaseModel):
    """One submission: ``ranks`` for a single-criterion item, or ``rankings`` with every
    criterion of the item; each maps every completion id to 1..K (1 = best)."""

    model_config = ConfigDict(extra="forbid")

    item_id: StrictInt
    # Keys stay strings here: the store refuses '01' next to '1' instead of merging them.
    ranks: dict[str, StrictInt] = Field(
        default_factory=dict,
        description="completion id -> rank; ties share a rank; empty when skipped.",
    )
    rankings: dict[str, dict[str, StrictInt]] | None = Field(
        None, description="criterion -> (completion id -> rank), one entry per criterion of "
        "the item (instead of `ranks`).")
    unsafe: dict[str, StrictBool] | None = Field(
        None, description="completion id -> true (unsafe) / false (safe), per completion.")
    skipped: StrictBool = False
    flagged_unsafe: StrictBool = False


class RankingCreated(BaseModel):
    id: int
    item_id: int
