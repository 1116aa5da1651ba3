from __future__ import annotations

import httpx

from tests.api.conftest import Keys


def test_track_then_profile(client: httpx.Client, keys: Keys) -> None:
    response = client.post("/v1/track", auth=(keys.write, ""), json={
        "userId": "u1", "event": "Signed Up", "messageId": "m1",
        "properties": {"plan": "pro"}})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    found = client.get("/api/contacts", params={"user_id": "u1"},
                       headers={"Authorization": f"Bearer {keys.admin}"})
    assert found.status_code == 200, found.text
    [contact] = found.json()["items"]
    profile = client.get(f"/api/contacts/{contact['id']}",
                         headers={"Authorization": f"Bearer {keys.admin}"}).json()
    assert profile["timeline"]["items"][0]["name"] == "Signed Up"
