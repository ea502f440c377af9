"""The composition root: the one place that turns :class:`Settings` into running parts.

``haul serve`` and ``haul gc`` both build their backends and service here, so they can never
disagree on what a setting means. Backends whose libraries are optional are imported only when
configured; a missing one is a configuration error that names the extra to install.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from starlette.applications import Starlette

from haul.config import Settings
from haul.core.interfaces import Locker, MetadataStore, Outbox, Storage
from haul.core.scan import CommandScanner
from haul.core.service import Limits, UploadService
from haul.errors import ConfigError
from haul.hooks.body import EVENT_TYPES
from haul.hooks.gate import HookGate
from haul.hooks.outbox import OutboxWriter
from haul.hooks.transports import CommandTransport, HttpTransport, Transport
from haul.hooks.worker import Deliverer
from haul.http import logs
from haul.http.app import create_app
from haul.http.metrics import Metrics
from haul.locks.file import FileLocker
from haul.records.sqlite import SQLiteStore
from haul.storage.local import LocalStorage
from haul.storage.timed import timed


def _backend(module: str, extra: str, setting: str) -> ModuleType:
    """Import an optional backend, or say which extra brings its library."""
    try:
        return importlib.import_module(module)
    except ImportError as missing:
        raise ConfigError(
            f"{setting} needs the library {missing.name or 'it uses'}, which is not installed; "
            f"install haul with the '{extra}' extra: pip install 'haul[{extra}]'"
        ) from None


def build_storage(settings: Settings) -> Storage:
    if settings.storage != "s3":
        return LocalStorage(settings.data_dir / "uploads", fsync=settings.fsync)
    s3 = _backend("haul.storage.s3", "s3", "--storage s3")
    storage: Storage = s3.S3Storage(
        bucket=settings.s3_bucket,
        endpoint=settings.s3_endpoint or None,
        region=settings.s3_region or None,
        prefix=settings.s3_prefix,
        addressing=settings.s3_addressing,
        access_key=settings.s3_access_key or None,
        secret_key=settings.s3_secret_key or None,
        part_size=settings.s3_part_size,
        parts_in_flight=settings.s3_parts_in_flight,
        memory=settings.s3_memory,
        equal_parts=settings.s3_equal_parts,
        timeout=settings.s3_timeout,
        retries=settings.s3_retries,
    )
    return storage


def build_records(settings: Settings) -> MetadataStore:
    store: MetadataStore
    if settings.db:
        postgres = _backend("haul.records.postgres", "postgres", "--db postgresql://...")
        store = postgres.PostgresStore(settings.db)
    else:
        store = SQLiteStore(settings.data_dir / "haul.db")
    if settings.digest_index == "redis":
        index = _backend("haul.records.redis_index", "redis", "--digest-index redis")
        indexed: MetadataStore = index.RedisDigestIndex(store, settings.redis_url)
        return indexed
    return store


def build_locker(settings: Settings) -> Locker:
    locker: Locker
    if settings.lock_backend == "postgres":
        postgres = _backend("haul.locks.postgres", "postgres", "--locker postgres")
        locker = postgres.PostgresLocker(settings.db)
    elif settings.lock_backend == "redis":
        redis = _backend("haul.locks.redis", "redis", "--locker redis")
        locker = redis.RedisLocker(settings.redis_url, lease=settings.lock_lease)
    else:
        locker = FileLocker(settings.data_dir / "locks")
    return locker


def limits_from(settings: Settings) -> Limits:
    return Limits(
        max_size=settings.max_size,
        max_active_uploads=settings.max_active_uploads,
        expiration=settings.expiration,
        tombstone_ttl=settings.tombstone_ttl,
        orphan_grace=settings.orphan_grace,
        lock_timeout=settings.lock_timeout,
        keep_partials=settings.keep_partials,
        verify_digest=settings.verify_digest,
        instant_upload=settings.instant_upload,
        anonymous_dedup=settings.anonymous_dedup,
        proof_dedup=settings.proof_dedup,
        verify_later=settings.verify_later == "on"
        or (settings.verify_later == "auto" and settings.storage == "s3"),
    )


HookObserve = Callable[[str, str], None]


def _ignore(kind: str, outcome: str) -> None:
    return None


@dataclass
class Hooks:
    """The hooks the settings ask for: the gate asks the blocking ones, the writer puts the
    post-* events in the outbox, the deliverer (run by the server) sends them."""

    transport: Transport
    gate: HookGate
    writer: OutboxWriter
    deliverer: Deliverer

    async def run(self) -> None:
        try:
            await self.deliverer.run()
        finally:
            await self.transport.close()


def build_hooks(
    settings: Settings, records: MetadataStore, observe: HookObserve = _ignore
) -> Hooks | None:
    if not settings.hook_url and not settings.hook_command:
        return None
    if settings.hook_url and settings.hook_command:
        raise ConfigError("--hook-url and --hook-command exclude each other: choose one")
    unknown = set(settings.hook_events) - set(EVENT_TYPES)
    if unknown:
        raise ConfigError(
            f"--hook-events: unknown {', '.join(sorted(unknown))}; use {', '.join(EVENT_TYPES)}"
        )
    if not isinstance(records, Outbox):
        raise ConfigError("this record store keeps no outbox, which the hooks need")
    transport: Transport
    if settings.hook_url:
        try:
            transport = HttpTransport(
                settings.hook_url, settings.hook_secret, settings.hook_timeout
            )
        except ValueError as invalid:
            raise ConfigError(f"--hook-url: {invalid}") from None
    else:
        transport = CommandTransport(settings.hook_command, settings.hook_timeout)
    types = frozenset(settings.hook_events)
    base = {"base_url": settings.hook_base_url, "base_path": settings.base_path}
    deliverer = Deliverer(
        records,
        transport,
        max_age=settings.hook_max_age,
        timeout=settings.hook_timeout,
        observe=observe,
    )
    writer = OutboxWriter(
        records,
        types=types,
        progress_interval=settings.hook_progress_interval,
        written=deliverer.nudge,
        **base,
    )
    gate = HookGate(transport, types=types, observe=observe, **base)
    return Hooks(transport, gate, writer, deliverer)


def _compose(
    settings: Settings, metrics: Metrics | None = None
) -> tuple[UploadService, Hooks | None]:
    scanner = None
    if settings.scan_command:
        scanner = CommandScanner(settings.scan_command, settings.scan_timeout)
    storage = build_storage(settings)
    if metrics is not None:
        storage = timed(storage, metrics.storage_operation)
    records = build_records(settings)
    hooks = build_hooks(settings, records, metrics.hook_delivery if metrics else _ignore)
    service = UploadService(
        storage,
        records,
        build_locker(settings),
        limits_from(settings),
        policy=settings.type_policy(),
        scanner=scanner,
        gate=hooks.gate if hooks else None,
    )
    if hooks is not None:  # haul gc's expiries reach the outbox too
        service.events.subscribe(hooks.writer.hear)
    return service, hooks


def build_service(settings: Settings) -> UploadService:
    """Local disk for the bytes; SQLite + flock under the data dir by default, or PostgreSQL
    and advisory locks (or Redis locks) shared by the nodes of a cluster. With hooks
    configured, the post-* events are written to the outbox (delivered by a server)."""
    return _compose(settings)[0]


def build_app(settings: Settings) -> Starlette:
    """The ASGI application with every surface the settings turn on, over a new service; with
    metrics every storage call is timed, and with hooks the server delivers the outbox."""
    metrics = Metrics(settings.storage) if settings.metrics else None
    service, hooks = _compose(settings, metrics)
    background = (hooks.run,) if hooks else ()
    return create_app(settings, service, metrics=metrics, background=background)


def configure_logging(settings: Settings) -> None:
    logs.configure(settings.log_level, settings.log_format)
