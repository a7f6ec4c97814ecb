"""Python client of clerk-mirror (gRPC package `clerkmirror.v1`).

    import clerkmirror_client as cm
    client = cm.connect("127.0.0.1:50051", token=None)
    client.directory.GetUser(cm.directory_pb2.GetUserRequest(name="users/user_…"))

`connect()` gives the stubs (`directory`, `watch`, `billing`, `admin`); `error_info()` reads
the `google.rpc.ErrorInfo` of a failed call; `list_then_watch()` is the README's list-then-watch
recipe with resume. The generated modules are in `clerkmirror_client.v1` (also re-exported
here: `directory_pb2`, `watch_pb2`, `resources_pb2`, `billing_pb2`, `admin_pb2`).
"""

from ._client import DEFAULT_CHANNEL_OPTIONS, BearerTokenInterceptor, Client, connect
from ._errors import error_info, error_reason
from ._recipe import (
    RETRYABLE_CODES,
    RETRYABLE_REASONS,
    Applied,
    CaughtUp,
    Disconnected,
    Event,
    Heartbeat,
    Listed,
    entity_id,
    list_then_watch,
    list_users,
)
from .v1 import admin_pb2, billing_pb2, directory_pb2, resources_pb2, watch_pb2

__all__ = [
    "DEFAULT_CHANNEL_OPTIONS",
    "BearerTokenInterceptor",
    "Client",
    "connect",
    "error_info",
    "error_reason",
    "RETRYABLE_CODES",
    "RETRYABLE_REASONS",
    "Applied",
    "CaughtUp",
    "Disconnected",
    "Event",
    "Heartbeat",
    "Listed",
    "entity_id",
    "list_then_watch",
    "list_users",
    "admin_pb2",
    "billing_pb2",
    "directory_pb2",
    "resources_pb2",
    "watch_pb2",
]
