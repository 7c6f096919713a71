"""The OpenAPI schema names every status an endpoint can answer, each error with DRF's one error shape.

drf-spectacular documents the success response and what a view declares; the errors the framework itself answers
(a bad body or query parameter, no credentials, a permission refused, an unknown object or page, a throttle, the
body limit) are derived here from the view's own permission classes, throttles, paginator and path, so adding a
permission or a throttle to a view documents it too.
"""

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from rest_framework.pagination import CursorPagination, PageNumberPagination
from rest_framework.permissions import SAFE_METHODS, AllowAny, IsAuthenticated, IsAuthenticatedOrReadOnly

ERROR_SCHEMA = {
    "type": "object",
    "description": (
        "DRF's error shape: `detail` says what went wrong; a 400 about the body or query names each field "
        "instead, with a list of messages. A 409 may add the URL of the resource it conflicts with."
    ),
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": {
        "oneOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}, {"type": "object"}]
    },
}


def refuses(permission: Any, action: str | None, method: str) -> tuple[bool, bool]:
    """(may answer 401, may answer 403) for one permission instance on this action and method."""
    if isinstance(permission, AllowAny):
        return False, False
    if isinstance(permission, IsAuthenticatedOrReadOnly):
        return method not in SAFE_METHODS, False
    if isinstance(permission, IsAuthenticated):
        return True, False
    # A permission class may say which actions (`refuses_actions`) or methods (`refuses_methods`) it can refuse;
    # by default, all of them.
    actions = getattr(permission, "refuses_actions", None)
    methods = getattr(permission, "refuses_methods", None)
    applies = (actions is None or action in actions) and (methods is None or method in methods)
    return applies, applies


class ErrorsAutoSchema(AutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        component = ResolvedComponent(
            name="Error", type=ResolvedComponent.SCHEMA, object="Error", schema=ERROR_SCHEMA
        )
        self.registry.register_on_missing(component)
        error_content = {"application/json": {"schema": component.ref}}
        responses = operation["responses"]
        statuses = self.error_statuses(path, method.upper(), has_body="requestBody" in operation)
        for code, description in statuses.items():
            responses.setdefault(str(code), {"description": description})
        for code, response in responses.items():
            if code.startswith("4") and "content" not in response:
                response["content"] = error_content
        return operation

    def error_statuses(self, path: str, method: str, has_body: bool) -> dict[int, str]:
        view = self.view
        paginator = getattr(view, "paginator", None)  # a GenericAPIView's; a plain APIView has none
        statuses: dict[int, str] = {}
        if method in ("POST", "PUT", "PATCH"):
            statuses[413] = "The body is larger than API_MAX_BODY_BYTES."
            if has_body:  # an endpoint that takes no body never parses one
                statuses[400] = (
                    "The body is invalid, or names a field this endpoint does not take; it says which."
                )
                statuses[415] = "The body is not JSON (or a form)."
        elif self._is_list_view():
            statuses[400] = "A query parameter is invalid or unknown; the body names it."
        action = getattr(view, "action", None)
        unauthenticated = forbidden = False
        for permission in view.get_permissions():
            may_401, may_403 = refuses(permission, action, method)
            unauthenticated |= may_401
            forbidden |= may_403
        if unauthenticated:
            statuses[401] = "No credentials, or invalid ones."
        if forbidden:
            statuses[403] = "The credentials do not allow this."
        if "{" in path:
            statuses[404] = "No such object (another user's request is not found either)."
        elif self._is_list_view() and isinstance(paginator, PageNumberPagination):
            statuses[404] = "No such page."
        elif self._is_list_view() and isinstance(paginator, CursorPagination):
            statuses[404] = "The cursor is not one this list gave out."
        if view.get_throttles():
            statuses[429] = "Throttled: too many such requests; `Retry-After` says when to try again."
        return statuses
