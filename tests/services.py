"""Real PostgreSQL and Redis servers for the tests: started in throwaway dirs on free loopback
ports, stopped afterwards. PostgreSQL refuses to run as root, so as root it runs as the
`postgres` user that Debian's package creates."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from tests.helpers import free_port, wait_for_port

T = TypeVar("T")


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs ``coroutine`` to its end on a thread with its own event loop: the caller may be
    inside one already (async tests)."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    if not versions:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    return str(versions[0] / name)


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextmanager
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server; yields a DSN for its superuser `haul` (trust auth, loopback only)."""
    root = Path(tempfile.mkdtemp(prefix="haul-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    subprocess.run(
        _as_postgres([_pg_bin("initdb"), "-D", str(data), "-U", "haul", "-A", "trust",
                      "--no-sync", "-E", "UTF8"]),
        check=True, capture_output=True,
    )  # fmt: skip
    options = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=400"
    )
    subprocess.run(
        _as_postgres([_pg_bin("pg_ctl"), "-D", str(data), "-o", options, "-w", "-t", "60",
                      "-l", str(root / "log"), "start"]),
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        yield f"postgresql://haul@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres([_pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(dsn: str, name: str) -> str:
    """A new, empty database on the server of ``dsn``; its DSN."""
    import asyncpg

    async def create() -> None:
        db = await asyncpg.connect(dsn)
        try:
            await db.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await db.execute(f'CREATE DATABASE "{name}"')
        finally:
            await db.close()

    run_async(create())
    return dsn.rsplit("/", 1)[0] + f"/{name}"


@contextmanager
def redis_server() -> Iterator[str]:
    """A Redis server without persistence; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("Redis is not installed (apt-get install redis-server)")
    port = free_port()
    root = Path(tempfile.mkdtemp(prefix="haul-redis-"))
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(root, ignore_errors=True)


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
{user}
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    upstream haul {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;           # haul enforces its own limits
        proxy_request_buffering off;      # stream bodies: no disk spooling, resumable offsets
        proxy_buffering off;
        # A final upload names every partial in Upload-Concat: ~40 KB for 1000 parts, in the
        # request and in HEAD answers. nginx's 4-8 KB defaults would refuse both.
        large_client_header_buffers 4 64k;
        proxy_buffer_size 64k;
        proxy_buffers 4 64k;
        proxy_http_version 1.1;
        proxy_read_timeout 300s;
        proxy_send_timeout 300s;
        location / {{
            proxy_pass http://haul;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


@contextmanager
def nginx_balancer(ports: list[int]) -> Iterator[int]:
    """nginx as a plain round-robin balancer in front of the given loopback ports."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    root = Path(tempfile.mkdtemp(prefix="haul-nginx-"))
    port = free_port()
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in ports)
    user = "user root root;" if os.geteuid() == 0 else ""
    conf = root / "nginx.conf"
    conf.write_text(NGINX_CONF.format(root=root, port=port, servers=servers, user=user))
    process = subprocess.Popen([binary, "-c", str(conf), "-p", str(root)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        if not wait_for_port(port, 20, process):
            raise RuntimeError(f"nginx did not start: {(root / 'error.log').read_text()}")
        yield port
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(root, ignore_errors=True)


CEPH_CONF = """[global]
fsid = {fsid}
mon host = [v1:127.0.0.1:{mon}]
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
# A throwaway monitor: a nearly full disk must not keep it from starting (it refuses at 5 %).
mon data avail crit = 0
mon data avail warn = 0
osd objectstore = memstore
memstore device bytes = 8589934592
osd crush chooseleaf type = 0
ms bind ipv6 = false
public addr = 127.0.0.1
run dir = {root}/run
admin socket = {root}/run/$name.asok
log file = {root}/log/$name.log
pid file = {root}/run/$name.pid
mon data = {root}/mon.$id
osd data = {root}/osd.$id
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:{s3} tcp_nodelay=1
"""
S3_ACCESS, S3_SECRET = "HAULACCESS", "HAULSECRET"


@contextmanager
def ceph_rgw() -> Iterator[str]:
    """A single-node Ceph cluster (one monitor, one in-memory OSD) with the RADOS Gateway: a
    real S3 server that checks signatures, presigned-URL expiry and part sizes. Yields its
    endpoint; credentials are S3_ACCESS / S3_SECRET. A start that fails (a port taken between
    choosing and binding it, a monitor slow to settle) is tried again from scratch."""
    if shutil.which("radosgw") is None:
        raise RuntimeError("Ceph is not installed (apt-get install ceph-mon ceph-osd radosgw)")
    for attempt in range(3):
        root = Path(tempfile.mkdtemp(prefix="haul-ceph-"))
        try:
            endpoint = _start_rgw(root)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            _stop_rgw(root)
            if attempt == 2:
                raise
            print(f"Ceph did not start ({exc}); starting it again")
            continue
        _RGW_ROOTS[endpoint] = root
        try:
            yield endpoint
        finally:
            _RGW_ROOTS.pop(endpoint, None)
            _stop_rgw(root)
        return


_RGW_ROOTS: dict[str, Path] = {}


def rgw_pid(endpoint: str) -> int:
    """The radosgw process behind ``endpoint`` (a gateway ceph_rgw() started)."""
    return int((_RGW_ROOTS[endpoint] / "run" / "client.rgw.pid").read_text().strip())


@contextlib.contextmanager
def frozen_store(endpoint: str) -> Iterator[None]:
    """The gateway stopped (SIGSTOP) for the block: its sockets stay open, it answers nothing,
    the way a store hangs; thawed (SIGCONT) on the way out, whatever happened."""
    pid = rgw_pid(endpoint)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _start_rgw(root: Path) -> str:
    import uuid

    for sub in ("run", "log", "mon.a", "osd.0"):
        (root / sub).mkdir()
    s3, mon = free_port(), free_port()
    fsid = str(uuid.uuid4())
    conf = root / "ceph.conf"
    conf.write_text(CEPH_CONF.format(fsid=fsid, mon=mon, root=root, s3=s3))
    c = ["-c", str(conf)]

    def run(*argv: str, timeout: float = 60) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if done.returncode:
            # Daemons say why they stopped in their log, not on stderr.
            logs = sorted((root / "log").glob("*.log"), key=lambda log: log.stat().st_mtime)
            said = done.stderr or (logs[-1].read_text(errors="replace") if logs else "")
            raise RuntimeError(f"{' '.join(argv)} failed: {said[-2000:]}")
        return done.stdout

    run("monmaptool", "--create", "--addv", "a", f"[v1:127.0.0.1:{mon}]", "--fsid", fsid,
        str(root / "monmap"))  # fmt: skip
    run("ceph-mon", *c, "--mkfs", "-i", "a", "--monmap", str(root / "monmap"))
    run("ceph-mon", *c, "-i", "a")
    osd = run("ceph", *c, "osd", "create", timeout=30).strip()
    for attempt in range(3):  # the monitor may still be settling
        try:
            run("ceph-osd", *c, "-i", osd, "--mkfs")
            run("ceph-osd", *c, "-i", osd)
            break
        except RuntimeError:
            if attempt == 2:
                raise
            time.sleep(1)
    run("ceph", *c, "osd", "crush", "add", f"osd.{osd}", "1.0", "host=localhost",
        "root=default", timeout=30)  # fmt: skip
    run("radosgw", *c, "-n", "client.rgw")
    if not wait_for_port(s3, 60):
        raise RuntimeError("radosgw did not start")
    for attempt in range(30):  # the user store needs the pools RGW creates at start
        try:
            run("radosgw-admin", *c, "-n", "client.rgw", "user", "create", "--uid=haul",
                "--display-name=haul", f"--access-key={S3_ACCESS}",
                f"--secret={S3_SECRET}")  # fmt: skip
            break
        except RuntimeError:
            if attempt == 29:
                raise
            time.sleep(0.5)
    return f"http://127.0.0.1:{s3}"


def _stop_rgw(root: Path) -> None:
    for pid_file in (root / "run").glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text().strip()), 9)
    time.sleep(0.2)
    shutil.rmtree(root, ignore_errors=True)


def s3_client(endpoint: str) -> Any:
    """An aiobotocore S3 client for the test gateway, to use with ``async with``."""
    from aiobotocore.session import get_session

    return get_session().create_client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=S3_ACCESS, aws_secret_access_key=S3_SECRET,
    )  # fmt: skip


def create_bucket(endpoint: str, bucket: str) -> None:
    async def create() -> None:
        async with s3_client(endpoint) as s3:
            await s3.create_bucket(Bucket=bucket)

    run_async(create())


def allow_browser_uploads(endpoint: str, bucket: str) -> None:
    """Bucket CORS that lets pages PUT parts with presigned URLs and read their ETag."""
    rules = {"CORSRules": [{
        "AllowedOrigins": ["*"], "AllowedMethods": ["PUT", "GET", "HEAD"],
        "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 600,
    }]}  # fmt: skip

    async def configure() -> None:
        async with s3_client(endpoint) as s3:
            await s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=rules)

    run_async(configure())
