"""List, then watch: a local copy of every user, kept current, that survives disconnects.

The README's recipe ("List, then watch"): list every user, keeping the FIRST page's cursor;
watch the change log from that cursor and drop a change whose cursor is <= the `update_cursor`
of the entity as it was listed. On a retryable stream error, resume from the last position
passed; on CURSOR_EXPIRED, list again.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Callable, Dict, Iterator, Optional, Sequence, Union

import grpc
from google.protobuf import duration_pb2

from ._client import Client
from ._errors import error_info
from .v1 import directory_pb2, resources_pb2, watch_pb2

Users = Dict[str, resources_pb2.User]

# Reasons (ErrorInfo) after which the stream is resumed, whatever the status code.
RETRYABLE_REASONS = frozenset({"CONSUMER_TOO_SLOW", "SHUTTING_DOWN", "TOO_MANY_REQUESTS", "TOO_MANY_WATCHERS"})
# Status codes after which the stream is resumed, whatever the reason.
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})


@dataclasses.dataclass
class Listed:
    """Every user has been listed (again, after CURSOR_EXPIRED): `users` is the new state (the
    same dict the later events carry, updated in place), `cursor` the first page's cursor."""

    users: Users
    cursor: str


@dataclasses.dataclass
class Applied:
    """A change after the listing was applied to `users` (only user changes alter it; changes
    of other entity types are passed through for the caller to apply)."""

    change: watch_pb2.Change
    users: Users

    @property
    def entity_id(self) -> str:
        return entity_id(self.change)


@dataclasses.dataclass
class CaughtUp:
    """The backlog is done: what follows is live."""

    cursor: str


@dataclasses.dataclass
class Heartbeat:
    """A sign of life, with the latest position the stream passed."""

    cursor: str


@dataclasses.dataclass
class Disconnected:
    """A list or the watch failed with a retryable error; the recipe retries after `retry_in`
    seconds, from `resume_from` (or lists again when `relist`, after CURSOR_EXPIRED)."""

    code: grpc.StatusCode
    reason: str
    details: str
    resume_from: str
    retry_in: float
    relist: bool = False


Event = Union[Listed, Applied, CaughtUp, Heartbeat, Disconnected]


class CursorExpired(Exception):
    pass


def entity_id(change: watch_pb2.Change) -> str:
    """The id of the entity a change is about (every entity type has an `id`)."""
    which = change.WhichOneof("entity")
    return getattr(change, which).id if which else ""


def list_users(client: Client, *, page_size: int = 1000, timeout: Optional[float] = 30.0) -> tuple[Users, str]:
    """Lists every user, page by page; returns them by id and the FIRST page's cursor."""
    users: Users = {}
    first_cursor: Optional[str] = None
    token = ""
    while True:
        page = client.directory.ListUsers(
            directory_pb2.ListUsersRequest(page_size=page_size, page_token=token), timeout=timeout
        )
        if first_cursor is None:
            first_cursor = page.cursor
        for user in page.users:
            users[user.id] = user
        token = page.next_page_token
        if not token:
            return users, first_cursor


class _Watchdog:
    """Cancels a stream from which nothing (not even a heartbeat) arrived for `timeout` s."""

    def __init__(self, call: grpc.Future, timeout: float) -> None:
        self._call = call
        self._timeout = timeout
        self._deadline = time.monotonic() + timeout
        self._stopped = threading.Event()
        self.fired = False
        threading.Thread(target=self._run, name="clerkmirror-watchdog", daemon=True).start()

    def feed(self) -> None:
        self._deadline = time.monotonic() + self._timeout

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.wait(max(0.05, min(1.0, self._deadline - time.monotonic()))):
            if time.monotonic() >= self._deadline:
                self.fired = True
                self._call.cancel()
                return


