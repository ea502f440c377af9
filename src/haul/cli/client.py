"""Client commands of the ``haul`` CLI: upload, download, status, rm, ls. A thin layer over
:mod:`haul.client` that imports nothing of the server. A failure is reported as the message of
its HaulClientError (the server's own words), never as a traceback."""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from haul.client import AsyncClient, HaulClientError
from haul.client import Progress as UploadProgress
from haul.client.api import endpoint_for
from haul.client.headers import safe_filename
from haul.client.ietf import PROTOCOLS, pinned_version
from haul.client.state import StateStore
from haul.wire.units import parse_size

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2
T = TypeVar("T")


def _files(paths: tuple[Path, ...]) -> list[tuple[Path, str]]:
    """Every file to send, with the name it is sent under (relative within a directory)."""
    found: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            for item in sorted(p for p in path.rglob("*") if p.is_file()):
                found.append((item, str(item.relative_to(path.parent))))
        else:
            found.append((path, path.name))
    return found


def _bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}", justify="left"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _client_options(f: Any) -> Any:
    """The options every client command shares, handed to the command as one ``connection``
    mapping of AsyncClient keyword arguments."""

    @functools.wraps(f)
    def command(*args: Any, retries: int, timeout: float, token: str | None,
                ca_file: Path | None, **kwargs: Any) -> Any:  # fmt: skip
        connection = {"retries": retries, "timeout": timeout, "token": token, "ca_file": ca_file}
        return f(*args, connection=connection, **kwargs)

    timeout = click.option(
        "--timeout", type=float, default=60.0, show_default=True,
        help="Seconds without progress on a connection before it is retried.",
    )  # fmt: skip
    retries = click.option(
        "--retries", type=click.IntRange(1, 1000), default=10, show_default=True,
        help="Attempts per request on network errors, timeouts, 408, 409, 423, 429, 460, 5xx.",
    )  # fmt: skip
    token = click.option(
        "--token", envvar="HAUL_TOKEN", default=None,
        help="API key or JWT for servers that require credentials (or set HAUL_TOKEN).",
    )  # fmt: skip
    ca_file = click.option(
        "--ca-file", envvar="HAUL_CA_FILE", default=None,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="PEM file of the CA that signed the server's certificate (or set HAUL_CA_FILE).",
    )  # fmt: skip
    return ca_file(token(retries(timeout(command))))


@click.command()
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))  # fmt: skip
@click.option("--server", required=True, envvar="HAUL_SERVER",
              help="Server URL (http://host:8080) or a tus endpoint URL.")  # fmt: skip
