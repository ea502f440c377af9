"""Routes that match a request's whole path."""

from __future__ import annotations

import re
from typing import Any

from starlette.routing import Route


class ExactRoute(Route):
    """A route whose path must match to its very end: Starlette's patterns end in ``$``, which
    also matches before a final newline, so ``/files/%0A`` would reach the collection."""

    def __init__(self, path: str, endpoint: Any, **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        self.path_regex = re.compile(self.path_regex.pattern.removesuffix("$") + r"\Z")
