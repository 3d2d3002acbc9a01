"""Categories: loaded from ``categories/*.yaml`` (data, not code) and used to classify queries.

Classification costs no extra model call: the query's embedding (already computed for the
search) is compared with each category's exemplars; the category score is the mean of its
``TOP_N`` best exemplar similarities. Below ``min_similarity`` the query goes to ``general``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.embedding import Vectors

FALLBACK = "general"
TOP_N = 3

SlotKind = Literal[
    "numbers", "entities", "languages", "identifiers", "quoted", "dates", "contrast", "relations",
    "negation",
]
ALL_SLOTS: tuple[SlotKind, ...] = (
    "numbers", "entities", "languages", "identifiers", "quoted", "dates", "contrast", "relations",
    "negation",
)


class CategoryConfigError(ValueError):
    """A category file is wrong; the message names the file and the field."""


class Verification(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    slots: list[SlotKind] = Field(default_factory=lambda: list(ALL_SLOTS))
    # The calibrated verifier (gateway/cache/verifier/calibrated.py) instead of the rules'
    # vetoes: serve a candidate when P(right) >= 1 - max_wrong_rate, or >= min_probability, the
    # operating point `semcache tune --max-wrong-rate` measured on labelled pairs (it wins).
    max_wrong_rate: float | None = Field(None, gt=0.0, lt=1.0)
    min_probability: float | None = Field(None, ge=0.0, le=1.0)
    # P(right) from the learned verifier (gateway/cache/verifier/learned.py: a cross-encoder
    # beside the cosine) instead of the calibrated logistic; needs an operating point above
    learned: bool = False
    # The cross-encoder beside the slot rules (learned.py, ``Gate``): a candidate it judges
    # different is refused although no rule fired, and a rule's veto is overruled where it is
    # sure the two ask the same. With an operating point above, the probability decides instead
    # (rules and this gate step aside).
    cross_encoder: bool = False

    @model_validator(mode="after")
    def _learned_needs_a_point(self) -> Verification:
        if self.learned and self.max_wrong_rate is None and self.min_probability is None:
            raise ValueError("verification.learned needs an operating point: max_wrong_rate "
                             "or min_probability")
        return self


class Adaptive(BaseModel):
    """Bounds for load-aware adaptation (docs/ADAPTIVE.md). At low load the category uses its
    own ``threshold`` and ``ttl_seconds`` (the strict end); at full backend load it moves to
    ``threshold_min`` and ``ttl_max_seconds`` (the relaxed end), never past them."""

    model_config = ConfigDict(extra="forbid")
    threshold_min: float = Field(ge=0.0, le=1.0)
    ttl_max_seconds: int | None = Field(None, gt=0, description="None: the TTL never adapts.")


class Category(BaseModel):
    """One category. ``threshold`` is the cosine similarity (-1..1, 1 = same direction) a stored
    query needs to be a candidate for a hit; candidates are then verified (``verification``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = Field(min_length=1)
    exemplars: list[str] = Field(min_length=15)
    threshold: float = Field(ge=0.0, le=1.0)
    ttl_seconds: int = Field(gt=0)
    quota: int = Field(ge=1)
    eviction: Literal["lru", "lfu"] = "lru"
    cacheable: bool = True
    verification: Verification = Field(default_factory=Verification)
    adaptive: Adaptive | None = None
    hedge: bool = Field(
        False, description="Send the request upstream while the lookup runs; cancel on a hit."
    )

    @model_validator(mode="after")
    def _exemplars_not_blank(self) -> Category:
        if any(not e.strip() for e in self.exemplars):
            raise ValueError("exemplars must not be blank")
        if self.adaptive is not None:
            if self.adaptive.threshold_min > self.threshold:
                raise ValueError("adaptive.threshold_min must not exceed threshold")
            ttl_max = self.adaptive.ttl_max_seconds
            if ttl_max is not None and ttl_max < self.ttl_seconds:
                raise ValueError("adaptive.ttl_max_seconds must not be below ttl_seconds")
        return self


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"field '{loc}': {err['msg']}")
    return "; ".join(parts)


