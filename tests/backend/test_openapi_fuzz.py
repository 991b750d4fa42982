"""schemathesis against the real app, from its own OpenAPI schema: SQLite and PostgreSQL, token on and off.

Every check runs (no 5xx, responses and stream events match their schemas, only documented status codes
and media types, schema-valid requests accepted, invalid ones refused), on valid and on invalid (negative)
inputs. The example budget is fixed so the four runs fit in CI. (schemathesis' pytest plugin does not load under pytest 9, so the operations are
driven here through its strategies, which is what the plugin does.)
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from backend.main import create_app
from slimpipe import names

TOKEN = "fuzz-token"
# A spec's rules across fields (a stop condition, stage paths that exist in the model, paths inside the data
# root, boundaries that exist) are not JSON Schema: a spec the schema admits may still be refused, always
# with a 422 naming the field. Everywhere else a schema-valid request must succeed.
CONFIG = SchemathesisConfig.from_str("""
[[operations]]
include-path-regex = "^/api/v1/(experiments|specs/validate)$"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]
""")
EXAMPLES = {GenerationMode.POSITIVE: 8, GenerationMode.NEGATIVE: 3}


def check_operation(operation: Any, mode: GenerationMode, headers: dict[str, str]) -> int:
    """Call one operation with `EXAMPLES[mode]` generated cases, validating each answer; returns the calls made."""
    calls = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES[mode], deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
    )
    def call(case: Any) -> None:
        nonlocal calls
        calls += 1
        case.call_and_validate(headers=headers)

    try:
        call()
    except Unsatisfiable:
        assert mode == GenerationMode.NEGATIVE  # nothing to get wrong: no parameters and no body
    return calls


def fuzz(schema: Any, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    """Every operation, valid and invalid inputs; returns (calls made, {operation: first failure})."""
    calls, failures = 0, {}
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in EXAMPLES:
            try:
                calls += check_operation(operation, mode, headers)
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises one group listing the failed checks
                failures[f"{operation.method.upper()} {operation.path} ({mode.value})"] = str(exc)[:2000]
    return calls, failures


@pytest.mark.parametrize("token", [None, TOKEN], ids=["no-token", "token"])
def test_the_api_honours_its_openapi_schema(make_settings, token):
    # "testserver" is the Host the ASGI test transport sends.
    app = create_app(make_settings(api_token=token, allowed_hosts="localhost,testserver"))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG)
    # What the dashboard sends: the cross-site guard's header and, when there is one, the token.
    headers = {names.CSRF_HEADER: "1", **({"Authorization": f"Bearer {token}"} if token else {})}
    calls, failures = fuzz(schema, headers)
    assert calls >= 100
    assert failures == {}, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
