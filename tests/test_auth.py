"""Authentication (API keys, JWT HS256/RS256), owner isolation, quotas and signed links."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.helpers import OCTETS, TUS, HaulServer

ALICE_KEY = "alice-key-0123456789abcdef"
BOB_KEY = "bob-key-0123456789abcdef00"
SECRET = "a-shared-secret-of-at-least-32-chars!!"


def bearer(token: str) -> dict[str, str]:
    return {**TUS, "Authorization": f"Bearer {token}"}


def token(claims: dict[str, object], key: object = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode({"exp": int(time.time()) + 300, **claims}, key, algorithm=algorithm)  # type: ignore[arg-type]


def upload(
    client: httpx.Client, server: HaulServer, auth: dict[str, str], data: bytes, **extra: str
) -> str:
    created = client.post(
        server.endpoint, headers={**auth, "Upload-Length": str(len(data)), **extra}
    )
    assert created.status_code == 201, created.text
    url = created.headers["location"]
    if data:
        patched = client.patch(
            url, content=data, headers={**auth, "Upload-Offset": "0", "Content-Type": OCTETS}
        )
        assert patched.status_code == 204, patched.text
    return str(url)


@pytest.fixture
def keyed(make_server: Callable[..., HaulServer]) -> HaulServer:
    return make_server("--api-keys", f"alice:{ALICE_KEY},bob:{BOB_KEY}")


def test_credentials_are_required_once_configured(keyed: HaulServer, client: httpx.Client) -> None:
    missing = client.post(keyed.endpoint, headers={**TUS, "Upload-Length": "1"})
    assert missing.status_code == 401
    assert missing.text.startswith("ERR_UNAUTHORIZED: ")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = client.post(keyed.endpoint, headers={**bearer("x" * 30), "Upload-Length": "1"})
    assert wrong.status_code == 401
    basic = {**TUS, "Authorization": "Basic YWxpY2U6cHc=", "Upload-Length": "1"}
    assert client.post(keyed.endpoint, headers=basic).status_code == 401
    assert client.options(keyed.endpoint).status_code == 204  # discovery stays open
    assert client.get(keyed.url + "/api/info").json()["auth"]["required"] is True


def test_another_owners_upload_answers_404_to_everything(
    keyed: HaulServer, client: httpx.Client
) -> None:
    alice, bob = bearer(ALICE_KEY), bearer(BOB_KEY)
    url = upload(client, keyed, alice, b"alice's secret")
    unfinished = client.post(keyed.endpoint, headers={**alice, "Upload-Length": "10"})
    partial = upload(client, keyed, alice, b"part", **{"Upload-Concat": "partial"})

    assert client.head(url, headers=bob).status_code == 404
    assert client.get(url, headers=bob).status_code == 404
    assert client.delete(url, headers=bob).status_code == 404
    patch = {**bob, "Upload-Offset": "0", "Content-Type": OCTETS}
    assert (
        client.patch(unfinished.headers["location"], content=b"x", headers=patch).status_code == 404
    )
    final = client.post(keyed.endpoint, headers={**bob, "Upload-Concat": f"final;{partial}"})
    assert final.status_code == 400
    assert "does not exist" in final.text
    # Anonymous requests cannot read it either, and alice still can.
    assert client.get(url, headers=TUS).status_code == 401
    assert client.get(url, headers=alice).content == b"alice's secret"
    assert client.head(unfinished.headers["location"], headers=alice).status_code == 200


def test_knowing_another_owners_digest_gives_a_challenge_not_the_file(
    keyed: HaulServer, client: httpx.Client
) -> None:
    data = b"confidential report " * 1000
    upload(client, keyed, bearer(ALICE_KEY), data)
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    probe = client.post(
        keyed.endpoint,
        headers={
            **bearer(BOB_KEY),
            "Upload-Length": str(len(data)),
            "Repr-Digest": f"sha-256=:{digest}:",
        },
    )
    assert probe.status_code == 201
    assert probe.headers["upload-offset"] == "0"
    assert "haul-challenge" in probe.headers
    assert client.get(probe.headers["location"], headers=bearer(BOB_KEY)).status_code == 409


def hs256_keyed_with(key: bytes, claims: dict[str, str]) -> str:
    """A token built by hand, as an attacker would: PyJWT refuses to use a PEM key this way."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    payload = json.dumps({**claims, "exp": int(time.time()) + 300}).encode()
    header = json.dumps({"alg": "HS256", "typ": "JWT"}).encode()
    signing_input = f"{b64(header)}.{b64(payload)}"
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