def load_categories(directory: Path, overlay: Path | None = None) -> dict[str, Category]:
    files = sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml"))
    if not files:
        raise CategoryConfigError(f"{directory}: no category files (*.yaml)")
    cats: dict[str, Category] = {}
    for path in files:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise CategoryConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise CategoryConfigError(f"{path}: must be a mapping of fields")
        try:
            cat = Category.model_validate(data)
        except ValidationError as exc:
            raise CategoryConfigError(f"{path}: {_describe(exc)}") from exc
        if cat.name != path.stem:
            raise CategoryConfigError(f"{path}: field 'name' is {cat.name!r}, file is {path.stem!r}")
        cats[cat.name] = cat
    if FALLBACK not in cats:
        raise CategoryConfigError(f"{directory}: the fallback category '{FALLBACK}' is missing")
    if overlay is not None:
        cats = apply_overlay(cats, overlay)
    return cats


def apply_overlay(cats: dict[str, Category], path: Path) -> dict[str, Category]:
    """Per-category overrides (e.g. thresholds written by ``semcache tune``)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CategoryConfigError(f"{path}: cannot read overlay: {exc}") from exc
    if not isinstance(data, dict):
        raise CategoryConfigError(f"{path}: overlay must map category names to fields")
    out = dict(cats)
    for name, fields in data.items():
        if name not in cats:
            raise CategoryConfigError(f"{path}: field '{name}': no such category")
        if not isinstance(fields, dict):
            raise CategoryConfigError(f"{path}: field '{name}': must be a mapping")
        try:
            out[name] = Category.model_validate({**cats[name].model_dump(), **fields})
        except ValidationError as exc:
            raise CategoryConfigError(f"{path}: {name}: {_describe(exc)}") from exc
    return out


class Classifier:
    def __init__(
        self, categories: dict[str, Category], exemplar_vectors: dict[str, Vectors],
        min_similarity: float,
    ):
        self.categories = categories
        self.min_similarity = min_similarity
        self._names = list(exemplar_vectors)
        # all exemplars in one matrix; row r of category c lands in cell (c, r) of a padded
        # grid (empty cells -inf), so scoring is one product, one sort and one mean
        mats = [np.asarray(exemplar_vectors[n], dtype=np.float32) for n in self._names]
        self._all = np.concatenate(mats) if mats else np.zeros((0, 1), np.float32)
        width = max((len(m) for m in mats), default=0)
        self._cells = np.concatenate([
            np.arange(len(m)) + c * width for c, m in enumerate(mats)
        ]).astype(np.intp) if mats else np.zeros(0, np.intp)
        self._grid_shape = (len(mats), width)
        # a category's mean is over its own top min(TOP_N, size) exemplars: the last cells of
        # its sorted row
        take = np.array([min(TOP_N, len(m)) for m in mats], dtype=np.float32)
        self._top = np.arange(width)[None, :] >= (width - take)[:, None]
        self._take = take

    def scores(self, vec: Vectors) -> dict[str, float]:
        grid = np.full(self._grid_shape, -np.inf, dtype=np.float32)
        grid.flat[self._cells] = self._all @ vec
        grid.sort(axis=1)
        means = np.where(self._top, grid, 0.0).sum(axis=1) / self._take
        return dict(zip(self._names, means.tolist(), strict=True))

    def classify(self, vec: Vectors) -> tuple[str, float]:
        return self.ranked(vec)[0]

    def ranked(self, vec: Vectors, margin: float = 0.0) -> list[tuple[str, float]]:
        """The best category first, then those scoring within ``margin`` of it. A paraphrase
        near a category boundary can land on either side; searching both keeps it findable."""
        scores = self.scores(vec)
        order = sorted(scores, key=scores.__getitem__, reverse=True)
        top = scores[order[0]]
        if top < self.min_similarity:
            near = [(FALLBACK, scores.get(FALLBACK, top))]
            near += [(n, scores[n]) for n in order if n != FALLBACK and scores[n] >= top - margin]
            return near
        out = [(n, scores[n]) for n in order if scores[n] >= top - margin]
        if top - margin < self.min_similarity and FALLBACK not in dict(out):
            out.append((FALLBACK, scores.get(FALLBACK, top)))
        return out
