"""Chaos: kill -9 storms, a fault-injecting proxy, a full disk, duplicate and reordered
requests. The default run uses small numbers; `./dev test -m slow` runs the full storm.

Each test prints its figures (uploads tried, faults injected, bytes verified, losses) and
appends them to test-output/chaos.jsonl."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

import haul
from haul.compose import build_service
from haul.config import load_settings
from tests.helpers import create, head, patch, random_file, sha256_file
from tests.proxy import ChaosProxy

MiB = 1 << 20
OUTPUT = Path(__file__).parent.parent / "test-output"


def report(name: str, **figures: object) -> None:
    OUTPUT.mkdir(exist_ok=True)
    line = json.dumps({"test": name, **figures})
    print(f"\nCHAOS {line}")
    with open(OUTPUT / "chaos.jsonl", "a") as out:
        out.write(line + "\n")


def server_digest(url: str) -> str:
    digest = hashlib.sha256()
    with httpx.Client(timeout=120, trust_env=False) as client, client.stream("GET", url) as r:
        assert r.status_code == 200, url
        for block in r.iter_bytes(MiB):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Job:
    path: Path
    parallel: int
    chunk: int
    url: str | None = None
    error: BaseException | None = None
    attempts: int = field(default=0)


def _upload(job: Job, base_url: str, state: Path) -> None:
    client = haul.Client(base_url, parallel=job.parallel, chunk_size=job.chunk, retries=400,
                         max_backoff=1.0, timeout=20, state_dir=state)  # fmt: skip
    # A whole-upload failure (e.g. the server died between a final POST and its answer) is
    # retried by running the same upload again, as a user would.
    for _ in range(5):
        job.attempts += 1
        try:
            job.url = client.upload(job.path).url
            return
        except haul.HaulClientError as exc:
            job.error = exc
    return


def _storm(
    make_server, tmp_path: Path, uploads: int, kills: int, max_size: int, rate: int, seed: int
) -> None:
    rng = random.Random(seed)
    server = make_server("--lock-timeout", "1")
    # Clients go through a proxy that caps each connection, so kills land mid-upload.
    proxy = ChaosProxy(server.port, rate=rate, seed=seed).start()
    sizes = [0, 1, *(rng.randint(0, max_size) for _ in range(uploads - 2))]
    jobs = [
        Job(random_file(tmp_path / f"f{i}.bin", size, seed=seed * 1000 + i),
            parallel=rng.choice([1, 4]), chunk=rng.choice([MiB, 2 * MiB, 4 * MiB]))
        for i, size in enumerate(sizes)
    ]  # fmt: skip
    threads = [
        threading.Thread(target=_upload, args=(job, proxy.url, tmp_path / f"state{i}"))
        for i, job in enumerate(jobs)
    ]
    for thread in threads:
        thread.start()
    in_flight = []
    for _ in range(kills):
        time.sleep(rng.uniform(0.3, 1.5))
        in_flight.append(sum(1 for job in jobs if job.url is None))
        server.kill()
        time.sleep(rng.uniform(0.0, 0.5))
        server.start()
    for thread in threads:
        thread.join(900)
    proxy.stop()
    assert all(in_flight), in_flight  # every kill hit uploads in progress
    failed = [(job.path.name, repr(job.error)) for job in jobs if job.url is None]
    assert not failed, failed
    verified = 0
    for job in jobs:
        url = job.url.replace(str(proxy.port), str(server.port))  # type: ignore[union-attr]
        job.url = url
        assert server_digest(url) == sha256_file(job.path), job.path
        verified += job.path.stat().st_size

    # Collect everything that is not a completed upload: nothing else may remain on disk.
    server.stop()
    settings = load_settings(environ={}, overrides={"data_dir": str(server.data_dir),
                             "tombstone_ttl": "0", "orphan_grace": "0"})  # fmt: skip

    async def collect() -> None:
        service = build_service(settings)
        await service.store.open()
        try:
            await service.collect_garbage(now=time.time() + 10 * 86400)
            await service.collect_garbage(now=time.time() + 20 * 86400)  # purge new tombstones
        finally:
            await service.store.close()

    asyncio.run(collect())
    kept = {p.name.removesuffix(".parts") for p in (server.data_dir / "uploads").iterdir()}
    completed = {job.url.rsplit("/", 1)[1] for job in jobs if job.url}
    assert kept == completed, (kept - completed, completed - kept)
    server.start()
    for job in jobs:  # and GC changed none of them
        assert server_digest(job.url) == sha256_file(job.path)  # type: ignore[arg-type]
    report("kill -9 storm", uploads=len(jobs), kills=kills, in_flight_at_kills=in_flight,
           bytes_verified=verified,
           whole_upload_retries=sum(j.attempts - 1 for j in jobs), losses=0)  # fmt: skip


def test_kill_9_storm_short(make_server, tmp_path: Path) -> None:
    _storm(make_server, tmp_path, uploads=12, kills=3, max_size=12 * MiB, rate=4 * MiB, seed=1)


@pytest.mark.slow
def test_kill_9_storm_full(make_server, tmp_path: Path) -> None:
    _storm(make_server, tmp_path, uploads=50, kills=10, max_size=200 * MiB, rate=32 * MiB, seed=2)


def test_fault_injecting_proxy(server, tmp_path: Path) -> None:
    proxy = ChaosProxy(server.port, seed=3).start()
    proxy.cut_probability = 0.004
    jobs = [Job(random_file(tmp_path / f"p{i}.bin", (i + 1) * 5 * MiB, seed=30 + i),
                parallel=1 + 3 * (i % 2), chunk=2 * MiB) for i in range(6)]  # fmt: skip
    stop = threading.Event()
    stalls = slowdowns = 0

    def weather() -> None:  # stalls and slow links, now and then
        nonlocal stalls, slowdowns
        rng = random.Random(4)
        while not stop.wait(rng.uniform(0.2, 0.6)):
            if rng.random() < 0.5:
                proxy.stall, stalls = True, stalls + 1
                stop.wait(rng.uniform(0.5, 2.5))
                proxy.stall = False
            else:
                proxy.rate, slowdowns = 4 * MiB, slowdowns + 1
                stop.wait(0.5)
                proxy.rate = None

    weather_thread = threading.Thread(target=weather)
    weather_thread.start()
    threads = [threading.Thread(target=_upload, args=(j, proxy.url, tmp_path / f"s{i}"))
               for i, j in enumerate(jobs)]  # fmt: skip
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
    finally:
        stop.set()
        weather_thread.join()
        proxy.stop()
    verified = 0
    for job in jobs:
        assert job.url is not None, job.error
        url = job.url.replace(str(proxy.port), str(server.port))
        assert server_digest(url) == sha256_file(job.path)
        verified += job.path.stat().st_size
    assert proxy.cuts > 0
    report("fault proxy", uploads=len(jobs), resets=proxy.cuts, stalls=stalls,
           slowdowns=slowdowns, bytes_verified=verified, losses=0)  # fmt: skip


@pytest.fixture
def small_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_then_freed(
    make_server, client: httpx.Client, small_disk: Path, tmp_path
) -> None:
    server = make_server("--no-fsync", data_dir=small_disk / "data")
    kept = random_file(tmp_path / "kept.bin", 4 * MiB, seed=5).read_bytes()
    kept_url = create(client, server, len(kept))
    assert patch(client, kept_url, 0, kept).status_code == 204
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * 8 * MiB)
    data = random_file(tmp_path / "big.bin", 16 * MiB, seed=6).read_bytes()
    url = create(client, server, len(data))
    full = patch(client, url, 0, data)
    assert full.status_code == 507
    assert full.text.startswith("ERR_STORAGE_FULL: ")
    offset = int(head(client, url).headers["upload-offset"])
    assert offset == 0  # the refused request left nothing behind
    assert server.upload_path(url).stat().st_size == 0
    assert client.get(kept_url).content == kept  # what was accepted is untouched
    filler.unlink()  # space comes back: the same upload resumes and completes
    assert patch(client, url, 0, data).status_code == 204
    assert client.get(url).content == data
    report("disk full", refused_with_507=1, bytes_verified=len(kept) + len(data), losses=0)


def test_duplicate_and_reordered_requests(server, client: httpx.Client) -> None:
    chunks = [bytes([i]) * 100_000 for i in range(10)]
    url = create(client, server, sum(map(len, chunks)))
    order = list(range(10))
    random.Random(7).shuffle(order)
    conflicts = 0
    offsets = [sum(map(len, chunks[:i])) for i in range(10)]
    done: set[int] = set()
    while len(done) < 10:  # a client that sends chunks out of order and repeats itself
        for i in order:
            response = patch(client, url, offsets[i], chunks[i])
            if response.status_code == 204:
                done.add(i)
            else:
                assert response.status_code == 409, response.text
                conflicts += 1
            if i in done:  # a duplicate of an accepted chunk is refused and changes nothing
                again = patch(client, url, offsets[i], chunks[i])
                assert again.status_code == 409
                conflicts += 1
    assert client.get(url).content == b"".join(chunks)
    report("duplicates and reordering", requests_refused=conflicts, losses=0)


def test_concurrent_writers_on_one_upload(server) -> None:
    data = random_file(Path(server.data_dir.parent / "cw.bin"), 6 * MiB, seed=8).read_bytes()
    with httpx.Client(trust_env=False, timeout=60) as c:
        url = create(c, server, len(data))
    writers = 4
    rounds: list[list[int]] = []  # each round: every writer's answer for the same offset
    failures: list[BaseException] = []
    # Every round, all writers HEAD together, then all PATCH the offset they saw together:
    # they collide on purpose, so only the lock and the offset check keep the bytes right.
    looked, sending = threading.Barrier(writers), threading.Barrier(writers)
    answers = threading.Lock()

    def writer(seed: int) -> None:  # each writer sends the next 64 or 256 KiB it thinks is due
        rng = random.Random(seed)
        try:
            with httpx.Client(trust_env=False, timeout=60) as c:
                for turn in range(len(data)):
                    looked.wait(60)
                    offset = int(head(c, url).headers["upload-offset"])
                    sending.wait(60)
                    if offset >= len(data):
                        return
                    piece = data[offset : offset + rng.choice([64 * 1024, 256 * 1024])]
                    status = patch(c, url, offset, piece).status_code
                    with answers:
                        if len(rounds) <= turn:
                            rounds.append([])
                        rounds[turn].append(status)
        except BaseException as error:  # a thread's exception is lost unless reported
            failures.append(error)
            looked.abort()
            sending.abort()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures
    with httpx.Client(trust_env=False) as c:
        assert c.get(url).content == data
    assert rounds
    for outcomes in rounds:  # one writer wins each collision; the others are refused
        assert len(outcomes) == writers
        assert outcomes.count(204) == 1, outcomes
        assert set(outcomes) <= {204, 409, 423}, outcomes
    refused = sum(writers - 1 for _ in rounds)
    report("concurrent writers", requests=writers * len(rounds), refused=refused,
           conflicts=sum(o.count(409) for o in rounds), locked=sum(o.count(423) for o in rounds),
           losses=0)  # fmt: skip
