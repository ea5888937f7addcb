"""Domain errors and the gRPC status each one becomes.

Handlers raise these; the service interceptor turns them into a status with the message, so no
handler needs to know about ``context.abort``.
"""

from __future__ import annotations

import grpc


class ServiceError(Exception):
    """An error a client caused or can act on; its message goes to the client as is."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(ServiceError):
    """The request itself is malformed or out of range."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServiceError):
    """The named resource does not exist (or is not visible to the caller)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    """A resource with that identity exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ServiceError):
    """The request is valid but not in the resource's current state."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(ServiceError):
    """No valid credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ServiceError):
    """Valid credentials, but not allowed to do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(ServiceError):
    """A limit was hit; retry later."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ServiceError):
    """A dependency is down; retry with backoff."""

    code = grpc.StatusCode.UNAVAILABLE


class Aborted(ServiceError):
    """The call lost to a concurrent one (e.g. a newer stream of the same identity)."""

    code = grpc.StatusCode.ABORTED
