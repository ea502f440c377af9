"""The server's commands, ``haul serve`` and ``haul gc``, with one option per setting. Loaded
only when one of them runs (or the command list is shown): the client's commands never import
the server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

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


@click.command()
@_settings_options
def serve(config_file: Path | None, **overrides: Any) -> None:
    """Run the upload server (local disk + SQLite under --data-dir by default)."""
    from haul.cli.serve import serve as run_server

    settings = _load(config_file, overrides)
    try:
        run_server(settings)
    except ConfigError as exc:  # found while building the backends: said, not a traceback
        raise click.ClickException(str(exc)) from None


@click.command()
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

    try:
        click.echo(json.dumps(asyncio.run(run())))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
