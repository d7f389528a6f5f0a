"""One exception class per Lambda error code. The api layer renders them in Lambda's wire shape.

Lambda's service model spells the message key `message` for most errors and `Message` for a few
(ResourceNotFoundException, ServiceException, ...); `message_key` keeps each class right.
"""

from __future__ import annotations


class LambdaError(Exception):
    """An error the client sees: HTTP status, `x-amzn-ErrorType` and a JSON body."""

    code = "ServiceException"
    status = 500
    message_key = "Message"
    error_type: str | None = "Service"

    def __init__(self, message: str, **members: str) -> None:
        super().__init__(message)
        self.message = message
        self.members = members

    def body(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.error_type is not None:
            out["Type"] = self.error_type
        out[self.message_key] = self.message
        out.update(self.members)
        return out

    def headers(self) -> dict[str, str]:
        return {}


class ServiceException(LambdaError):
    code = "ServiceException"
    status = 500


class PlatformError(ServiceException):
    """silo itself failed a call: it could not build or keep an environment for it (a cgroup, a namespace, a
    mount, the seccomp filter, a template), or an internal check refused it. Lambda's ServiceException on
    the wire; a type of its own so that no layer takes it for the function's error, and so that the
    async dispatcher retries it without using one of the event's attempts."""


class CredentialsUnavailable(ServiceException):
    """The function's per-tenant credentials could not be had (STS refused or could not be reached), so the
    function did not run: it never runs without them, nor with anyone else's. Lambda's ServiceException on
    the wire (Lambda has no code of its own for a failure to get its execution role's credentials); not a
    PlatformError, so an asynchronous event uses up one of its attempts on it, as on any service error."""


class ResourceNotFoundException(LambdaError):
    code = "ResourceNotFoundException"
    status = 404
    error_type = "User"


class InvalidParameterValueException(LambdaError):
    code = "InvalidParameterValueException"
    status = 400
    message_key = "message"
    error_type: str | None = "User"


class ValidationException(LambdaError):
    code = "ValidationException"
    status = 400
    message_key = "message"
    error_type = None


class ResourceConflictException(LambdaError):
    code = "ResourceConflictException"
    status = 409
    message_key = "message"
    error_type = "User"


class ProvisionedConcurrencyConfigNotFoundException(LambdaError):
    code = "ProvisionedConcurrencyConfigNotFoundException"
    status = 404
    message_key = "message"
    error_type = "User"


class PreconditionFailedException(LambdaError):
    code = "PreconditionFailedException"
    status = 412
    message_key = "message"
    error_type = "User"


class PolicyLengthExceededException(LambdaError):
    code = "PolicyLengthExceededException"
    status = 400
    message_key = "message"
    error_type = "User"


class InvalidRequestContentException(LambdaError):
    code = "InvalidRequestContentException"
    status = 400
    message_key = "message"
    error_type = "User"


class RequestEntityTooLargeException(LambdaError):
    """Lambda's model calls it RequestTooLargeException; the wire says RequestEntityTooLargeException."""

    code = "RequestEntityTooLargeException"
    status = 413
    message_key = "Message"
    error_type = None


class UnsupportedMediaTypeException(LambdaError):
    code = "UnsupportedMediaTypeException"
    status = 415
    message_key = "message"
    error_type = "User"


class TooManyRequestsException(LambdaError):
    code = "TooManyRequestsException"
    status = 429
    message_key = "message"
    error_type = "User"

    def __init__(self, message: str, reason: str, retry_after_s: int = 1) -> None:
        super().__init__(message, Reason=reason)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class NotFoundRoute(LambdaError):
    """A path no Lambda operation answers to."""

    code = "UnknownOperationException"
    status = 404
    message_key = "message"
    error_type = None


# Authentication and authorisation (silo.api.auth): AWS's codes and shapes, each a 403 as on Lambda.


class MissingAuthenticationTokenException(LambdaError):
    code = "MissingAuthenticationTokenException"
    status = 403
    message_key = "message"
    error_type = None


class UnrecognizedClientException(LambdaError):
    code = "UnrecognizedClientException"
    status = 403
    message_key = "message"
    error_type = None


class InvalidSignatureException(LambdaError):
    code = "InvalidSignatureException"
    status = 403
    message_key = "message"
    error_type = None


class IncompleteSignatureException(LambdaError):
    code = "IncompleteSignatureException"
    status = 403
    message_key = "message"
    error_type = None


class AccessDeniedException(LambdaError):
    code = "AccessDeniedException"
    status = 403
    message_key = "Message"
    error_type = "User"


class CodeSigningConfigNotFoundException(LambdaError):
    code = "CodeSigningConfigNotFoundException"
    status = 404
    error_type = "User"


class CodeVerificationFailedException(LambdaError):
    """Code or a layer not signed by an allowed publisher, under an `Enforce` policy."""

    code = "CodeVerificationFailedException"
    status = 400
    error_type = "User"


class InvalidCodeSignatureException(LambdaError):
    """A signature that does not verify (the artifact was changed after signing): refused under any policy."""

    code = "InvalidCodeSignatureException"
    status = 400
    error_type = "User"
