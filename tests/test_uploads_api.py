"""The uploads API: one owner's uploads, paged and filtered; nothing of anyone else's
(in-process over the ASGI app, the fast tier)."""

from __future__ import annotations

import pytest

from tests.inprocess import asgi_client, memory_service, memory_settings

pytestmark = pytest.mark.fast
TUS = {"Tus-Resumable": "1.0.0"}
ALICE = {"Authorization": "Bearer alice-key-0123456789"}
BOB = {"Authorization": "Bearer bob-key-0123456789ab"}
KEYS = "alice:alice-key-0123456789,bob:bob-key-0123456789ab"


async def test_each_owner_lists_only_their_uploads_page_by_page() -> None:
    async with asgi_client(memory_service(), memory_settings(api_keys=KEYS)) as http:
        urls = []
        for size in (3, 4, 5):
            named = {"Upload-Length": str(size), "Upload-Metadata": "filename YS50eHQ="}
            made = await http.post("/files/", headers={**TUS, **ALICE, **named})
            urls.append(made.headers["location"])
        await http.patch(
            urls[1],
            content=b"abcd",
            headers={
                **TUS,
                **ALICE,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
        )
        await http.post("/files/", headers={**TUS, **BOB, "Upload-Length": "9"})
        first = (await http.get("/api/uploads?limit=2", headers=ALICE)).json()
        assert [u["url"] for u in first["uploads"]] == urls[:2]
        assert first["uploads"][0]["metadata"] == {"filename": "a.txt"}
        assert first["uploads"][1]["state"] == "complete"
        assert first["next"]
        rest = (
            await http.get(f"/api/uploads?limit=2&cursor={first['next']}", headers=ALICE)
        ).json()
        assert [u["url"] for u in rest["uploads"]] == urls[2:]
        assert rest["next"] is None
        done = (await http.get("/api/uploads?state=complete", headers=ALICE)).json()
        assert [(u["url"], u["offset"], u["length"]) for u in done["uploads"]] == [(urls[1], 4, 4)]
        active = (await http.get("/api/uploads?state=active", headers=ALICE)).json()
        assert {u["url"] for u in active["uploads"]} == {urls[0], urls[2]}
        bobs = (await http.get("/api/uploads", headers=BOB)).json()["uploads"]
        assert len(bobs) == 1
        assert bobs[0]["length"] == 9
        upload_id = urls[1].rsplit("/", 1)[1]
        one = await http.get(f"/api/uploads/{upload_id}", headers=ALICE)
        assert one.json()["sha256"] is not None
        assert (await http.get(f"/api/uploads/{upload_id}", headers=BOB)).status_code == 404
        assert (await http.get("/api/uploads")).status_code == 401


async def test_bad_parameters_are_refused_in_words() -> None:
    async with asgi_client(memory_service()) as http:
        bad = ("state=gone", "limit=0", "limit=5000", "limit=x", "cursor=%%%",
               "cursor=bm90IGpzb24", "since=yesterday", "since=2026-01-01T00:00:00")  # fmt: skip
        for query in bad:
            answer = await http.get(f"/api/uploads?{query}")
            assert answer.status_code == 400, query
            assert answer.text.startswith("ERR_"), query
        future = (await http.get("/api/uploads?since=2999-01-01T00:00:00Z")).json()
        assert future == {"uploads": [], "next": None}
