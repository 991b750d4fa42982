import pytest

from backend.deps import token_matches
from backend.main import create_app
from tests.backend.conftest import SPEC, client_for


@pytest.fixture
def locked(make_settings):
    with client_for(create_app(make_settings(api_token="s3cret-token"))) as client:
        yield client


def test_with_a_token_every_api_call_needs_the_bearer_header(locked, submit):
    for method, path in [("GET", "/api/v1/runs"), ("GET", "/api/v1/experiments"), ("GET", "/api/v1/zoo"), ("POST", "/api/v1/experiments")]:
        response = locked.request(method, path, json={"spec": SPEC})
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
        assert "SLIMPIPE_API_TOKEN" in response.json()["detail"]
    wrong = locked.get("/api/v1/runs", headers={"Authorization": "Bearer s3cret-tokem"})
    assert wrong.status_code == 401
    basic = locked.get("/api/v1/runs", headers={"Authorization": "Basic s3cret-token"})
    assert basic.status_code == 401
    good = {"Authorization": "Bearer s3cret-token"}
    created = locked.post("/api/v1/experiments", json={"spec": SPEC}, headers=good)
    assert created.status_code == 201
    run_id = created.json()["run_ids"][0]
    assert locked.get(f"/api/v1/runs/{run_id}", headers=good).json()["id"] == run_id


def test_event_stream_takes_the_token_as_a_query_parameter(locked):
    good = {"Authorization": "Bearer s3cret-token"}
    run_id = locked.post("/api/v1/experiments", json={"spec": SPEC}, headers=good).json()["run_ids"][0]
    locked.post(f"/api/v1/runs/{run_id}/cancel", headers=good)
    assert locked.get(f"/api/v1/runs/{run_id}/events").status_code == 401
    assert locked.get(f"/api/v1/runs/{run_id}/events", params={"token": "nope"}).status_code == 401
    with locked.stream("GET", f"/api/v1/runs/{run_id}/events", params={"token": "s3cret-token"}) as response:
        assert response.status_code == 200
        assert '"status":"cancelled"' in response.read().decode().replace(" ", "")


def test_health_stays_open_with_a_token(locked):
    assert locked.get("/healthz").json() == {"ok": True}
    assert locked.get("/readyz").status_code == 200


def test_without_a_token_the_api_is_open(api):
    assert api.get("/api/v1/runs").status_code == 200
    assert api.get("/api/v1/runs", headers={"Authorization": "Bearer anything"}).status_code == 200


def test_token_comparison():
    assert token_matches(None, None) and token_matches("", "x")
    assert token_matches("abc", "abc")
    assert not token_matches("abc", "abd") and not token_matches("abc", None) and not token_matches("abc", "ab")