@pytest.fixture
def rsa_keys(tmp_path: Path) -> tuple[rsa.RSAPrivateKey, Path]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = tmp_path / "jwt-public.pem"
    public.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def test_jwt_checks_signature_expiry_issuer_and_audience(
    make_server: Callable[..., HaulServer],
    client: httpx.Client,
    rsa_keys: tuple[rsa.RSAPrivateKey, Path],
) -> None:
    private, public = rsa_keys
    server = make_server(
        "--jwt-secret", SECRET, "--jwt-public-key", str(public),
        "--jwt-issuer", "https://id.example", "--jwt-audience", "haul",
    )  # fmt: skip
    good = {"sub": "carol", "iss": "https://id.example", "aud": "haul"}

    def status(credential: str) -> int:
        headers = {**bearer(credential), "Upload-Length": "1"}
        return client.post(server.endpoint, headers=headers).status_code

    assert status(token(good)) == 201  # HS256
    assert status(token(good, private, "RS256")) == 201  # RS256
    expired = client.post(
        server.endpoint,
        headers={**bearer(token({**good, "exp": int(time.time()) - 600})), "Upload-Length": "1"},
    )
    assert expired.status_code == 401
    assert "expired" in expired.text
    assert status(token(good, "another-secret-of-at-least-32-chars!!!")) == 401  # forged
    assert status(token({**good, "iss": "https://evil.example"})) == 401
    assert status(token({**good, "aud": "someone-else"})) == 401
    assert status(token({"iss": good["iss"], "aud": "haul"})) == 401  # no owner claim
    unsigned = jwt.encode({**good, "exp": int(time.time()) + 300}, None, algorithm="none")  # type: ignore[arg-type]
    assert status(unsigned) == 401
    no_expiry = jwt.encode(good, SECRET, algorithm="HS256")
    assert status(no_expiry) == 401
    # Algorithm confusion: an HS256 token whose HMAC key is the RSA public key must not pass.
    assert status(hs256_keyed_with(public.read_bytes(), good)) == 401

    # Tokens for the same subject see the same uploads, whichever key signed them.
    url = upload(client, server, bearer(token(good)), b"hi")
    assert client.get(url, headers=bearer(token(good, private, "RS256"))).content == b"hi"
    other = bearer(token({**good, "sub": "dave"}))
    assert client.get(url, headers=other).status_code == 404


def test_quotas_bytes_concurrent_uploads_and_uploads_per_hour(
    make_server: Callable[..., HaulServer], client: httpx.Client
) -> None:
    server = make_server(
        "--api-keys", f"alice:{ALICE_KEY},bob:{BOB_KEY}", "--quota-bytes", "1000",
        "--quota-active-uploads", "2", "--quota-uploads-per-hour", "3",
    )  # fmt: skip
    alice = bearer(ALICE_KEY)

    def create(length: int, auth: dict[str, str] = alice) -> httpx.Response:
        return client.post(server.endpoint, headers={**auth, "Upload-Length": str(length)})

    too_big = create(1001)
    assert too_big.status_code == 403
    assert too_big.text.startswith("ERR_QUOTA_EXCEEDED: ")
    first, second = create(400), create(400)
    assert (first.status_code, second.status_code) == (201, 201)
    third = create(100)
    assert third.status_code == 429  # two unfinished already
    assert "unfinished" in third.text
    assert "retry-after" in third.headers
    client.delete(first.headers["location"], headers=alice).raise_for_status()
    assert create(700).status_code == 403  # 400 held + 700 > 1000
    assert create(200).status_code == 201  # 600 held, the third upload this hour
    client.delete(second.headers["location"], headers=alice).raise_for_status()
    per_hour = create(1)
    assert per_hour.status_code == 429
    assert "last hour" in per_hour.text
    assert 3500 <= int(per_hour.headers["retry-after"]) <= 3600
    assert create(1, bearer(BOB_KEY)).status_code == 201  # quotas are per owner


