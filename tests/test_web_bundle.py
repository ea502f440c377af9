"""The committed bundle of the upload page (src/haul/web/dist, which every wheel carries) is
exactly what web/build.mjs makes of the sources, so it can never go stale unnoticed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
WEB = REPO / "web"
DIST = REPO / "src" / "haul" / "web" / "dist"
STALE = "the committed bundle is stale: run ./dev setup and commit src/haul/web/dist"


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_the_bundle_is_what_the_sources_build(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not (WEB / "node_modules" / "esbuild").is_dir():
        pytest.fail("Node and web/node_modules are needed to rebuild the page: run ./dev setup")
    fresh = tmp_path / "dist"
    subprocess.run([node, "build.mjs", str(fresh)], cwd=WEB, check=True, capture_output=True)
    built, committed = files(fresh), files(DIST)
    assert {"index.html", "main.js", "hash.worker.js", "style.css"} <= set(built)
    assert sorted(committed) == sorted(built), STALE
    differing = [name for name in built if built[name] != committed[name]]
    assert differing == [], STALE


def _git_changes(*paths: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", *map(str, paths)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def test_a_committed_source_change_comes_with_its_bundle() -> None:
    """Wheels are built from commits: once the page's sources are committed, the bundle in the
    work tree (rebuilt by ./dev setup) must be the committed one too."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    if _git_changes(WEB):
        pytest.skip("the page's sources have uncommitted changes")
    assert _git_changes(DIST) == "", STALE
