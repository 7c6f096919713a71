"""Liveness/readiness report for operators and load balancers."""

from collections.abc import Callable
from typing import Any

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

HealthCheck = Callable[[], dict[str, Any]]

# Other layers append their checks here (see workflows.apps); each returns {"ok": bool, ...}.
CHECKS: dict[str, HealthCheck] = {}


def check_database() -> dict[str, Any]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "not healthy", which is what we report
        return {"ok": False, "error": str(exc)}
    return {"ok": True, "vendor": connection.vendor}


CHECKS["database"] = check_database


def run_checks() -> tuple[bool, dict[str, dict[str, Any]]]:
    results = {name: check() for name, check in CHECKS.items()}
    healthy = all(result["ok"] or result.get("optional", False) for result in results.values())
    return healthy, results


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    healthy, results = run_checks()
    return JsonResponse(
        {"status": "ok" if healthy else "unhealthy", "checks": results}, status=200 if healthy else 503
    )
