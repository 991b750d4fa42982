"""Health, readiness, the zoo presets, the body size limit and the 422 format."""


from backend.main import create_app, field_errors
from slimpipe import names, presets
from tests.backend.conftest import SPEC, client_for


def test_health_and_readiness(api):
    assert api.get("/healthz").json() == {"ok": True}
    assert api.get("/readyz").json() == {"database": True, "broker": True}


def test_readiness_is_503_when_the_broker_is_down(make_settings):
    with client_for(create_app(make_settings(broker_url="redis://127.0.0.1:1/0"))) as api:
        response = api.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"database": True, "broker": False}


def test_readiness_is_503_when_the_database_is_down(make_settings, tmp_path):
    settings = make_settings(database_url="postgresql+psycopg://postgres@127.0.0.1:1/none")
    with client_for(create_app(settings)) as api:
        response = api.get("/readyz")
    assert response.status_code == 503
    assert response.json()["database"] is False


def test_zoo_lists_every_registered_model_with_its_default_partition(api):
    zoo = api.get("/api/v1/zoo").json()
    assert list(zoo["models"]) == list(names.MODELS)
    assert zoo["models"]["mobilenetv2_cifar"]["default_stages"][1:3] == [["layers[0:3]"], ["layers[3:7]"]]
    assert all(zoo["models"][m]["default_stages"] == presets.DEFAULT_STAGES[m] for m in names.MODELS)
    assert zoo["datasets"] == list(names.DATASETS)
    assert {"topk", "bits", "entropy", "feedback"} <= set(zoo["compression_fields"]["properties"])


def test_bodies_over_the_limit_are_413(make_settings):
    with client_for(create_app(make_settings(max_body_bytes=2000))) as api:
        small = api.post("/api/v1/experiments", json={"spec": SPEC})
        assert small.status_code == 201
        big = api.post("/api/v1/experiments", json={"spec": SPEC, "tags": ["x" * 3000]})
        assert big.status_code == 413
        assert "SLIMPIPE_MAX_BODY_BYTES" in big.json()["detail"]

        def chunks():  # no Content-Length: counted as it streams
            yield b'{"spec": {"name": "'
            yield b"y" * 5000
            yield b'"}}'

        streamed = api.post("/api/v1/specs/validate", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413


def test_validation_errors_are_reformatted_to_field_and_message():
    errors = [
        {"loc": ("body", "spec"), "msg": "Field required", "type": "missing"},
        {"loc": ("body", "spec", "model", "name"), "msg": "Value error, unknown model", "type": "value_error"},
        {"loc": ("query", "max_points"), "msg": "Input should be greater than or equal to 8", "type": "greater_than_equal"},
    ]
    assert field_errors(errors) == [
        {"field": "spec", "message": "is required"},
        {"field": "model.name", "message": "unknown model"},
        {"field": "max_points", "message": "Input should be greater than or equal to 8"},
    ]


def test_openapi_documents_the_contract(api):
    schema = api.get("/openapi.json").json()
    for path in ["/api/v1/experiments", "/api/v1/runs/{run_id}/metrics", "/api/v1/runs/{run_id}/events", "/api/v1/compare", "/healthz"]:
        assert path in schema["paths"]
    body = schema["paths"]["/api/v1/runs/{run_id}/metrics"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/MetricsCreate"}
    assert "MetricPointIn" in schema["components"]["schemas"]


def test_a_bad_setting_is_one_line_naming_its_variable_not_a_traceback(monkeypatch, capsys):
    from backend.settings import get_settings
    from slimpipe import cli

    for value, says in (("abc", "Input should be a valid number"), ("-5", "greater than or equal to 0")):
        monkeypatch.setenv("SLIMPIPE_DATABASE_OUTAGE_S", value)
        get_settings.cache_clear()
        try:
            assert cli.main(["serve", "--no-worker"]) == 2
        finally:
            get_settings.cache_clear()
        err = capsys.readouterr().err
        assert err.startswith(f"slimpipe: SLIMPIPE_DATABASE_OUTAGE_S={value!r}: ") and says in err
        assert len(err.splitlines()) == 1


def test_every_setting_is_documented_under_its_variable():
    """An operator finds each `SLIMPIPE_*` variable in the docs; a new setting without a line there fails here."""
    from pathlib import Path

    from backend.settings import Settings

    root = Path(__file__).resolve().parents[2]
    docs = " ".join(p.read_text() for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))])
    missing = [f"SLIMPIPE_{name.upper()}" for name in Settings.model_fields if f"SLIMPIPE_{name.upper()}" not in docs]
    assert missing == []
