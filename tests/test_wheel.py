"""A wheel built from a clean copy of the repository (no ./dev, no Node, no npm), installed
without extras into a fresh virtualenv: it serves the upload page with all its assets, answers
--version, and a backend whose library is missing stops `haul serve` with the extra to add."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

import haul
from tests.helpers import free_port, wait_for_port

REPO = Path(__file__).resolve().parent.parent
JAVASCRIPT = {"text/javascript", "application/javascript"}
CONTENT_TYPES = {
    ".html": {"text/html"},
    ".js": JAVASCRIPT,
    ".css": {"text/css"},
    ".map": {"application/json"},
}
DIST = REPO / "src" / "haul" / "web" / "dist"


@dataclass
class Installed:
    wheel: Path
    python: Path
    haul: Path
    work: Path


def clean_copy(target: Path) -> Path:
    """The files a fresh clone would have (tracked, or new and not ignored): no .venv, no
    node_modules, no bundle built on this machine unless it is committed."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the work tree is gone from a commit
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    assert not (target / "web" / "node_modules").exists()
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("wheel")
    source = clean_copy(work / "source")
    wheels = work / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(source)], check=True)
    (wheel,) = wheels.glob("haul-*.whl")
    env = work / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*install, "-c", str(REPO / "constraints.txt"), str(wheel)], check=True)
    return Installed(wheel=wheel, python=python, haul=env / "bin" / "haul", work=work)


def test_the_wheel_carries_the_whole_bundle(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        bundled = {
            name.removeprefix("haul/web/dist/"): wheel.read(name)
            for name in wheel.namelist()
            if name.startswith("haul/web/dist/")
        }
    committed = {path.name: path.read_bytes() for path in DIST.iterdir()}
    assert "index.html" in committed
    assert bundled == committed


def test_installs_without_the_backend_libraries(installed: Installed) -> None:
    probe = "import importlib.util as u; print([m for m in MODULES if u.find_spec(m)])"
    modules = ["haul", "aiobotocore", "asyncpg", "redis"]
    found = subprocess.run(
        [str(installed.python), "-c", f"MODULES = {modules!r}; {probe}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert found == "['haul']"


def test_version(installed: Installed) -> None:
    answer = subprocess.run(
        [str(installed.haul), "--version"], check=True, capture_output=True, text=True
    )
    assert answer.stdout.strip() == f"haul, version {haul.__version__}"


def referenced(url: str, body: str) -> list[str]:
    """What a page or script of the bundle loads: stylesheets, scripts, workers, source maps."""
    names = re.findall(r'(?:src|href)="([^"]+)"', body)
    names += re.findall(r'new URL\("([^"]+)",\s*import\.meta\.url\)', body)
    names += re.findall(r"^//# sourceMappingURL=(\S+)$", body, re.MULTILINE)
    return [urljoin(url, name) for name in names if not name.startswith("data:")]


def test_serves_the_page_and_every_asset(installed: Installed) -> None:
    port = free_port()
    log = installed.work / "serve.log"
    command = [str(installed.haul), "serve", "--host", "127.0.0.1", "--port", str(port),
               "--data-dir", str(installed.work / "data")]  # fmt: skip
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        _wait_until_healthy(port, process, log)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
            page = client.get("/")
            assert page.status_code == 200
            assert page.headers["content-type"].split(";")[0] == "text/html"
            assert "not built" not in page.text
            assert '<script type="module" src="ui/main.js">' in page.text
            seen: set[str] = set()
            pending = referenced(str(page.url), page.text)
            assert len(pending) >= 2  # the stylesheet and the script at least
            while pending:
                url = pending.pop()
                if url in seen:
                    continue
                seen.add(url)
                asset = client.get(url)
                assert asset.status_code == 200, url
                kind = asset.headers["content-type"].split(";")[0]
                assert kind in CONTENT_TYPES[Path(url).suffix], (url, kind)
                if url.endswith(".js"):
                    pending += referenced(url, asset.text)
            assert {Path(url).name for url in seen} >= {
                "main.js",
                "main.js.map",
                "hash.worker.js",
                "hash.worker.js.map",
                "style.css",
            }
    finally:
        process.terminate()
        process.wait(10)


def _wait_until_healthy(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    if not wait_for_port(port, timeout=60, process=process):
        pytest.fail(f"haul serve did not start: {log.read_text()[-2000:]}")


@pytest.mark.parametrize(
    ("command", "options", "extra"),
    [
        ("serve", ["--storage", "s3", "--s3-bucket", "b"], "s3"),
        ("serve", ["--db", "postgresql://127.0.0.1:1/haul"], "postgres"),
        ("serve", ["--locker", "redis", "--redis-url", "redis://127.0.0.1:1"], "redis"),
        ("gc", ["--storage", "s3", "--s3-bucket", "b"], "s3"),
    ],
    ids=["serve-s3", "serve-postgres", "serve-redis", "gc-s3"],
)
def test_a_missing_backend_library_names_its_extra(
    installed: Installed, command: str, options: list[str], extra: str
) -> None:
    data_dir = installed.work / f"data-{command}-{extra}"
    argv = [str(installed.haul), command, "--data-dir", str(data_dir), *options]
    if command == "serve":
        argv += ["--host", "127.0.0.1", "--port", str(free_port())]
    answer = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert answer.returncode != 0
    assert f"pip install 'haul[{extra}]'" in answer.stderr
    assert "Traceback" not in answer.stderr
    assert "serving on" not in answer.stderr
