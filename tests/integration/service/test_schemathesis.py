"""Schemathesis against the live `/openapi.json`: no generated request makes the real service answer 5xx.

Every operation gets a bounded number of generated requests (bodies, paths and query strings from the
document, and mutations of them), sent with the admin token so the admin routes are reached too. The
drain route is left out (it would stop the service under test), and so are bodies that would start the
`cpu` or `sleep` demo handlers with arbitrary durations (a busy loop cannot be interrupted).
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, assume, settings
from schemathesis import Case

from hulk.http.openapi import openapi_document
from tests.integration.service.conftest import ServiceFactory
from tests.integration.service.helpers import ADMIN_TOKEN, ServiceProcess, admin_headers, client_for
from tests.nats_servers import NatsServer

pytestmark = pytest.mark.integration

LONG_RUNNING = frozenset({"cpu", "sleep"})


@pytest.fixture(scope="module")
def fuzzed(module_nats: NatsServer, module_services: ServiceFactory) -> ServiceProcess:
    return module_services(
        module_nats,
        HULK_SERVER__ADMIN_TOKEN=ADMIN_TOKEN,
        HULK_SERVER__REQUEST_TIMEOUT="10s",
        HULK_ENGINE__MAX_RETRIES="0",
        HULK_ENGINE__TIMEOUT="2s",
    )


# The document is built in-process at import (schemathesis makes one test per operation at collection
# time, before any service runs); the first test checks the live `/openapi.json` is that very document.
schema = schemathesis.openapi.from_dict(openapi_document()).exclude(path="/v1/admin/drain")


def test_live_document_is_the_one_fuzzed(fuzzed: ServiceProcess) -> None:
    with client_for(fuzzed) as client:
        assert client.get("/openapi.json").json() == openapi_document()


def starts_long_task(body: Any) -> bool:
    if isinstance(body, dict):
        kind = body.get("type")
        return (isinstance(kind, str) and kind in LONG_RUNNING) or any(starts_long_task(v) for v in body.values())
    if isinstance(body, list):
        return any(starts_long_task(v) for v in body)
    return False


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_error(case: Case[Any], fuzzed: ServiceProcess) -> None:
    assume(not starts_long_task(case.body))
    response = case.call(base_url=fuzzed.url, headers=admin_headers(), timeout=30)
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
