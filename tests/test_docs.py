"""The documentation site builds with warnings as errors, and its generated parts cover what they describe.

The build here uses Sphinx's ``dummy`` builder: it reads every page, runs autodoc (imports the packages) and the
docs' own extension, and resolves every link and image, but writes no HTML, which is the documented HTML build's
cost less the writing. The HTML build itself: ``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


# Python deprecation warnings of Sphinx's own API, raised inside napoleon and myst-parser (not Sphinx build warnings,
# which -W makes errors).
@pytest.mark.filterwarnings("ignore::sphinx.deprecation.RemovedInSphinx11Warning")
def test_the_docs_build_without_warnings(tmp_path: Path) -> None:
    from sphinx.cmd.build import build_main

    warnings = tmp_path / "warnings.txt"
    status = build_main(
        ["-W", "--keep-going", "-E", "-q", "-b", "dummy", "-w", str(warnings), str(DOCS), str(tmp_path / "out")]
    )
    assert status == 0, warnings.read_text()


def test_every_env_of_every_split_is_pictured_on_the_splits_page() -> None:
    sys.path.insert(0, str(DOCS / "scripts"))
    try:
        from render_splits import picture_name, pictures
    finally:
        sys.path.remove(str(DOCS / "scripts"))
    page = (DOCS / "splits.md").read_text(encoding="utf-8")
    for config_path in sorted((ROOT / "configs" / "env").glob("*.yaml")):
        config = yaml.safe_load(config_path.read_text())
        for _, env_id, seed in pictures(config):
            name = picture_name(config["name"], env_id, seed)
            assert (DOCS / "_static" / "splits" / name).is_file(), f"run docs/scripts/render_splits.py: no {name}"
            assert f"(_static/splits/{name})" in page, f"docs/splits.md does not show {name}"


def test_every_config_key_has_a_docstring_for_the_reference() -> None:
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        from config_reference import SCHEMA, field_docs, rows_for
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    classes = field_docs(SCHEMA.read_text(encoding="utf-8"))
    for schema in ("TrainSchema", "EvalSchema"):
        rows = rows_for(schema, classes)
        assert {"seed", "env"} <= {key for key, _ in rows}
        assert all(doc.strip() for _, doc in rows), [key for key, doc in rows if not doc.strip()]