@click.option("--parallel", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Streams per file (needs the concatenation extension).")  # fmt: skip
@click.option("--chunk-size", default=None, help="Chunk size, e.g. 16MiB (default: adapts).")
@click.option("-m", "--metadata", multiple=True, metavar="KEY=VALUE", help="Extra metadata.")
@click.option("--no-resume", is_flag=True, help="Start fresh even if an earlier run was cut off.")
@click.option("--no-dedup", is_flag=True,
              help="No instant-upload check (the file's digest is still declared and "
                   "verified).")  # fmt: skip
@click.option("--direct", is_flag=True,
              help="Send the parts straight to the server's object store (S3) through URLs "
                   "it presigns; the bytes never pass through haul.")  # fmt: skip
@click.option("--protocol", type=click.Choice(PROTOCOLS), default="tus", show_default=True,
              help="tus, or IETF Resumable Uploads for HTTP: ietf (the newest interop version "
                   "the server offers) or ietf-N (that interop version).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON result per file.")
@_client_options
def upload(
    paths: tuple[Path, ...], server: str, parallel: int, chunk_size: str | None,
    metadata: tuple[str, ...], no_resume: bool, no_dedup: bool, direct: bool, protocol: str,
    as_json: bool, connection: dict[str, Any],
) -> None:  # fmt: skip
    """Upload files and directories (recursively); rerun the same command to resume."""
    try:
        chunk = parse_size(chunk_size) if chunk_size else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--chunk-size") from None
    try:
        endpoint_for(server)
    except HaulClientError as exc:
        raise click.BadParameter(str(exc), param_hint="--server") from None
    extra: dict[str, str] = {}
    for item in metadata:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--metadata")
        extra[key] = value
    if direct and protocol != "tus":
        raise click.BadParameter("--direct sends to the object store, not over --protocol ietf",
                                 param_hint="--protocol")  # fmt: skip
    files = _files(paths)
    console = Console(stderr=True, soft_wrap=True)  # never break a URL across lines
    show_bar = not as_json and console.is_terminal

    async def run() -> int:
        failures = 0
        total = sum(p.stat().st_size for p, _ in files)
        async with AsyncClient(server, parallel=parallel, chunk_size=chunk, **connection) as client:
            with _bar(console) if show_bar else _NoBar() as bar:
                overall = bar.add_task("total", total=total) if len(files) > 1 else None
                finished = 0
                for path, name in files:
                    task = bar.add_task(name, total=path.stat().st_size)

                    def progress(
                        p: UploadProgress, task: TaskID = task, before: int = finished
                    ) -> None:
                        bar.update(task, completed=p.sent)
                        if overall is not None:
                            bar.update(overall, completed=before + p.sent)

                    try:
                        if protocol != "tus":
                            result = await client.upload_ietf(
                                path, version=pinned_version(protocol), on_progress=progress,
                                metadata={"filename": name, **extra}, resume=not no_resume,
                            )  # fmt: skip
                        elif direct:
                            result = await client.upload_direct(
                                path, on_progress=progress, resume=not no_resume
                            )
                        else:
                            result = await client.upload(
                                path, metadata={"filename": name, **extra},
                                on_progress=progress, resume=not no_resume, dedup=not no_dedup,
                            )  # fmt: skip
                    except HaulClientError as exc:
                        failures += 1
                        _report_failure(console, as_json, path, exc)
                    else:
                        _report_success(console, as_json, result)
                    finished += path.stat().st_size
        return EXIT_PARTIAL if failures else EXIT_OK

    try:
        code = asyncio.run(run())
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: run the same command again to resume[/]")
        sys.exit(130)
    sys.exit(code)


class _NoBar:
    """Stands in for the progress bar when output is not a terminal or is JSON."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: int) -> TaskID:
        return TaskID(0)

    def update(self, task: TaskID, completed: int, description: str | None = None) -> None:
        return None


def _reported(run: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a command's work: a failure is its message and exit code 1, Ctrl-C exit code 130."""
    try:
        return asyncio.run(run())
    except HaulClientError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


def _report_success(console: Console, as_json: bool, result: Any) -> None:
    if as_json:
        click.echo(json.dumps({
            "path": str(result.path), "url": result.url, "size": result.size,
            "sha256": result.sha256, "parallel": result.parallel, "resumed": result.resumed,
            "sent": result.sent, "seconds": round(result.elapsed, 3), "instant": result.instant,
            "digest_pending": result.digest_pending, "ok": True,
        }))  # fmt: skip
    elif result.instant:
        console.print(f"[cyan]≡[/] {result.path} → {result.url} (already on server, nothing sent)")
    else:
        how = "resumed, " if result.resumed else ""
        # Complete either way; a pending digest fails the upload later should it not match.
        later = ", verified by the server in the background" if result.digest_pending else ""
        digest = f"sha256 {result.sha256[:16]}…{later}"
        console.print(f"[green]✓[/] {result.path} → {result.url} ({how}{digest})")


def _report_failure(console: Console, as_json: bool, path: Path, exc: Exception) -> None:
    if as_json:
        click.echo(json.dumps({"path": str(path), "ok": False, "error": str(exc)}))
    else:
        console.print(f"[red]✗[/] {path}: {exc}")


@click.command()
@click.argument("url")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), default=None,
    help="Where to write (default: the upload's filename, in the current directory).",
)  # fmt: skip
@_client_options
def download(url: str, output: Path | None, connection: dict[str, Any]) -> None:
    """Download a completed upload; an interrupted download resumes with Range."""

    async def run() -> Path:
        async with AsyncClient(url, **connection) as client:
            target = output
            if target is None:
                status = await client.status(url)
                target = Path(
                    safe_filename(status.metadata.get("filename", ""), url.rsplit("/", 1)[-1])
                )
            return await client.download(url, target)

    click.echo(str(_reported(run)))


