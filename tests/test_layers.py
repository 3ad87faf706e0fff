"""Every import points downward: stores never imports sync, msupply.identity imports neither."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imports_of(path: Path, packages: set[str]) -> list[str]:
    """`file:line` of each import in `path` (inside functions too) of one of `packages`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if any(name.split(".")[0] in packages for name in names):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_stores_never_imports_sync() -> None:
    offenders = [
        where
        for path in sorted((ROOT / "stores").rglob("*.py"))
        for where in imports_of(path, {"sync"})
    ]
    assert offenders == [], f"stores imports sync (use msupply.identity): {offenders}"


def test_site_identity_imports_neither_app() -> None:
    assert imports_of(ROOT / "msupply" / "identity.py", {"sync", "stores"}) == []
