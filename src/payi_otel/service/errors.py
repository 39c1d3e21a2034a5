"""Pay-i's error answers: ``{statusCode, message, xproxy_error: {code, message}}`` with stable codes.

Every refusal of the service is a :class:`PayiApiError`; pydantic validation problems become one
through :func:`validation_error`, naming the field and the rule.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


class PayiApiError(Exception):
    """An error answered with Pay-i's body ``{statusCode, message, xproxy_error:{code, message}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {
            "statusCode": self.status,
            "message": self.message,
            "xproxy_error": {"code": self.code, "message": self.message},
        }


def bad_request(code: str, message: str) -> PayiApiError:
    return PayiApiError(400, code, message)


def invalid_api_key(header: str, problem: str = "does not hold a valid key") -> PayiApiError:
    return PayiApiError(401, "invalid_api_key", f"the {header} header {problem}")


def validation_error(exc: ValidationError) -> PayiApiError:
    """The first problem of a pydantic error as a Pay-i error naming the field and the rule."""
    return error_from_details(exc.errors(include_url=False)[0])


def error_from_details(err: Any) -> PayiApiError:
    """A Pay-i error for one pydantic error entry (``type``, ``loc``, ``msg``)."""
    loc = ".".join(str(p) for p in err["loc"]) or "body"
    kind = err["type"]
    if kind == "json_invalid":
        return bad_request("invalid_json", f"body is not valid JSON: {err['msg']}")
    if kind == "missing":
        return bad_request("required_field_missing", f"{loc}: field is required")
    if kind == "extra_forbidden":
        return bad_request("unknown_field", f"{loc}: unknown field (additional properties are not allowed)")
    if err["loc"] and err["loc"][0] == "units":
        return bad_request("invalid_units", f"{loc}: {err['msg']}")
    if err["loc"] and err["loc"][0] == "use_case_version":
        return bad_request("invalid_use_case_version", f"{loc}: {err['msg']}")
    return bad_request("invalid_field_value", f"{loc}: {err['msg']}")
