"""The service's refusals: one hierarchy, each error carrying the HTTP answer it stands for.

Services raise these; the API turns any of them into DRF's error shape in one place
(`emgapi.exceptions.api_exception_handler`), the admin shows their message, and the flows and the sweep catch
the ones they expect. No view maps an error to a status code by hand.
"""

from typing import Any

from rest_framework import status


class ServiceError(Exception):
    """A refusal by a service, with the status and machine-readable code the API answers it with."""

    status_code: int = status.HTTP_400_BAD_REQUEST
    code: str = "invalid"

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        # More fields of the answer's body beside `detail` (e.g. the request's status); plain JSON values.
        self.fields = fields

    def body(self) -> dict[str, Any]:
        return {"detail": str(self), **self.fields}


class Conflict(ServiceError):
    """The resource is in a state that refuses the action (409)."""

    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class Unprocessable(ServiceError):
    """Well-formed, but contradicts what was sent before (422)."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    code = "unprocessable_entity"


class ExistingRequestError(ServiceError):
    """A refusal because of another request, which the answer links to (`existing`: its URL in the API)."""

    def __init__(self, message: str, existing_request_id: int) -> None:
        super().__init__(message)
        self.existing_request_id = existing_request_id
