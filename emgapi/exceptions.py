from typing import Any

from django.core.exceptions import RequestDataTooBig
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import exception_handler

from analyses.errors import ExistingRequestError, ServiceError


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus the services' refusals in DRF's shape, and a 413 for oversize bodies (Django's own
    answer would be a bare 400)."""
    if isinstance(exc, RequestDataTooBig):
        return Response({"detail": str(exc)}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, ServiceError):
        body = exc.body()
        if isinstance(exc, ExistingRequestError):
            body["existing"] = reverse(
                "assembly-analysis-request-detail",
                args=[exc.existing_request_id],
                request=context.get("request"),
            )
        answer = APIException(body, code=exc.code)
        answer.status_code = exc.status_code
        return exception_handler(answer, context)
    return exception_handler(exc, context)
