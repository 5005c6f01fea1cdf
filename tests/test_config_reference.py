"""docs/config.md and the sweep-key table of docs/SWEEPS.md are rendered from the schemas, and stay so.

Regenerate with `python -m harness.config_doc` after changing a config or sweep field.
"""

from __future__ import annotations

import pytest

from harness import config_doc
from harness.config import RunConfig

REGENERATE = "regenerate it with `python -m harness.config_doc` (and commit the result)"


def _all_fields():
    yield from config_doc.every_field(RunConfig)
    for model, prefix in config_doc.sweep_models():
        yield from ((f"sweep file: {key}", info) for key, info in config_doc.every_field(model, prefix))


@pytest.mark.parametrize("path", [config_doc.CONFIG_PAGE, config_doc.SWEEPS_PAGE], ids=lambda p: p.name)
def test_the_generated_pages_match_the_schema(path):
    expected = config_doc.expected_pages()[path]
    actual = path.read_text(encoding="utf-8") if path.exists() else ""
    assert actual == expected, f"{path.relative_to(config_doc.ROOT)} differs from the schema: {REGENERATE}"


def test_every_field_has_a_description():
    missing = [key for key, info in _all_fields() if not (info.description or "").strip()]
    assert not missing, f"fields without a description (add `Field(description=...)`, then {REGENERATE}): {missing}"


def test_every_run_config_key_is_on_the_page():
    page = config_doc.CONFIG_PAGE.read_text(encoding="utf-8")
    leaves = [key for key, info in config_doc.every_field(RunConfig) if config_doc.section_model(info) is None]
    assert len(leaves) > 80
    assert [key for key in leaves if f"| `{key}` |" not in page] == []


def test_check_mode_reports_a_stale_page(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "config.md"
    stale.write_text("old\n", encoding="utf-8")
    monkeypatch.setattr(config_doc, "CONFIG_PAGE", stale)
    monkeypatch.setattr(config_doc, "ROOT", tmp_path.parent)
    monkeypatch.setattr(config_doc, "SWEEPS_PAGE", _copy(config_doc.SWEEPS_PAGE, tmp_path / "SWEEPS.md"))
    assert config_doc.main(["--check"]) == 1
    assert stale.read_text(encoding="utf-8") == "old\n"  # --check writes nothing
    assert config_doc.main([]) == 0
    assert stale.read_text(encoding="utf-8") == config_doc.render_config_reference()
    assert config_doc.main(["--check"]) == 0
    assert "config.md" in capsys.readouterr().out


def _copy(source, target):
    target.write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    return target