def test_token_claims_override_the_quota(
    make_server: Callable[..., HaulServer], client: httpx.Client
) -> None:
    server = make_server("--jwt-secret", SECRET, "--quota-bytes", "1000000")
    small = bearer(token({"sub": "erin", "haul": {"quota_bytes": 10, "max_size": 5}}))
    refused = client.post(server.endpoint, headers={**small, "Upload-Length": "6"})
    assert refused.status_code == 413
    assert "your maximum size 5" in refused.text
    assert client.post(server.endpoint, headers={**small, "Upload-Length": "5"}).status_code == 201
    assert client.post(server.endpoint, headers={**small, "Upload-Length": "5"}).status_code == 201
    assert client.post(server.endpoint, headers={**small, "Upload-Length": "1"}).status_code == 403
    bad = bearer(token({"sub": "erin", "haul": {"quota_bytes": "lots"}}))
    assert client.post(server.endpoint, headers={**bad, "Upload-Length": "1"}).status_code == 401


def test_signed_download_links(
    make_server: Callable[..., HaulServer], client: httpx.Client
) -> None:
    server = make_server("--api-keys", f"alice:{ALICE_KEY}", "--link-ttl", "2s")
    url = upload(client, server, bearer(ALICE_KEY), b"movie bytes")
    link = client.head(url, headers=bearer(ALICE_KEY)).headers["haul-download-link"]
    assert client.get(server.url + link).content == b"movie bytes"  # no Authorization header
    tampered = link[:-2] + ("AA" if not link.endswith("AA") else "BB")
    assert client.get(server.url + tampered).status_code == 401
    other_id = url.rsplit("/", 1)[1][::-1]
    assert client.get(server.url + link.replace(url.rsplit("/", 1)[1], other_id)).status_code in (
        401,
        404,
    )
    time.sleep(2.5)
    expired = client.get(server.url + link)
    assert expired.status_code == 401
    assert "expired" in expired.text


def test_anonymous_access_can_stay_open_alongside_keys(
    make_server: Callable[..., HaulServer], client: httpx.Client
) -> None:
    server = make_server("--api-keys", f"alice:{ALICE_KEY}", "--allow-anonymous")
    anonymous_url = upload(client, server, TUS, b"public")
    alice_url = upload(client, server, bearer(ALICE_KEY), b"private")
    assert client.get(anonymous_url).content == b"public"
    assert client.get(alice_url, headers=TUS).status_code == 404  # anonymous is its own owner


def test_anonymous_mode_on_a_public_address_is_logged_loudly(
    make_server: Callable[..., HaulServer],
) -> None:
    quiet = make_server()
    loud = make_server("--host", "0.0.0.0")  # reached over loopback only, like every test
    assert quiet.log_path is not None
    assert loud.log_path is not None
    assert "ANONYMOUS ACCESS" not in quiet.log_path.read_text()
    assert "ANONYMOUS ACCESS on 0.0.0.0" in loud.log_path.read_text()


def test_malformed_api_keys_are_config_errors(tmp_path: Path) -> None:
    import subprocess

    from tests.helpers import HAUL

    result = subprocess.run(
        [HAUL, "serve", "--data-dir", str(tmp_path), "--api-keys", "alice:short"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "at least 16 characters" in result.stderr


def test_the_cli_sends_its_token(keyed: HaulServer, tmp_path: Path) -> None:
    import json
    import subprocess

    from tests.helpers import HAUL, env_without_proxy

    source = tmp_path / "report.bin"
    source.write_bytes(b"quarterly numbers" * 1000)
    command = [HAUL, "upload", str(source), "--server", keyed.url, "--no-resume", "--json"]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60,
                             env=env_without_proxy())  # fmt: skip
    assert refused.returncode == 1
    assert "ERR_UNAUTHORIZED" in refused.stderr + refused.stdout
    sent = subprocess.run(command, capture_output=True, text=True, timeout=60,
                          env={**env_without_proxy(), "HAUL_TOKEN": ALICE_KEY})  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    url = json.loads(sent.stdout.strip().splitlines()[-1])["url"]
    with httpx.Client(trust_env=False) as client:
        assert client.get(url, headers=bearer(ALICE_KEY)).content == source.read_bytes()
        assert client.get(url, headers=bearer(BOB_KEY)).status_code == 404
