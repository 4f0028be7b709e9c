#!/usr/bin/env python3
"""One-off: move the import names ``agents``, ``envs`` and ``experiments`` under ``rims_rl`` (``rims_rl.agents``, ...).

The folders stay where they are; ``rims_rl/agents`` etc. become links to them (as ``rims_rl/configs`` links to
``configs/``), so one import namespace ships in the wheel and the checkout sees the same module tree on disk.

Run it from the repository root of the merged tree (clean, links allowed), then refresh the editable install (its
finder still maps the old top-level names), check, and commit::

    .venv/bin/python .ci/rename_namespace.py    # rewrites tracked files, links rims_rl/<pkg>, runs ruff on them
    .venv/bin/pip install -q -c constraints.txt -e ".[dev]" --no-deps
    git diff --stat; .venv/bin/python .ci/rename_namespace.py   # a second run rewrites 0 files
    .venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy && .venv/bin/python -m pytest
    git add -A && git commit -m "Import names: agents, envs, experiments move under rims_rl (.ci/rename_namespace.py)"

Lines it pushes past the line length are reflowed in docstrings and comments; any left in code strings or doctests
are listed by ruff at the end (exit status 1) and need a hand edit.

It is idempotent (a second run changes nothing) and touches only module references:

- import statements anywhere (code, doctests, Markdown code, docstrings): ``from agents.ppo import X``,
  ``import sys, envs``, ``>>> from agents import RecurrentPPO``;
- dotted paths whose next name is a real submodule or a name defined in the package's ``__init__``:
  ``experiments.config.ConfigError`` in doctest output, ``"experiments.train:main"`` in ``[project.scripts]``,
  ``python -m experiments.train``, ``:class:`envs.Split```, ``entry_point="envs.memory:CueMemoryEnv"``,
  ``_target_: agents.RecurrentPPO`` in YAML;
- ``pyproject.toml``: the packages found (``include``), mypy's ``files`` and pytest's ``testpaths``.

Words (``the envs``, ``n_envs``), folder paths (``experiments/report/``), attributes (``self.envs.x``) and config keys
(``env:``) are left alone, and so are recorded outputs (any path under a ``results/`` folder). Delete this script
once its commit is on main.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

NAMESPACE = "rims_rl"
PACKAGES = ("agents", "envs", "experiments")
SUFFIXES = {".py", ".md", ".rst", ".yaml", ".yml", ".toml", ".cfg", ".txt", ".ini", ".sh"}
ROOT = Path(__file__).resolve().parent.parent
SELF = Path(__file__).resolve()
LINE_LENGTH = int(re.findall(r"line-length\s*=\s*(\d+)", (ROOT / "pyproject.toml").read_text())[0])


def known_names(package: Path) -> set[str]:
    """The names ``package.<name>`` can refer to: its submodules and what its ``__init__.py`` defines or imports."""
    names = {p.stem for p in package.glob("*.py")} | {p.name for p in package.iterdir() if (p / "__init__.py").exists()}
    names |= {"__all__", "__file__", "__name__", "__path__", "__version__", "__main__"}
    tree = ast.parse((package / "__init__.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node in tree.body:
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets) and node.value is not None:
                value = ast.literal_eval(node.value)
                names |= set(value)
    names.discard("annotations")  # from __future__
    return names


PKG = "|".join(PACKAGES)
#: ``from agents[.x] import`` (the module path is rewritten whatever follows the package).
FROM_IMPORT = re.compile(rf"(?<![\w.])(from\s+)({PKG})(?=(?:\.[\w.]+)?\s+import\b)")
#: ``import a[.b] [as c][, ...]`` ending the statement (``;``, a quote, a backtick, ``)``, ``#`` or the line's end).
IMPORT_LIST = re.compile(
    r"(?<![\w.])(import\s+)([\w.]+(?:\s+as\s+\w+)?(?:\s*,\s*[\w.]+(?:\s+as\s+\w+)?)*)(?=\s*(?:[;\"'`)#\\]|$))",
    re.MULTILINE,
)


def rewrite(text: str, known: dict[str, set[str]]) -> str:
    """The text with its module references under :data:`NAMESPACE` (idempotent)."""
    text = FROM_IMPORT.sub(lambda m: f"{m[1]}{NAMESPACE}.{m[2]}", text)

    def import_list(m: re.Match[str]) -> str:
        items = re.split(r"(\s*,\s*)", m[2])
        for i in range(0, len(items), 2):
            if items[i].split(".")[0].split()[0] in PACKAGES:
                items[i] = f"{NAMESPACE}.{items[i]}"
        return m[1] + "".join(items)

    text = IMPORT_LIST.sub(import_list, text)
    for package, names in known.items():
        dotted = re.compile(rf"(?<![\w.\-/$@]){package}\.({'|'.join(sorted(names, key=len, reverse=True))})(?!\w)")
        text = dotted.sub(lambda m, p=package: f"{NAMESPACE}.{p}.{m[1]}", text)
    return text


def drop_items(text: str, key: str, items: dict[str, list[str]]) -> str:
    """In TOML lines ``key = [...]``, replace each quoted item in ``items`` by its list (empty: drop it)."""

    def fix(m: re.Match[str]) -> str:
        values = re.findall(r'"([^"]*)"', m[2])
        new: list[str] = []
        for value in values:
            for item in items.get(value, [value]):
                if item not in new:
                    new.append(item)
        return m[1] + "[" + ", ".join(f'"{v}"' for v in new) + "]"

    return re.sub(rf"^({re.escape(key)}\s*=\s*)\[([^\]\n]*)\]", fix, text, flags=re.MULTILINE)


def pyproject(text: str) -> str:
    """Only ``rims_rl*`` is a package to find; mypy checks ``rims_rl`` (the links included); pytest collects the
    doctests of ``rims_rl``'s own modules and of the packages it collected before, by their new paths."""
    text = drop_items(text, "include", {f"{p}*": [] for p in PACKAGES})
    text = drop_items(text, "files", {p: [] for p in PACKAGES})
    own = [f"{NAMESPACE}/*.py", *(f"{NAMESPACE}/{d.name}" for d in sorted((ROOT / NAMESPACE).iterdir()) if _own(d))]
    return drop_items(text, "testpaths", {NAMESPACE: own, **{p: [f"{NAMESPACE}/{p}"] for p in PACKAGES}})


