"""The attacks and faults of issue 12, each replayed against the real app on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.main import create_app
from backend.security import RedactToken
from slimpipe import names
from slimpipe.spec import set_path
from tests.backend.conftest import SPEC, client_for

TOKEN = "s3cret-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def locked(make_settings):
    with client_for(create_app(make_settings(api_token=TOKEN))) as client:
        yield client


def errors(response: Any) -> list[dict[str, str]]:
    body = response.json()
    assert set(body) == {"detail"}, body
    return body["detail"]


# --------------------------------------------------------------------------- 1. file escapes


@pytest.mark.parametrize(
    ("model", "data", "field"),
    [
        ({"name": "tiny_mlp"}, {"name": "text_file", "options": {"train": "/etc/passwd"}}, "data.options.train"),
        ({"name": "tiny_mlp"}, {"name": "text_file", "options": {"train": "ok.csv", "val": "/etc/passwd"}}, "data.options.val"),
        ({"name": "tiny_mlp"}, {"name": "cifar10", "options": {"path": "/etc"}}, "data.options.path"),
        ({"name": "tiny_mlp"}, {"name": "image_folder", "options": {"path": "../.."}}, "data.options.path"),
        ({"name": "tiny_mlp"}, {"name": "glue", "options": {"path": "~"}}, "data.options.path"),
        ({"name": "hf_classifier", "options": {"pretrained": "/etc"}}, {"name": "synthetic_text"}, "model.options.pretrained"),
        ({"name": "hf_classifier", "options": {"tokenizer": "/etc"}}, {"name": "synthetic_text"}, "model.options.tokenizer"),
        ({"name": "minilm", "options": {"tokenizer": "./../../x"}}, {"name": "synthetic_text"}, "model.options.tokenizer"),
    ],
)
def test_every_path_field_outside_the_data_root_is_refused_at_submit(api, model, data, field):
    spec = {**SPEC, "model": model, "data": data}
    response = api.post("/api/v1/experiments", json={"spec": spec})
    assert response.status_code == 422, response.text
    (error,) = errors(response)
    assert error["field"] == field
    assert "outside SLIMPIPE_DATA_ROOT" in error["message"]


def test_a_symlink_inside_the_data_root_that_points_out_is_refused(api, settings):
    settings.data_root.mkdir(parents=True, exist_ok=True)
    os.symlink("/etc", settings.data_root / "innocent")
    spec = {**SPEC, "data": {"name": "text_file", "options": {"train": "innocent/passwd"}}}
    response = api.post("/api/v1/experiments", json={"spec": spec})
    assert response.status_code == 422
    assert errors(response)[0]["field"] == "data.options.train"


def test_a_path_option_must_be_a_string_without_nul(api):
    for value, words in ((5, "must be a path string"), ("a\x00b", "NUL")):
        spec = {**SPEC, "data": {"name": "text_file", "options": {"train": value}}}
        response = api.post("/api/v1/experiments", json={"spec": spec})
        assert response.status_code == 422
        assert words in errors(response)[0]["message"]


def test_every_registered_dataset_and_model_declares_its_options():
    from slimpipe.datapaths import DATASET_OPTIONS, MODEL_OPTIONS

    assert set(DATASET_OPTIONS) == set(names.DATASETS)
    assert set(MODEL_OPTIONS) == set(names.MODELS)


# --------------------------------------------------------------------------- 3. the YAML endpoints


BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)


def test_the_yaml_alias_bomb_is_refused_small_and_fast(api):
    assert len(BOMB) < 400
    response = api.post("/ui/spec/parse", json={"text": BOMB})
    assert response.status_code == 422
    assert "expands to more than" in response.json()["detail"][0]["message"]
    assert len(response.content) < 1000


def test_yaml_too_deep_or_too_long_is_refused(api):
    deep = "a: " + "[" * 40 + "]" * 40
    assert "deeper than" in api.post("/ui/spec/parse", json={"text": deep}).json()["detail"][0]["message"]
    assert api.post("/ui/spec/parse", json={"text": "x" * (1 << 20 + 1)}).status_code == 422


def test_the_yaml_endpoints_need_the_token_when_one_is_set(locked):
    assert locked.post("/ui/spec/parse", json={"text": "a: 1"}).status_code == 401
    assert locked.post("/ui/spec/yaml", json={"spec": {"a": 1}}).status_code == 401
    assert locked.post("/ui/spec/parse", json={"text": "a: 1"}, headers=BEARER).json() == {"spec": {"a": 1}}
    assert locked.post("/ui/spec/yaml", json={"spec": {"a": 1}}, headers=BEARER).text == "a: 1\n"


def test_yaml_that_parses_to_nan_is_refused_not_a_500(api):
    response = api.post("/ui/spec/parse", json={"text": "optim: {lr: .nan}"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "optim.lr"


# --------------------------------------------------------------------------- 4. the token


def test_query_token_opens_only_the_event_stream(locked):
    run_id = locked.post("/api/v1/experiments", json={"spec": SPEC}, headers=BEARER).json()["run_ids"][0]
    locked.post(f"/api/v1/runs/{run_id}/cancel", headers=BEARER)
    for path in ("/api/v1/runs", f"/api/v1/runs/{run_id}", f"/api/v1/runs/{run_id}/logs", "/api/v1/zoo"):
        assert locked.get(path, params={"token": TOKEN}).status_code == 401, path
    with locked.stream("GET", f"/api/v1/runs/{run_id}/events", params={"token": TOKEN}) as response:
        assert response.status_code == 200


@pytest.mark.parametrize(
    "header",
    [f"Bearer  {TOKEN}", f"Bearer {TOKEN} ", f" Bearer {TOKEN}", f"Bearer\t{TOKEN}", f"Bearer {TOKEN}, Bearer x", TOKEN, f"Token {TOKEN}"],
)
def test_bearer_header_is_parsed_strictly(locked, header):
    assert locked.get("/api/v1/runs", headers={"Authorization": header}).status_code == 401


def test_bearer_scheme_is_case_insensitive(locked):
    assert locked.get("/api/v1/runs", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_a_query_token_is_redacted_from_access_log_lines():
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", f"/api/v1/runs/1/events?cursor=0:0&token={TOKEN}", "1.1", 200), None,
    )  # fmt: skip
    assert RedactToken().filter(record)
    assert TOKEN not in record.getMessage()
    assert "token=[redacted]" in record.getMessage()


# --------------------------------------------------------------------------- 5, 6. values the databases cannot hold


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/runs/{2**70}",
        f"/api/v1/experiments/{2**64}",
        f"/api/v1/runs?offset={2**70}",
        f"/api/v1/runs?limit={2**70}",
        "/api/v1/runs?limit=-1",
        "/api/v1/experiments?limit=-5",
        f"/api/v1/runs?experiment_id={2**63}",
        f"/api/v1/runs/1/metrics?since_step={2**70}",
        f"/api/v1/runs/1/logs?since_id={2**70}",
        f"/api/v1/compare?run_ids=1,{2**70}",
        f"/api/v1/compare?run_ids=1&baseline={2**70}",
        "/api/v1/runs?tag=a%00b",
        "/api/v1/runs/1/metrics?names=a%00b",
        f"/api/v1/runs/1/events?cursor={2**70}:0",
    ],
)
def test_out_of_range_and_nul_parameters_are_422_not_500(api, path):
    response = api.get(path)
    assert response.status_code == 422, (path, response.text)
    assert errors(response)[0]["field"] and errors(response)[0]["message"]


def test_event_stream_cursor_past_64_bits_from_last_event_id_restarts_the_stream(api, submit):
    run_id = submit()["run_ids"][0]
    api.post(f"/api/v1/runs/{run_id}/cancel")
    headers = {"Last-Event-ID": f"{2**70}:{2**70}"}
    with api.stream("GET", f"/api/v1/runs/{run_id}/events", headers=headers) as response:
        text = response.read().decode()
    assert response.status_code == 200
    assert "cancelled" in text  # the whole stream, ending with the final status


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (set_path(SPEC, "optim.lr", float("inf")), "optim.lr"),
        (set_path(SPEC, "train.seed", 2**70), "train.seed"),
        (set_path(SPEC, "train.max_steps", 2**40), "train.max_steps"),
        (set_path(SPEC, "data.options", {"noise": float("nan")}), "data.options.noise"),
        (set_path(SPEC, "name", "a\x00b"), "name"),
        (set_path(SPEC, "tags", ["x\x00"]), "tags.0"),
    ],
)
def test_specs_that_could_never_run_or_be_stored_are_refused(api, spec, field):
    import json

    body = json.dumps({"spec": spec}, allow_nan=True)  # Infinity/NaN tokens, as a careless client sends them
    response = api.post("/api/v1/experiments", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert errors(response)[0]["field"] == field


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [("optim.lr", float("inf"), "finite"), ("train.seed", 2**70, "less than or equal"), ("link.latency_ms", float("nan"), "finite")],
)
def test_the_spec_itself_refuses_values_no_run_could_use(path, value, words):
    """Whatever the transport (a YAML `.inf` through the CLI, a Python client): the spec model says no."""
    from slimpipe.spec import SpecError, parse_spec

    with pytest.raises(SpecError) as raised:
        parse_spec(set_path(SPEC, path, value))
    assert raised.value.errors[0]["field"] == path
    assert words in raised.value.errors[0]["message"]


def test_integers_past_64_bits_and_nul_anywhere_in_a_body_are_422(api):
    for body, field in (
        ({"spec": set_path(SPEC, "data.options.x", 2**70)}, "data.options.x"),
        ({"spec": SPEC, "tags": ["ok", "b\x00d"]}, "tags.1"),
        ({"spec": SPEC, "sweep": {"optim.lr": [0.1, 2**80]}}, "optim.lr.1"),
    ):
        response = api.post("/api/v1/experiments", json=body)
        assert response.status_code == 422, response.text
        assert errors(response)[0]["field"] == field


def test_metric_points_with_nan_time_huge_step_or_nul_name_are_422(api, submit):
    run_id = submit()["run_ids"][0]
    for point, field in (
        ('{"step": 1, "name": "x", "value": 1, "time": NaN}', "points.0.time"),
        (f'{{"step": {2**70}, "name": "x", "value": 1}}', "points.0.step"),
        ('{"step": 1, "name": "a\\u0000b", "value": 1}', "points.0.name"),
    ):
        response = api.post(
            f"/api/v1/runs/{run_id}/metrics", content=f'{{"points": [{point}]}}', headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422, response.text
        assert errors(response)[0]["field"] == field
    ok = '{"points": [{"step": 1, "name": "train/loss", "value": NaN}]}'  # a diverged loss is data: stored as null
    assert api.post(f"/api/v1/runs/{run_id}/metrics", content=ok, headers={"Content-Type": "application/json"}).status_code == 202


# --------------------------------------------------------------------------- 8. cross-site requests and DNS rebinding


def test_cross_site_simple_posts_are_refused_without_a_token(settings, submit, api):
    run_id = submit()["run_ids"][0]
    # What a foreign page can send without a preflight: a form or text/plain, no custom header.
    bare = TestClient(create_app(settings), base_url="http://localhost")
    for method, path, kwargs in (
        ("POST", f"/api/v1/runs/{run_id}/cancel", {}),
        ("POST", f"/api/v1/runs/{run_id}/cancel", {"content": "x", "headers": {"Content-Type": "text/plain"}}),
        ("POST", f"/api/v1/runs/{run_id}/metrics", {"content": '{"points": [{"step": 1, "name": "x", "value": 1}]}', "headers": {"Content-Type": "text/plain"}}),
        ("POST", "/api/v1/experiments", {"data": {"spec": "x"}}),
        ("DELETE", f"/api/v1/runs/{run_id}", {}),
    ):
        response = bare.request(method, path, **kwargs)
        assert response.status_code == 403, (path, response.text)
        assert names.CSRF_HEADER in response.json()["detail"]
    assert api.get(f"/api/v1/runs/{run_id}").json()["status"] == names.QUEUED  # nothing happened
    assert bare.post(f"/api/v1/runs/{run_id}/cancel", headers={names.CSRF_HEADER: "1"}).status_code == 200
    assert bare.post("/api/v1/specs/validate", json={"spec": SPEC}).status_code == 200  # a JSON body is enough


def test_a_foreign_host_header_is_refused(settings):
    rebound = TestClient(create_app(settings), base_url="http://attacker.example")
    response = rebound.get("/api/v1/runs")
    assert response.status_code == 421
    assert "SLIMPIPE_ALLOWED_HOSTS" in response.json()["detail"]
    for host in ("127.0.0.1:8000", "localhost", "[::1]:8000"):
        assert TestClient(create_app(settings), base_url=f"http://{host}").get("/healthz").status_code == 200


def test_the_allowed_hosts_are_configurable(make_settings):
    app = create_app(make_settings(allowed_hosts="slimpipe.lab.example"))
    assert TestClient(app, base_url="http://slimpipe.lab.example").get("/healthz").status_code == 200
    assert TestClient(app, base_url="http://localhost").get("/healthz").status_code == 421


# --------------------------------------------------------------------------- 9. the schema and malformed bodies


def test_openapi_documents_the_error_shapes_statuses_media_types_and_security(api):
    schema = api.get("/openapi.json").json()
    components = schema["components"]
    assert components["schemas"]["FieldError"]["required"] == ["field", "message"]
    assert "HTTPValidationError" not in components["schemas"]
    assert components["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "SLIMPIPE_API_TOKEN, when set"
    }  # fmt: skip
    run = schema["paths"]["/api/v1/runs/{run_id}"]["get"]
    assert {"401", "404", "422"} <= set(run["responses"])
    assert run["responses"]["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ValidationErrors"}
    media = {
        "/api/v1/runs/{run_id}/events": "text/event-stream",
        "/api/v1/runs/{run_id}/spec.yaml": "application/yaml",
        "/api/v1/runs/{run_id}/metrics.csv": "text/csv",
        "/api/v1/runs/{run_id}/metrics.jsonl": "application/x-ndjson",
    }
    for path, media_type in media.items():
        assert list(schema["paths"][path]["get"]["responses"]["200"]["content"]) == [media_type], path
    logs = schema["paths"]["/api/v1/runs/{run_id}/logs"]["get"]["responses"]["200"]["content"]
    assert set(logs) == {"text/plain", "application/json"}


def test_openapi_describes_the_spec_a_body_carries(api):
    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    for body in ("ExperimentCreate", "SpecValidate"):
        assert schemas[body]["properties"]["spec"]["$ref"] == "#/components/schemas/ExperimentSpec"
        assert schemas[body]["additionalProperties"] is False
    assert schemas["ExperimentSpec"]["required"] == ["model", "data"]
    assert schemas["ModelSpec"]["properties"]["name"]["enum"] == list(names.MODELS)
    assert schemas["DataSpec"]["properties"]["name"]["enum"] == list(names.DATASETS)
    assert schemas["CompressionSpec"]["properties"]["bits"]["anyOf"][0] == {"type": "integer", "maximum": 16, "minimum": 1}
    assert schemas["CompressionConfig"]["properties"]["boundaries"]["propertyNames"] == {"pattern": "^[0-9]{1,4}$"}
    # Free-form options: what the body guard takes (no NUL in keys or strings, 64-bit integers).
    options = schemas["DataSpec"]["properties"]["options"]
    assert options["propertyNames"] == {"pattern": "^[^\\x00]*$"}
    value = schemas["SafeJson"]["anyOf"]
    assert {"type": "integer", "maximum": float(2**63 - 1), "minimum": float(-(2**63))} in value  # FastAPI writes bounds as floats
    assert {"type": "string", "pattern": "^[^\\x00]*$"} in value


def test_unknown_body_keys_and_odd_boundary_keys_are_named(api):
    response = api.post("/api/v1/experiments", json={"spec": SPEC, "sweeps": {"optim.lr": [0.1]}})
    assert response.status_code == 422, response.text
    assert errors(response)[0]["field"] == "sweeps"
    # int() reads " 1" and "1.0"; a boundary index is written 0, 1, ...
    for key in (" 1", "1.0", "1_0"):
        response = api.post("/api/v1/specs/validate", json={"spec": set_path(SPEC, "compression.boundaries", {key: {}})})
        assert response.status_code == 422, response.text
        (error,) = errors(response)
        assert error["field"] == "compression.boundaries"
        assert "is not a boundary index" in error["message"]


def test_each_event_of_the_stream_is_described(api):
    content = api.get("/openapi.json").json()["paths"]["/api/v1/runs/{run_id}/events"]["get"]["responses"]["200"]["content"]
    event = content["text/event-stream"]["schema"]
    assert event["required"] == ["event", "data"]
    assert event["properties"]["event"]["enum"] == ["status", "metrics", "log"]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"{not json", "is not valid JSON"),
        (b"\xff\xfe\x00garbage", "is not valid JSON"),
        (b'{"spec": {"optim": {"lr": NaN}}}', "must be a finite number"),
        (b"[" * 100_000 + b"]" * 100_000, "is not valid JSON"),
    ],
)
def test_malformed_bodies_get_a_clear_422(api, content, words):
    for path in ("/api/v1/experiments", "/api/v1/specs/validate"):
        response = api.post(path, content=content, headers={"Content-Type": "application/json"})
        assert response.status_code == 422, response.text
        (error,) = errors(response)
        assert error["field"] == ("optim.lr" if "finite" in words else "body")
        assert words in error["message"]
