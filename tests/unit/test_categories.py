from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.categories import CategoryConfigError, load_categories
from gateway.resources import categories_dir


def test_shipped_categories_are_valid() -> None:
    cats = load_categories(categories_dir())
    assert {"code", "math", "factual", "conversation", "finance_news", "personal", "creative",
            "general"} <= set(cats)
    assert not cats["personal"].cacheable
    assert cats["finance_news"].ttl_seconds <= 900
    assert cats["code"].threshold > cats["conversation"].threshold
    assert all(len(c.exemplars) >= 15 for c in cats.values())


def _copy(tmp_path: Path) -> Path:
    for f in categories_dir().glob("*.yaml"):
        (tmp_path / f.name).write_text(f.read_text())
    return tmp_path


@pytest.mark.parametrize(("edit", "field"), [
    ({"threshold": 1.5}, "threshold"),
    ({"eviction": "fifo"}, "eviction"),
    ({"exemplars": ["just one"]}, "exemplars"),
    ({"ttl_seconds": 0}, "ttl_seconds"),
    ({"surprise": 1}, "surprise"),
    ({"verification": {"slots": ["colours"]}}, "verification.slots"),
])
def test_bad_file_names_file_and_field(tmp_path: Path, edit: dict, field: str) -> None:
    d = _copy(tmp_path)
    data = yaml.safe_load((d / "math.yaml").read_text())
    data.update(edit)
    (d / "math.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(CategoryConfigError) as info:
        load_categories(d)
    assert "math.yaml" in str(info.value)
    assert field in str(info.value)


def test_missing_fallback_and_name_mismatch(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    (d / "general.yaml").rename(d / "other.yaml")
    with pytest.raises(CategoryConfigError, match="'name'"):
        load_categories(d)
    (d / "other.yaml").unlink()
    with pytest.raises(CategoryConfigError, match="general"):
        load_categories(d)


def test_overlay_overrides_without_touching_files(tmp_path: Path) -> None:
    overlay = tmp_path / "o.yaml"
    overlay.write_text(yaml.safe_dump({"code": {"threshold": 0.93}}))
    cats = load_categories(categories_dir(), overlay)
    assert cats["code"].threshold == 0.93
    assert load_categories(categories_dir())["code"].threshold != 0.93
    overlay.write_text(yaml.safe_dump({"nope": {"threshold": 0.9}}))
    with pytest.raises(CategoryConfigError, match="nope"):
        load_categories(categories_dir(), overlay)