def list_then_watch(
    client: Client,
    *,
    page_size: int = 1000,
    entity_types: Sequence[int] = (),
    heartbeat_interval: float = 10.0,
    backoff_initial: float = 0.1,
    backoff_max: float = 1.0,
    list_timeout: Optional[float] = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Event]:
    """Builds a local copy of every user and keeps it current, as a generator of events.

    Yields `Listed` once the users are listed, then `Applied` for each change applied (in
    change-log order, never one the listing already reflected, never one twice), `CaughtUp`
    and `Heartbeat` as they arrive, and `Disconnected` before each retry. The state is the
    `users` dict of `Listed`/`Applied` (by user id; deleted users are removed).

    `entity_types`: what to watch (`watch_pb2.ENTITY_TYPE_*`; empty: everything, so changes of
    other types are yielded too, for the caller to apply or skip).

    Retries (backoff `backoff_initial` doubling to `backoff_max`, reset once a stream delivers):
    `UNAVAILABLE` (server stopping or restarting, connection refused) and the reasons
    `CONSUMER_TOO_SLOW`, `SHUTTING_DOWN` (their `resumeCursor` is where to resume),
    `TOO_MANY_REQUESTS`, `TOO_MANY_WATCHERS`; a stream silent for 3 heartbeat intervals + 5 s is
    cancelled and resumed. `CURSOR_EXPIRED` lists again. Any other error is raised.

    It lists and watches on a channel of its own (`client.fresh()`), replaced after each
    failure, so that a retry connects at once instead of failing fast while a broken channel
    waits out gRPC's reconnect backoff; `client` itself is left as it is. Close the generator
    (`contextlib.closing`) to end the stream and that channel at once.
    """
    delay = backoff_initial

    def backoff() -> float:
        nonlocal delay
        current = delay
        delay = min(delay * 2, backoff_max)
        return current

    own: Optional[Client] = None

    def conn() -> Client:
        nonlocal own
        if own is None:
            fresh = getattr(client, "fresh", None)
            try:
                own = fresh() if fresh is not None else client
            except ValueError:  # a Client not made by connect()
                own = client
        return own

    def drop() -> None:
        nonlocal own
        if own is not None and own is not client:
            own.close()
        own = None

    users: Users = {}
    position = ""  # the last position passed: the cursor of every change, heartbeat, caught_up
    need_list = True
    try:
        while True:
            if need_list:
                try:
                    users, position = list_users(conn(), page_size=page_size, timeout=list_timeout)
                except grpc.RpcError as err:
                    info = error_info(err)
                    reason = info.reason if info is not None else ""
                    code = err.code()
                    if code in RETRYABLE_CODES or reason in RETRYABLE_REASONS or code == grpc.StatusCode.DEADLINE_EXCEEDED:
                        drop()
                        wait = backoff()
                        yield Disconnected(code, reason, err.details() or "", "", wait, relist=True)
                        sleep(wait)
                        continue
                    raise
                need_list = False
                yield Listed(users, position)

            request = watch_pb2.WatchChangesRequest(
                start_cursor=position,
                entity_types=list(entity_types),
                heartbeat_interval=duration_pb2.Duration(
                    seconds=int(heartbeat_interval), nanos=int(round((heartbeat_interval % 1) * 1e9))
                ),
            )
            call = conn().watch.WatchChanges(request)
            watchdog = _Watchdog(call, 3 * heartbeat_interval + 5)
            try:
                for message in call:
                    watchdog.feed()
                    delay = backoff_initial  # the stream delivers: the next failure starts over
                    event = message.WhichOneof("event")
                    if event == "change":
                        change = message.change
                        if change.cursor and position and change.cursor <= position:
                            continue  # passed already (a resume from an older resumeCursor)
                        if change.cursor:
                            position = change.cursor
                        if change.entity_type == watch_pb2.ENTITY_TYPE_USER:
                            known = users.get(change.user.id)
                            if known is not None and change.cursor <= known.update_cursor:
                                continue  # the listing already reflected it
                            if change.operation == watch_pb2.OPERATION_DELETED:
                                users.pop(change.user.id, None)
                            else:
                                users[change.user.id] = change.user
                        yield Applied(change, users)
                    elif event == "caught_up":
                        position = max(position, message.caught_up.cursor)
                        yield CaughtUp(message.caught_up.cursor)
                    elif event == "heartbeat":
                        position = max(position, message.heartbeat.cursor)
                        yield Heartbeat(message.heartbeat.cursor)
                # The server ended the stream without an error: resume like after a drop.
                wait = backoff()
                yield Disconnected(grpc.StatusCode.OK, "", "stream ended", position, wait)
                sleep(wait)
            except grpc.RpcError as err:
                code = err.code()
                info = error_info(err)
                reason = info.reason if info is not None else ""
                if reason == "CURSOR_EXPIRED":
                    wait = backoff()
                    yield Disconnected(code, reason, err.details() or "", position, wait, relist=True)
                    need_list = True
                    sleep(wait)
                    continue
                if code == grpc.StatusCode.CANCELLED and watchdog.fired:
                    code, reason = grpc.StatusCode.DEADLINE_EXCEEDED, "NO_HEARTBEAT"
                elif code not in RETRYABLE_CODES and reason not in RETRYABLE_REASONS:
                    raise
                resume = info.metadata.get("resumeCursor", "") if info is not None else ""
                if resume:
                    position = max(position, resume)
                drop()
                wait = backoff()
                yield Disconnected(code, reason, err.details() or "", position, wait)
                sleep(wait)
            finally:
                watchdog.stop()
                call.cancel()
    finally:
        drop()