def _own(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and (path / "__init__.py").exists()


ITEM = re.compile(r"(:param |:return|:raises|:type |- |\* |>>>|\.\.\. |[0-9]+\. |\"\"\"|''\'|#|$)")


def reflow(text: str, limit: int) -> str:
    """Lines of docstrings and comments that the longer names pushed past ``limit``: their last words move to the
    start of the paragraph's next line (or to a new line after them), cascading down the paragraph."""
    lines = text.split("\n")
    strings = _docstring_lines(text)
    i = 0
    while i < len(lines):
        line = lines[i]
        comment = line.lstrip().startswith("#")
        if len(line) <= limit or not (i + 1 in strings or comment) or line.lstrip().startswith((">>>", "...")):
            i += 1
            continue
        indent = len(line) - len(line.lstrip())
        body = line.lstrip()
        words = line.split(" ")
        keep = len(words)
        while keep > indent + 2 and len(" ".join(words[:keep])) > limit:
            keep -= 1
        head, moved = " ".join(words[:keep]).rstrip(), " ".join(words[keep:]).strip()
        if not moved or not head.strip() or head.strip() in ('"""', "#"):
            i += 1
            continue
        prefix = "# " if comment else ""
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        nxt_indent = len(nxt) - len(nxt.lstrip())
        nxt_body = nxt.lstrip()[2:] if comment and nxt.lstrip().startswith("# ") else nxt.lstrip()
        continues = (
            nxt.strip() != ""
            and nxt_indent >= indent
            and (not comment or nxt.lstrip().startswith("# "))
            and (comment or i + 2 in strings)
            and not ITEM.match(nxt_body)
            and not head.rstrip().endswith(("::", '"""'))
        )
        lines[i] = head
        if continues:
            lines[i + 1] = " " * nxt_indent + prefix + moved + " " + nxt_body
        else:
            extra = 4 if body.startswith((":param", ":return", ":raises")) else 2 if body.startswith("- ") else 0
            lines.insert(i + 1, " " * (indent + extra) + prefix + moved)
            strings = {n + 1 if n > i + 1 else n for n in strings} | {i + 2}
        i += 1
    return "\n".join(lines)


def _docstring_lines(text: str) -> set[int]:
    """The 1-based numbers of the lines of string statements (docstrings), not of strings inside code."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return set()
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return lines


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    files = []
    for name in out.split("\0"):
        path = ROOT / name
        if not name or path.is_symlink() or not path.is_file() or path.resolve() == SELF:
            continue
        if "results" in Path(name).parts[:-1]:  # recorded outputs
            continue
        if path.suffix in SUFFIXES or name.startswith(".ci/"):
            files.append(path)
    return files


def main() -> int:
    os.chdir(ROOT)
    for package in PACKAGES:
        link = ROOT / NAMESPACE / package
        if not link.is_symlink():
            link.symlink_to(Path("..") / package)
    known = {p: known_names(ROOT / p) for p in PACKAGES}
    changed = []
    for path in tracked_files():
        text = path.read_text(encoding="utf-8")
        new = rewrite(text, known)
        if path.name == "pyproject.toml":
            new = pyproject(new)
        if path.suffix == ".py" and new != text:
            new = reflow(new, LINE_LENGTH)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    subprocess.run(["git", "add", *(f"{NAMESPACE}/{p}" for p in PACKAGES)], cwd=ROOT, check=True)
    print(f"rewrote {len(changed)} files; linked {', '.join(f'{NAMESPACE}/{p}' for p in PACKAGES)}")
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    py = [str(p.relative_to(ROOT)) for p in changed if p.suffix == ".py"]
    if ruff and py:  # the imports' order changes with their names; lines grow by len("rims_rl.")
        subprocess.run([ruff, "check", "--fix", "-q", "--select", "I001", *py], cwd=ROOT, check=False)
        subprocess.run([ruff, "format", "-q", *py], cwd=ROOT, check=False)
        return subprocess.run([ruff, "check", "-q", *py], cwd=ROOT, check=False).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
