"""A Sphinx directive, ``config-reference``, that writes the CLI's config reference from the schema dataclasses of
``experiments/schema.py``: every key (dotted), its default where the schema has one, and the field's docstring.

The docstrings are read from the source with :mod:`ast` (dataclass fields keep no docstring at runtime), so the page
is as current as the schema and cannot drift from it::

    ```{config-reference} TrainSchema
    ```
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

SCHEMA = Path(__file__).resolve().parents[2] / "experiments" / "schema.py"


def field_docs(source: str) -> dict[str, list[tuple[str, str, str]]]:
    """:param source: the text of ``experiments/schema.py``
    :return: class name -> its fields in order, each (name, annotation, docstring)
    """
    classes: dict[str, list[tuple[str, str, str]]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        rows: list[tuple[str, str, str]] = []
        body = node.body
        for index, item in enumerate(body):
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                following = body[index + 1] if index + 1 < len(body) else None
                doc = ""
                if (
                    isinstance(following, ast.Expr)
                    and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)
                ):
                    doc = " ".join(following.value.value.split())
                rows.append((item.target.id, ast.unparse(item.annotation), doc))
        classes[node.name] = rows
    return classes


def section_of(annotation: str, classes: dict[str, Any]) -> str | None:
    """:return: the schema class a field's annotation names (a nested section), else None"""
    return annotation if annotation in classes else None


def rows_for(schema: str, classes: dict[str, list[tuple[str, str, str]]], prefix: str = "") -> list[tuple[str, str]]:
    """:return: (dotted key, docstring) for every field of ``schema``, nested sections expanded; a config group's
    field (``model``, ``agent``, ``env``, ``agent.policy_kwargs``) is followed by its section's fields"""
    from dataclasses import fields

    import rims_rl.experiments.schema as schema_module

    out: list[tuple[str, str]] = []
    dataclass = getattr(schema_module, schema)
    metadata = {f.name: f.metadata for f in fields(dataclass)}
    for name, annotation, doc in classes[schema]:
        key = prefix + name
        nested = section_of(annotation, classes)
        group_schema = metadata.get(name, {}).get("schema")
        if nested is None and group_schema is not None:
            nested = group_schema.__name__
        if nested is not None:
            out.append((key, doc + " " + f"(section ``{nested}``)"))
            out.extend(rows_for(nested, classes, key + "."))
        else:
            out.append((key, doc))
    return out


def markdown(rest: str) -> str:
    """:return: a docstring's inline reST as MyST Markdown (the directive is used in Markdown pages): literals
    ````x```` -> ```x```, roles ``:class:`x``` -> ``{class}`x```, and ``|`` escaped for the table cell"""
    text = re.sub(r"``([^`]+)``", r"`\1`", rest)
    text = re.sub(r":(\w+):`([^`]+)`", r"{\1}`\2`", text)
    return text.replace("|", "\\|")


class ConfigReference(SphinxDirective):
    """``config-reference <SchemaClass>``: a table of the schema's keys and their docstrings (in a Markdown page)."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        self.env.note_dependency(str(SCHEMA))
        classes = field_docs(SCHEMA.read_text(encoding="utf-8"))
        schema = self.arguments[0]
        if schema not in classes:
            raise self.error(f"no class {schema!r} in {SCHEMA}")
        lines = ["| key | meaning |", "|---|---|"]
        for key, doc in rows_for(schema, classes):
            lines.append(f"| `{key}` | {markdown(doc) or '(undocumented)'} |")
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source=str(SCHEMA)), self.content_offset, container)
        return container.children


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("config-reference", ConfigReference)
    return {"version": "1", "parallel_read_safe": True}