@click.command()
@click.argument("url")
@_client_options
def status(url: str, connection: dict[str, Any]) -> None:
    """Show an upload's offset, length, metadata and expiry (as JSON)."""

    async def run() -> dict[str, Any]:
        async with AsyncClient(url, **connection) as client:
            s = await client.status(url)
        return {"url": s.url, "offset": s.offset, "length": s.length, "complete": s.complete,
                "metadata": s.metadata, "expires": s.expires}  # fmt: skip

    click.echo(json.dumps(_reported(run), indent=2))


@click.command(name="rm")
@click.argument("urls", nargs=-1, required=True)
@_client_options
def remove(urls: tuple[str, ...], connection: dict[str, Any]) -> None:
    """Delete uploads on the server (tus termination)."""

    async def run() -> None:
        for url in urls:
            async with AsyncClient(url, **connection) as client:
                await client.delete(url)
            click.echo(f"deleted {url}")

    _reported(run)


@click.command(name="ls")
@click.option(
    "--server", default=None,
    help="List your uploads on this server (GET /api/uploads) instead of this machine's "
    "unfinished ones.",
)  # fmt: skip
@click.option("--state", type=click.Choice(["active", "complete"]), default=None,
              help="With --server: only unfinished or only complete uploads.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True)
@_client_options
def list_uploads(
    server: str | None, state: str | None, as_json: bool, connection: dict[str, Any]
) -> None:
    """Uploads this machine started and has not finished, with their state on the server;
    with --server, your uploads on that server."""
    if server is not None:
        _list_server_uploads(server, state, as_json, connection)
        return
    if state is not None:
        raise click.BadParameter("--state needs --server", param_hint="--state")
    entries = StateStore().entries()

    async def probe() -> list[dict[str, Any]]:
        rows = []
        for key, entry in entries:
            urls = [u for u in entry.parts if u]
            sent: int | None = 0
            state = "not started" if not urls else "unfinished"
            try:
                async with AsyncClient(entry.endpoint, retries=1, timeout=10) as client:
                    for url in urls:
                        s = await client.status(url)
                        sent = (sent or 0) + (s.offset or 0)
            except HaulClientError as exc:
                state, sent = f"unreachable or gone ({exc.__class__.__name__})", None
            rows.append({"id": key, "path": entry.identity.path, "size": entry.identity.size,
                         "server": entry.endpoint, "parts": len(entry.parts), "sent": sent,
                         "state": state})  # fmt: skip
        return rows

    rows = _reported(probe)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no unfinished uploads")
    for row in rows:
        sent = "?" if row["sent"] is None else row["sent"]
        click.echo(f"{row['path']}  {sent}/{row['size']} bytes  {row['state']}  {row['server']}")


def _list_server_uploads(
    server: str, state: str | None, as_json: bool, connection: dict[str, Any]
) -> None:
    try:
        endpoint_for(server)
    except HaulClientError as exc:
        raise click.BadParameter(str(exc), param_hint="--server") from None

    async def listed() -> list[dict[str, Any]]:
        async with AsyncClient(server, **connection) as client:
            return [item async for item in client.uploads(state=state)]

    items = _reported(listed)
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    if not items:
        click.echo("no uploads on the server")
    for item in items:
        name = item.get("metadata", {}).get("filename", "")
        size = "?" if item.get("length") is None else item["length"]
        click.echo(f"{item['url']}  {item['offset']}/{size} bytes  {item['state']}  {name}")
