"""Schemathesis fuzzes the participant JSON API from the app's own OpenAPI schema.

Every operation under ``/api/`` gets generated requests, schema-valid ("positive") and invalid
("negative"), sent with a real participant's token so they reach the handlers and not just the
401 of the token check. Checks: no 5xx; every status code, header and body as the schema
documents; invalid data rejected. ``positive_data_acceptance`` is left out on purpose: schema-valid
requests are still refused by the study's rules (a trial index not in this participant's plan,
an answer outside the response options, answers after completion), with documented 4xx answers.

The in-process cases run the app on schemathesis's own event loop, where the save endpoint takes
its threaded path; the last test fuzzes the save endpoint over real HTTP against ``uvicorn
app.asgi:app``, where on PostgreSQL it takes the async path that serves studies.

(Schemathesis's own pytest plugin does not run under pytest 9, so the cases come from its
``as_strategy`` API under Hypothesis's ``@given``; the checks are the same.)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from schemathesis import GenerationMode
from schemathesis.core.parameters import ParameterLocation

from app.core.settings import Settings
from app.main import create_app
from tests.processes import LiveServer
from tests.study import build_study

# Examples per operation and mode: enough to hit the validators and the handlers, small for CI.
MAX_EXAMPLES = 25


def _operations() -> dict[str, bool]:
    """The JSON API's operations (label -> has a JSON body), read from the app's schema at
    collection time (no database needed)."""
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(database_url=f"sqlite:///{tmp}/none.db", var_dir=Path(tmp), secret_key="x"), check_schema=False)
        paths = app.openapi()["paths"]
    return {f"{m.upper()} {path}": "requestBody" in op for path, ops in paths.items() if path.startswith("/api/") for m, op in ops.items()}


OPERATIONS = _operations()
# Invalid data for every operation that takes a body (the others have only the token header,
# whose invalid values the security tests cover).
CASES = [pytest.param(label, GenerationMode.POSITIVE, id=f"{label}-valid") for label in OPERATIONS] + [
    pytest.param(label, GenerationMode.NEGATIVE, id=f"{label}-invalid") for label, has_body in OPERATIONS.items() if has_body
]


def test_the_fuzzed_operations_cover_the_participant_api() -> None:
    assert {"GET /api/session", "POST /api/session/responses", "POST /api/session/complete", "POST /api/session/events"} <= set(OPERATIONS)


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_participant_api_conforms_to_its_schema_under_fuzzing(label: str, mode: GenerationMode, settings: Settings, tmp_path: Path) -> None:
    study = build_study(settings, tmp_path)
    token = study.join("FUZZ")
    study.start(token)  # consented: the answer handlers run their full checks
    method, path = label.split(" ", 1)
    schema = schemathesis.openapi.from_asgi("/openapi.json", study.client.app).include(method=method, path=path)
    (operation,) = [r.ok() for r in schema.get_all_operations()]
    # Valid cases always carry the real token; invalid ones get it unless the header is what
    # was made invalid (then the 401 path is exercised).
    _fuzz(operation, mode, token)


def _fuzz(operation, mode: GenerationMode, token: str, base_url: str | None = None) -> None:  # type: ignore[no-untyped-def]
    """Send ``MAX_EXAMPLES`` generated requests to one operation and check each answer."""
    fixed = {"Authorization": f"Bearer {token}"} if mode is GenerationMode.POSITIVE else None
    strategy = operation.as_strategy(mode, headers=fixed)

    @hsettings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=strategy)
    def fuzz(case) -> None:  # type: ignore[no-untyped-def]
        if fixed is None and not case.meta.is_negative_at(ParameterLocation.HEADER):
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
        response = case.call(base_url=base_url)
        excluded = [schemathesis.checks.positive_data_acceptance]
        if response.status_code == 413:
            # The body limit refuses before validation; a rejection, though not one of the
            # statuses schemathesis expects for invalid data (413 is documented in the schema).
            excluded.append(schemathesis.checks.negative_data_rejection)
        case.validate_response(response, excluded_checks=excluded)

    fuzz()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_the_save_endpoint_conforms_under_fuzzing_over_real_http(mode: GenerationMode, settings: Settings, tmp_path: Path) -> None:
    study = build_study(settings, tmp_path)
    token = study.join("FUZZ")
    study.start(token)
    server = LiveServer(settings, tmp_path / "uvicorn.log")
    server.start()
    try:
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json").include(method="POST", path="/api/session/responses")
        (operation,) = [r.ok() for r in schema.get_all_operations()]
        _fuzz(operation, mode, token, base_url=server.url)
    finally:
        server.stop()
    assert "Traceback" not in server.log.read_text()
