"""Resume state: which server uploads belong to which local file.

One small JSON file per upload under the user's state dir, written atomically. The server is
always asked for the true offsets; this only remembers the URLs.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

FINGERPRINT_BYTES = 64 * 1024


def default_state_dir() -> Path:
    if "HAUL_STATE_DIR" in os.environ:
        return Path(os.environ["HAUL_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "haul"


@dataclass(frozen=True)
class FileIdentity:
    """What makes "the same file": path, size, mtime and a sample of its content."""

    path: str
    size: int
    mtime_ns: int
    sample: str  # sha256 of the first and last 64 KiB

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        stat = path.stat()
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            digest.update(handle.read(FINGERPRINT_BYTES))
            if stat.st_size > FINGERPRINT_BYTES:
                handle.seek(max(FINGERPRINT_BYTES, stat.st_size - FINGERPRINT_BYTES))
                digest.update(handle.read(FINGERPRINT_BYTES))
        return cls(str(path.resolve()), stat.st_size, stat.st_mtime_ns, digest.hexdigest())

    def key(self, endpoint: str) -> str:
        text = json.dumps([endpoint, self.path, self.size, self.mtime_ns, self.sample])
        return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass
class UploadEntry:
    endpoint: str
    identity: FileIdentity
    chunk_size: int
    parts: list[str | None]  # one upload URL per chunk (parallel) or a single URL (sequential)
    parallel: bool
    created_at: float = field(default_factory=time.time)
    # A direct upload's S3 object key and multipart id, whose stored parts a rerun skips.
    multipart: list[str] | None = None
    # How the upload is sent: tus, or ietf-<interop version> (client.ietf), kept so a rerun
    # speaks the version the upload was created with.
    protocol: str = "tus"
    # A parallel upload's final upload, created before the partials' bytes: a rerun makes no
    # second one.
    final: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> UploadEntry:
        data = json.loads(text)
        data["identity"] = FileIdentity(**data["identity"])
        return cls(**data)


class StateStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or default_state_dir()) / "uploads"

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def load(self, key: str) -> UploadEntry | None:
        try:
            return UploadEntry.from_json(self._path(key).read_text())
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def save(self, key: str, entry: UploadEntry) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        temp = self._path(key).with_suffix(f".{os.getpid()}.tmp")
        temp.write_text(entry.to_json())
        os.replace(temp, self._path(key))

    def remove(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def entries(self) -> list[tuple[str, UploadEntry]]:
        found = []
        for path in sorted(self.root.glob("*.json")):
            entry = self.load(path.stem)
            if entry is not None:
                found.append((path.stem, entry))
        return found
