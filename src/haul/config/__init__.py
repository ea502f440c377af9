"""Server settings: one declaration per setting, read from defaults < TOML file < HAUL_* env < CLI.

Each field's metadata carries its help text and the kind of value it takes; the CLI options of
``haul serve`` and the README's configuration table are generated from the same declarations.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from haul.config.kinds import (
    parse_bool,
    parse_choice,
    parse_duration,
    parse_float,
    parse_int,
    parse_list,
    parse_size,
    setting,
)
from haul.core.policy import TypePolicy
from haul.errors import ConfigError

HOOK_EVENTS = (
    "pre-create", "post-create", "post-receive", "pre-finish", "post-finish", "pre-terminate",
    "post-terminate", "post-expire",
)  # fmt: skip


@dataclass(frozen=True)
class Settings:
    host: str = setting("127.0.0.1", "Address to listen on.")
    port: int = setting(8080, "TCP port to listen on.", parse_int)
    data_dir: Path = setting(
        Path("haul-data"),
        "Directory for upload bytes (uploads/), locks and the SQLite state.",
        lambda value: Path(str(value)),
    )
    storage: str = setting(
        "local",
        "Where upload bytes live: local (the data dir) or s3 (any S3-compatible store).",
        parse_choice("local", "s3"),
    )
    s3_endpoint: str = setting(
        "", "S3 endpoint URL (e.g. http://127.0.0.1:9000); empty = AWS for the region."
    )
    s3_bucket: str = setting("", "S3 bucket that holds the bytes (it must exist).")
    s3_region: str = setting("us-east-1", "S3 region.")
    s3_prefix: str = setting("haul/", "Key prefix for everything haul stores in the bucket.")
    s3_addressing: str = setting(
        "auto",
        "S3 addressing: path (endpoint/bucket/key), virtual (bucket.endpoint/key) or auto.",
        parse_choice("auto", "path", "virtual"),
    )
    s3_access_key: str = setting(
        "", "S3 access key; empty = the usual AWS sources (AWS_* environment, profile, role)."
    )
    s3_secret_key: str = setting("", "S3 secret key (with --s3-access-key).")
    s3_part_size: int = setting(
        8 * 1024 * 1024,
        "Part size (at least 5MiB); growing parts double every 1,000 (not with "
        "--s3-equal-parts; partials written in place use one dividing their layout).",
        parse_size,
    )
    s3_parts_in_flight: int = setting(
        4,
        "Parts of one upload sent to S3 at once while its request goes on (memory: this many "
        "parts per upload, within --s3-memory).",
        parse_int,
    )
    s3_memory: int = setting(
        64 * 1024 * 1024,
        "Memory for part bodies (being filled or on their way to S3), across every upload of "
        "the node; an upload waits for room (a part larger than this goes alone).",
        parse_size,
    )
    s3_equal_parts: bool = setting(
        False,
        "Every part of an upload but the last the same size (Cloudflare R2 requires it): sized "
        "so 10,000 parts reach a known length, --s3-part-size for a deferred one; "
        "concatenations are re-parted to match.",
        parse_bool,
    )
    s3_timeout: float = setting(
        60.0,
        "How long one S3 call may go without progress (connecting takes at most 10 s of it; "
        "sending a part, waiting for an answer) before it is abandoned and tried again.",
        parse_duration,
    )
    s3_retries: int = setting(
        4, "How often a failed or timed-out S3 call is tried again (0 = never).", parse_int
    )
    direct_url_ttl: float = setting(
        900.0,
        "How long a presigned part URL of a direct upload (/s3/multipart) stays valid.",
        parse_duration,
    )
    db: str = setting(
        "",
        "Where upload records live: empty = SQLite in the data dir; postgresql://user@host/db "
        "for PostgreSQL, shared by every node of a cluster.",
    )
    locker: str = setting(
        "auto",
        "Per-upload locks: file (flock in the data dir), postgres (advisory locks), redis; "
        "auto = postgres with a PostgreSQL --db, else file.",
        parse_choice("auto", "file", "postgres", "redis"),
    )
    redis_url: str = setting(
        "", "Redis URL (redis://host:6379/0) for --locker redis and --digest-index redis."
    )
    digest_index: str = setting(
        "none",
        "Where instant upload looks up stored content: none (the record store) or redis "
        "(a key per digest, checked against the records).",
        parse_choice("none", "redis"),
    )
    lock_lease: float = setting(
        30.0,
        "Redis locks: a dead node's locks are free again after this long (renewed while held).",
        parse_duration,
    )
    base_path: str = setting("/files/", "URL path under which the tus endpoint lives.")
    chunk_api: bool = setting(
        True, "Serve the design note's chunk API and /flow (flow.js, Resumable.js).", parse_bool
    )
    chunk_api_prefix: str = setting(
        "", "Path prefix for the chunk APIs (e.g. /api); empty: the paths are exactly the note's."
    )
    max_size: int = setting(
        0,
        "Largest accepted upload (e.g. 50GiB); advertised as Tus-Max-Size. 0 = no limit.",
        parse_size,
    )
    ietf_progress_interval: int = setting(
        8 << 20,
        "IETF resumable uploads: a 104 with the offset reached after each this much of an "
        "append (e.g. 8MiB). 0 = none.",
        parse_size,
    )
    ietf_max_append_size: int = setting(
        0,
        "IETF resumable uploads: most bytes one append (from interop 9 also a creation) may "
        "carry, announced as Upload-Limit max-append-size (e.g. 100MiB, under a proxy's body "
        "limit). 0 = no limit.",
        parse_size,
    )
    max_metadata_size: int = setting(
        4096, "Largest accepted Upload-Metadata header, in bytes.", parse_size
    )
    max_active_uploads: int = setting(
        0,
        "Most unfinished uploads held at once; creation answers 503 beyond. 0 = no limit.",
        parse_int,
    )
    expiration: float = setting(
        86400.0,
        "An unfinished upload expires this long after its last write (e.g. 24h). 0 = never.",
        parse_duration,
    )
    sweep_interval: float = setting(
        60.0,
        "How often the server removes expired uploads (e.g. 60s). 0 = only `haul gc`.",
        parse_duration,
    )
    tombstone_ttl: float = setting(
        7 * 86400.0,
        "How long a terminated or expired upload still answers 410 Gone.",
        parse_duration,
    )
    orphan_grace: float = setting(
        3600.0,
        "Bytes in the data dir that no upload record claims are removed by GC once they "
        "are this old (young ones may belong to an upload being created).",
        parse_duration,
    )
    lock_timeout: float = setting(
        3.0,
        "Seconds a request waits for another request on the same upload before 423.",
        parse_float,
    )
    body_timeout: float = setting(
        30.0,
        "A request body that stalls this long is closed; what arrived is kept.",
        parse_duration,
    )
    keep_partials: bool = setting(
        False,
        "Keep partial uploads after they were concatenated into a final upload.",
        parse_bool,
    )
    verify_digest: bool = setting(
        True,
        "Compute the SHA-256 of every completed upload (exposed as Repr-Digest) and check "
        "it against the digest the client declared. Declared digests are checked even when off; "
        "partial uploads are hashed only when they declare one (their final upload is hashed).",
        parse_bool,
    )
    verify_later: str = setting(
        "auto",
        "Verify a SHA-256 that needs a read-back of the stored bytes in the background: the "
        "upload completes at once, its digest pending, shared only once verified. auto = on "
        "for --storage s3; on; off (the client waits for the read-back).",
        parse_choice("auto", "on", "off"),
    )
    verify_interval: float = setting(
        30.0,
        "How often a server looks for pending SHA-256s other nodes left (uploads completed "
        "on it are verified at once). 0 = this server verifies none.",
        parse_duration,
    )
    instant_upload: bool = setting(
        True,
        "Complete an upload at once when its declared SHA-256 and length match content "
        "the same owner already stored (no bytes are sent).",
        parse_bool,
    )
    anonymous_dedup: bool = setting(
        False,
        "Let anonymous clients share one instant-upload scope: anyone who knows a digest "
        "could then get a copy of what another anonymous client uploaded.",
        parse_bool,
    )
    proof_dedup: bool = setting(
        True,
        "Offer an instant upload of content another owner stored, after the client "
        "proves it holds the bytes (digests of random ranges bound to a one-time nonce).",
        parse_bool,
    )
    fsync: bool = setting(
        True,
        "fsync each request's bytes before acknowledging them (survives power loss).",
        parse_bool,
    )
    allowed_types: tuple[str, ...] = setting(
        (),
        "Kinds of file accepted, comma separated: endings (.jpg) and types (image/*); "
        "empty = any kind not denied.",
        parse_list,
    )
    denied_types: tuple[str, ...] = setting(
        (),
        "Kinds of file refused, comma separated, in the same form; wins over allowed.",
        parse_list,
    )
    api_keys: tuple[str, ...] = setting(
        (),
        "Accepted API keys as owner:key pairs, comma separated (sent as Authorization: Bearer "
        "KEY). Prefer the environment or the config file to the command line for secrets.",
        parse_list,
    )
    jwt_secret: str = setting("", "Shared secret for HS256 JSON Web Tokens (Bearer).")
    jwt_public_key: str = setting("", "PEM file with the public key for RS256 JSON Web Tokens.")
    jwt_issuer: str = setting("", "Required `iss` of JSON Web Tokens (empty = not checked).")
    jwt_audience: str = setting("", "Required `aud` of JSON Web Tokens (empty = not checked).")
    jwt_owner_claim: str = setting("sub", "The JWT claim that names the upload's owner.")
    allow_anonymous: bool = setting(
        False,
        "Also accept requests without credentials when API keys or JWTs are configured "
        "(with neither, every request is anonymous).",
        parse_bool,
    )
    link_secret: str = setting(
        "",
        "Key that signs download links (Haul-Download-Link); give every node the same one. "
        "Empty = a random key: links stop working when the process restarts.",
    )
    link_ttl: float = setting(
        3600.0, "How long a signed download link stays valid.", parse_duration
    )
    quota_bytes: int = setting(
        0,
        "Most bytes one owner may hold (complete and unfinished uploads). 0 = no limit.",
        parse_size,
    )
    quota_active_uploads: int = setting(
        0, "Most unfinished uploads one owner may have at once. 0 = no limit.", parse_int
    )
    quota_uploads_per_hour: int = setting(
        0, "Most uploads one owner may create per hour. 0 = no limit.", parse_int
    )
    scan_command: str = setting(
        "",
        "Command that checks each upload before it is complete (e.g. clamdscan -); it reads "
        "the bytes on stdin and must exit 0, else the upload is refused. Empty = no scan.",
    )
    scan_timeout: float = setting(
        300.0, "Seconds the scan command may take before the upload is refused.", parse_duration
    )
    web_page: bool = setting(True, "Serve the upload page at / (with its assets).", parse_bool)
    tls_cert: str = setting(
        "", "PEM certificate (chain) file: serve HTTPS, with HTTP/2 and HTTP/1.1 on one port."
    )
    tls_key: str = setting("", "PEM private key file for --tls-cert.")
    http1: str = setting(
        "lean",
        "HTTP/1.1 protocol: lean (haul's, fewer copies of each body byte; only on the uvicorn "
        "releases it was tested with, else uvicorn's own with a warning) or uvicorn (its own).",
        parse_choice("lean", "uvicorn"),
    )
    header_timeout: float = setting(
        10.0, "A client must send a request's headers within this time (slowloris).", parse_duration
    )
    min_speed: int = setting(
        1024,
        "Bytes a second a request body must average once it is --body-timeout old; "
        "slower bodies are closed (what arrived is kept). 0 = no minimum.",
        parse_size,
    )
    max_connections_per_client: int = setting(
        64,
        "Open connections one client IP may hold; more are closed at once. 0 = no cap.",
        parse_int,
    )
    max_requests_per_client: int = setting(
        32, "Requests one client IP may have in flight; more get 429. 0 = no cap.", parse_int
    )
    rate_limit: float = setting(
        0.0,
        "Requests a second allowed per client IP and per owner (429 with Retry-After beyond). "
        "0 = no limit.",
        parse_float,
    )
    rate_burst: int = setting(
        100, "Requests a client may make at once above --rate-limit.", parse_int
    )
    cors_origins: tuple[str, ...] = setting(
        ("*",),
        "Origins allowed to call the API from a browser, comma separated; * = any.",
        parse_list,
    )
    trust_proxy: bool = setting(
        False,
        "Build URLs from X-Forwarded-Proto/-Host (only behind a proxy you control).",
        parse_bool,
    )
    relative_location: bool = setting(
        False,
        "Answer creation with a relative Location (/files/ID) instead of an absolute URL.",
        parse_bool,
    )
    log_level: str = setting(
        "info", "Logging level.", parse_choice("debug", "info", "warning", "error")
    )
    access_log: bool = setting(
        False,
        "Log every HTTP request (one line each: method, path, status, a refusal's error code, "
        "bytes sent, duration, request id).",
        parse_bool,
    )
    log_format: str = setting(
        "text",
        "Log lines as text, or as JSON objects (one a line, with the request id, upload id, "
        "owner, status, bytes and duration where known).",
        parse_choice("text", "json"),
    )
    metrics: bool = setting(
        True, "Serve Prometheus metrics at /metrics (text exposition format).", parse_bool
    )
    metrics_token: str = setting(
        "", "Bearer token /metrics requires (Authorization: Bearer ...); empty = none."
    )
    hook_url: str = setting(
        "", "URL each hook event is POSTed to (one JSON event a request); empty = no HTTP hooks."
    )
    hook_command: str = setting(
        "", "Command each hook event is run with, the event JSON on stdin (instead of a URL)."
    )
    hook_secret: str = setting(
        "", "Key signing each hook body: Haul-Signature: sha256=<hex HMAC-SHA256 of the body>."
    )
    hook_events: tuple[str, ...] = setting(
        HOOK_EVENTS, "Hook event types to send, comma separated (default: all eight).", parse_list
    )
    hook_timeout: float = setting(
        10.0, "Seconds a hook may take to answer; a blocking hook that does not fails closed.",
        parse_duration,
    )  # fmt: skip
    hook_progress_interval: float = setting(
        1.0, "At most one post-receive event per upload per this many seconds.", parse_duration
    )
    hook_max_age: float = setting(
        86400.0, "A post-* event not delivered by this age is dropped (logged and counted).",
        parse_duration,
    )  # fmt: skip
    hook_base_url: str = setting(
        "",
        "Base of the upload URLs in hook events (e.g. https://up.example.com/files/); empty = "
        "as the request that caused the event addressed the server (or the path alone).",
    )

    @classmethod
    def declared(cls) -> Iterator[tuple[str, Any, str]]:
        """(name, default, help) of every setting, in declaration order."""
        for f in fields(cls):
            yield f.name, f.default, f.metadata["help"]

    def __post_init__(self) -> None:
        if self.chunk_api_prefix and not re.fullmatch(r"(/[^/]+)+", self.chunk_api_prefix):
            raise ConfigError(f"chunk_api_prefix must be like /api, got {self.chunk_api_prefix!r}")
        if not self.base_path.startswith("/") or not self.base_path.endswith("/"):
            raise ConfigError(f"base_path must start and end with '/', got {self.base_path!r}")
        if not 0 < self.port < 65536 and self.port != 0:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        self.type_policy()  # fails early on a malformed entry
        if self.storage == "s3" and not self.s3_bucket:
            raise ConfigError("--storage s3 needs --s3-bucket")
        if self.s3_timeout <= 0 or self.s3_retries < 0:
            raise ConfigError("--s3-timeout must be positive and --s3-retries at least 0")
        if self.s3_part_size < 5 * 1024 * 1024:
            raise ConfigError("--s3-part-size must be at least 5MiB (S3's smallest part)")
        if self.s3_parts_in_flight < 1:
            raise ConfigError("--s3-parts-in-flight must be at least 1")
        if self.db and not self.db.startswith(("postgresql://", "postgres://")):
            raise ConfigError("--db takes a postgresql:// URL (or nothing, for SQLite)")
        if self.lock_backend == "postgres" and not self.db:
            raise ConfigError("--locker postgres needs a PostgreSQL --db")
        if self.digest_index == "redis" and not self.redis_url:
            raise ConfigError("--digest-index redis needs --redis-url")
        if self.lock_backend == "redis" and not self.redis_url:
            raise ConfigError("--locker redis needs --redis-url")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("TLS needs both --tls-cert and --tls-key")

    @property
    def lock_backend(self) -> str:
        if self.locker != "auto":
            return self.locker
        return "postgres" if self.db else "file"

    @property
    def auth_configured(self) -> bool:
        return bool(self.api_keys or self.jwt_secret or self.jwt_public_key)

    @property
    def anonymous_allowed(self) -> bool:
        return self.allow_anonymous or not self.auth_configured

    def type_policy(self) -> TypePolicy:
        return TypePolicy.of(self.allowed_types, self.denied_types)


def env_name(name: str) -> str:
    return f"HAUL_{name.upper()}"


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Merge the sources, each parsed by the setting's own parser, and validate the result."""
    raw: dict[str, object] = {}
    if config_file is not None:
        try:
            table = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from None
        section = table.get("haul", table)
        if not isinstance(section, dict):
            raise ConfigError("the [haul] section of the config file must be a table")
        raw.update({key.replace("-", "_"): value for key, value in section.items()})
    env = os.environ if environ is None else environ
    known = {f.name: f for f in fields(Settings)}
    raw.update({name: env[env_name(name)] for name in known if env_name(name) in env})
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        try:
            values[name] = known[name].metadata["parse"](value)
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    return replace(Settings(), **values)
