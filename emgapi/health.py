"""Health for load balancers and operators.

`/healthz` is liveness: this process answers and its database does, nothing more, so a probe every few seconds
costs one `SELECT 1` and never waits on Prefect or Slurm. `/readyz` runs every registered check (Prefect, Slurm,
the dispatcher, the poller, recovery), each result cached for `HEALTH_CACHE_SECONDS` in the process and
refreshed by one caller at a time, so neither a dashboard polling it nor a crowd of anonymous callers becomes a
load on the controller. Anonymous callers get the status only; error texts can carry hostnames and internals:
only staff see them.
"""

import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

HealthCheck = Callable[[], dict[str, Any]]

# Other layers add their deep checks here (see workflows.apps); each returns {"ok": bool, ...}.
CHECKS: dict[str, HealthCheck] = {}
LIVENESS = ("database",)
PRIVATE_FIELDS = frozenset({"error", "last_error", "requests_recovering"})

_cache: dict[str, tuple[float, dict[str, Any]]] = {}
_cache_lock = threading.Lock()
_refreshing: dict[str, threading.Lock] = {}  # one per check: held by the caller rerunning it


def check_database() -> dict[str, Any]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "not healthy", which is what we report
        return {"ok": False, "error": str(exc)}
    return {"ok": True, "vendor": connection.vendor}


CHECKS["database"] = check_database


def _cached(name: str, check: HealthCheck) -> dict[str, Any]:
    """The check's result of the last HEALTH_CACHE_SECONDS, or a new one. Single flight: when it has expired, one
    caller reruns the check (Prefect's takes up to 2 s, Slurm's 3 s) and the callers meanwhile read the previous
    result; only the very first callers, with nothing to read, wait for it."""
    with _cache_lock:
        hit = _cache.get(name)
        refreshing = _refreshing.setdefault(name, threading.Lock())
    if hit is not None and time.monotonic() - hit[0] < settings.HEALTH_CACHE_SECONDS:
        return hit[1]
    if not refreshing.acquire(blocking=hit is None):
        assert hit is not None
        return hit[1]
    try:
        with _cache_lock:
            hit = _cache.get(name)
        if hit is not None and time.monotonic() - hit[0] < settings.HEALTH_CACHE_SECONDS:
            return hit[1]  # refreshed by the caller this one waited for
        result = check()
        with _cache_lock:
            _cache[name] = (time.monotonic(), result)
        return result
    finally:
        refreshing.release()


def run_checks(names: tuple[str, ...] | None = None, *, cached: bool = False) -> tuple[bool, dict[str, Any]]:
    """Run `names` (default: all) of CHECKS; (healthy, results). Optional checks report but never fail."""
    selected = {name: CHECKS[name] for name in (names or tuple(CHECKS))}
    results = {name: _cached(name, check) if cached else check() for name, check in selected.items()}
    healthy = all(result["ok"] or result.get("optional", False) for result in results.values())
    return healthy, results


def _response(
    request: HttpRequest, healthy: bool, results: dict[str, Any], *, checks_for_anyone: bool = True
) -> JsonResponse:
    body: dict[str, Any] = {"status": "ok" if healthy else "unhealthy"}
    if request.user.is_authenticated and request.user.is_staff:
        body["checks"] = results
    elif checks_for_anyone:
        body["checks"] = {
            name: {key: value for key, value in result.items() if key not in PRIVATE_FIELDS}
            for name, result in results.items()
        }
    return JsonResponse(body, status=200 if healthy else 503)


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process and its database."""
    return _response(request, *run_checks(LIVENESS))


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness and the operator's view: every check, each cached for a few seconds. A load balancer needs the
    status code only, and that is all an anonymous caller gets; signed-in users see the checks, staff their
    errors too."""
    return _response(request, *run_checks(cached=True), checks_for_anyone=request.user.is_authenticated)
