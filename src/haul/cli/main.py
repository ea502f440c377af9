"""The ``haul`` command line: the client's commands, and the server's loaded on first use."""

from __future__ import annotations

import gc

import click

from haul import __version__
from haul.cli.client import download, list_uploads, remove, status, upload

SERVER_COMMANDS = ("serve", "gc")


class _Commands(click.Group):
    """Builds ``serve`` and ``gc`` (whose options come from the server's settings) only when
    asked for, so ``haul upload`` and its kin start without importing the server."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *SERVER_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in SERVER_COMMANDS:
            from haul.cli import server

            command: click.Command = getattr(server, name)
            return command
        return super().get_command(ctx, name)


@click.group(cls=_Commands)
@click.version_option(__version__, prog_name="haul")
def main() -> None:
    """haul: resumable, verified uploads of very large files (tus 1.0.0)."""


for _command in (upload, download, status, remove, list_uploads):
    main.add_command(_command)


def run() -> None:
    """The ``haul`` program: a command, then the way out. What the command made needs no
    collection as the process ends (the interpreter's last collection took 0.1-0.3 s after a
    large upload), so it is frozen out of it."""
    try:
        main()
    finally:
        gc.freeze()


if __name__ == "__main__":  # pragma: no cover
    run()
