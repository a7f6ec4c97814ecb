"""Channels and stubs: `connect()` and the bearer-token interceptor."""

from __future__ import annotations

import collections
from typing import Any, Callable, Optional, Sequence, Tuple

import grpc

from .v1 import admin_pb2_grpc, billing_pb2_grpc, directory_pb2_grpc, watch_pb2_grpc

# gRPC's own reconnect backoff starts at 1 s and grows to 120 s: a client would then notice a
# restarted server minutes late. While a channel waits out that backoff, its calls fail at once
# with the last connection error, so it is kept short (100 ms growing to 1 s). (list_then_watch
# goes further: it opens a fresh channel for each retry, see Client.fresh.)
DEFAULT_CHANNEL_OPTIONS: Tuple[Tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class BearerTokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call.

    Call credentials (`grpc.access_token_call_credentials`) are only sent over TLS; the mirror
    also serves plain text on loopback, so the token travels as metadata through this
    interceptor, over either kind of channel."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details: grpc.ClientCallDetails) -> _CallDetails:
        metadata = [m for m in (details.metadata or ()) if m[0] != "authorization"]
        metadata.append(self._header)
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._with_token(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._with_token(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._with_token(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._with_token(client_call_details), request_iterator)


class Client:
    """The stubs of one channel to a clerk-mirror server.

    `directory` (DirectoryService), `watch` (WatchService), `billing` (BillingService) and
    `admin` (AdminService) are the generated stubs; `channel` is the (intercepted) channel.
    Close it with `close()` or use the client as a context manager."""

    def __init__(
        self,
        channel: grpc.Channel,
        raw_channel: Optional[grpc.Channel] = None,
        factory: Optional[Callable[[], "Client"]] = None,
    ) -> None:
        self.channel = channel
        self._raw_channel = raw_channel or channel
        self._factory = factory
        self.directory = directory_pb2_grpc.DirectoryServiceStub(channel)
        self.watch = watch_pb2_grpc.WatchServiceStub(channel)
        self.billing = billing_pb2_grpc.BillingServiceStub(channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(channel)

    def fresh(self) -> "Client":
        """A new client with its own channel to the same server, with the same token,
        credentials and options (close it when done). A new channel connects at its first call,
        whatever backoff an older channel is waiting out: list_then_watch takes one per retry."""
        if self._factory is None:
            raise ValueError("this Client was not made by connect(): it cannot open a fresh channel")
        return self._factory()

    def close(self) -> None:
        self._raw_channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def connect(
    target: str,
    token: Optional[str] = None,
    *,
    credentials: Optional[grpc.ChannelCredentials] = None,
    options: Sequence[Tuple[str, Any]] = (),
) -> Client:
    """Opens a channel to `target` (`host:port`) and returns its stubs.

    `token`: a reader or admin token, sent as `authorization: Bearer <token>` on every call.
    `credentials`: `grpc.ssl_channel_credentials(...)` for a TLS (or mTLS) server; without it
    the channel is plain text. `options`: extra channel options (they override the defaults,
    `DEFAULT_CHANNEL_OPTIONS`, of the same name)."""
    merged = dict(DEFAULT_CHANNEL_OPTIONS)
    merged.update(dict(options))
    channel_options = list(merged.items())
    if credentials is not None:
        raw = grpc.secure_channel(target, credentials, options=channel_options)
    else:
        raw = grpc.insecure_channel(target, options=channel_options)
    channel = grpc.intercept_channel(raw, BearerTokenInterceptor(token)) if token else raw
    return Client(channel, raw, lambda: connect(target, token, credentials=credentials, options=options))
