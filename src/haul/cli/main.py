"""The ``haul`` command line."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from haul import __version__
from haul.cli.client import download, list_uploads, remove, status, upload
from haul.config import Settings, env_name, load_settings
from haul.errors import ConfigError


def _settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """One CLI option per setting, generated from the settings declaration."""
    for name, default, help_text in reversed(list(Settings.declared())):
        flag = name.replace("_", "-")
        shown = ",".join(default) if isinstance(default, tuple) else default
        text = f"{help_text} [default: {shown}; env: {env_name(name)}]"
        if isinstance(default, bool):
            option = click.option(f"--{flag}/--no-{flag}", name, default=None, help=text)
        else:
            option = click.option(f"--{flag}", name, default=None, metavar="VALUE", help=text)
        func = option(func)
    return click.option(
        "--config",
        "config_file",
        type=click.Path(path_type=Path, exists=True, dir_okay=False),
        envvar="HAUL_CONFIG",
        help="TOML file with settings (keys as below, optionally in a [haul] table). "
        "Precedence: command line > HAUL_* environment > file > defaults.",
    )(func)


def _load(config_file: Path | None, overrides: dict[str, Any]) -> Settings:
    try:
        return load_settings(config_file, overrides=overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


@contextmanager
def _config_errors_as_messages() -> Iterator[None]:
    """A setting found unusable while building the server (a backend's library missing, say)
    ends the command with its message and a non-zero status, not a traceback."""
    try:
        yield
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
@click.version_option(__version__, prog_name="haul")
def main() -> None:
    """haul: resumable, verified uploads of very large files (tus 1.0.0)."""


@main.command()
@_settings_options
def serve(config_file: Path | None, **overrides: Any) -> None:
    """Run the upload server (local disk + SQLite under --data-dir by default)."""
    from haul.cli.serve import serve as run_server

    settings = _load(config_file, overrides)
    with _config_errors_as_messages():
        run_server(settings)


@main.command()
@_settings_options
def gc(config_file: Path | None, **overrides: Any) -> None:
    """Remove expired uploads, old tombstones and orphaned bytes once, then exit."""
    from haul.compose import build_service

    settings = _load(config_file, overrides)

    async def run() -> dict[str, int]:
        service = build_service(settings)
        await service.open()
        try:
            report = await service.collect_garbage()
        finally:
            await service.close()
        return {
            "expired": report.expired,
            "purged_tombstones": report.purged_tombstones,
            "orphans": report.orphans,
        }

    with _config_errors_as_messages():
        click.echo(json.dumps(asyncio.run(run())))


for _command in (upload, download, status, remove, list_uploads):
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
