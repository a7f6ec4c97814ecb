"""Offline tests of list_then_watch and error_info against fake stubs (no server needed).

    .venv/bin/python -m unittest discover -s tests -v
"""

from __future__ import annotations

import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import grpc  # noqa: E402
from google.rpc import code_pb2, error_details_pb2, status_pb2  # noqa: E402

import clerkmirror_client as cm  # noqa: E402
from clerkmirror_client.v1 import directory_pb2, resources_pb2, watch_pb2  # noqa: E402

DB = "aaaa"


def cur(n: int) -> str:
    return f"c1.{n:020d}.{DB}"


class FakeError(grpc.RpcError, grpc.Call):
    """A failed call as grpc raises it, with an optional ErrorInfo in its trailers."""

    def __init__(self, code: grpc.StatusCode, reason: str = "", **metadata: str) -> None:
        self._code = code
        self._details = f"{code.name} {reason}"
        status = status_pb2.Status(code=code.value[0], message=self._details)
        if reason:
            status.details.add().Pack(error_details_pb2.ErrorInfo(reason=reason, domain="clerkmirror", metadata=metadata))
        self._trailers = (("grpc-status-details-bin", status.SerializeToString()),) if reason else ()

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._trailers

    def initial_metadata(self):
        return ()

    def is_active(self):
        return False

    def time_remaining(self):
        return None

    def cancel(self):
        return False

    def add_callback(self, callback):
        return False


class FakeStream:
    """The iterator a server-streaming call returns: messages, then an error (or the end)."""

    def __init__(self, messages, error=None) -> None:
        self._messages = list(messages)
        self._error = error
        self.cancelled = False

    def __iter__(self):
        yield from self._messages
        if self._error is not None:
            raise self._error

    def cancel(self):
        self.cancelled = True


def user(uid: str, update: int, first: str = "") -> resources_pb2.User:
    return resources_pb2.User(name=f"users/{uid}", id=uid, first_name=first or uid, update_cursor=cur(update))


def change(n: int, uid: str, op=watch_pb2.OPERATION_UPDATED, first: str = "") -> watch_pb2.WatchChangesResponse:
    return watch_pb2.WatchChangesResponse(
        change=watch_pb2.Change(
            cursor=cur(n), operation=op, entity_type=watch_pb2.ENTITY_TYPE_USER, user=user(uid, n, first)
        )
    )


def caught_up(n: int) -> watch_pb2.WatchChangesResponse:
    return watch_pb2.WatchChangesResponse(caught_up=watch_pb2.CaughtUp(cursor=cur(n)))


def heartbeat(n: int) -> watch_pb2.WatchChangesResponse:
    return watch_pb2.WatchChangesResponse(heartbeat=watch_pb2.Heartbeat(cursor=cur(n)))


class FakeDirectory:
    def __init__(self, listings) -> None:
        self._listings = list(listings)  # each: a list of pages, or an exception
        self._pages = None
        self.requests = []

    def ListUsers(self, request, timeout=None):
        self.requests.append(request)
        if not request.page_token:
            listing = self._listings.pop(0)
            if isinstance(listing, Exception):
                raise listing
            self._pages = list(listing)
        return self._pages.pop(0)


class FakeWatch:
    def __init__(self, streams) -> None:
        self._streams = list(streams)
        self.requests = []

    def WatchChanges(self, request):
        self.requests.append(request)
        return self._streams.pop(0)


class FakeClient:
    def __init__(self, listings, streams) -> None:
        self.directory = FakeDirectory(listings)
        self.watch = FakeWatch(streams)


def page(users, cursor: int, next_token: str = "") -> directory_pb2.ListUsersResponse:
    return directory_pb2.ListUsersResponse(users=users, next_page_token=next_token, cursor=cur(cursor))


def take(gen, n: int):
    out = []
    for event in gen:
        out.append(event)
        if len(out) == n:
            break
    gen.close()
    return out


class ListThenWatchTest(unittest.TestCase):
    def setUp(self) -> None:
        self.sleeps = []

    def run_recipe(self, client, n):
        return take(cm.list_then_watch(client, page_size=2, sleep=self.sleeps.append), n)

    def test_drops_what_the_listing_reflected_and_watches_from_the_first_page(self):
        # Page 1 at cursor 5; b changed at 7 before page 2 (cursor 8) was read.
        listing = [page([user("a", 3), user("b", 4)], 5, "t2"), page([user("c", 8)], 8)]
        stream = FakeStream([
            heartbeat(5),
            change(6, "c"),  # c is listed at 8: dropped
            change(7, "b", first="B7"),  # b is listed at 4 (page 1): applied
            change(8, "c"),  # dropped (== update_cursor)
            caught_up(8),
            change(9, "d", watch_pb2.OPERATION_CREATED),
            change(10, "a", watch_pb2.OPERATION_DELETED),
        ])
        client = FakeClient([listing], [stream])
        events = self.run_recipe(client, 6)
        self.assertEqual(client.watch.requests[0].start_cursor, cur(5))
        kinds = [type(e).__name__ for e in events]
        self.assertEqual(kinds, ["Listed", "Heartbeat", "Applied", "CaughtUp", "Applied", "Applied"])
        applied = [e.change.cursor for e in events if isinstance(e, cm.Applied)]
        self.assertEqual(applied, [cur(7), cur(9), cur(10)])
        users = events[-1].users
        self.assertEqual(sorted(users), ["b", "c", "d"])
        self.assertEqual(users["b"].first_name, "B7")

    def test_resumes_from_the_last_position_after_unavailable(self):
        listing = [page([user("a", 1)], 2)]
        first = FakeStream([heartbeat(2), change(3, "a"), heartbeat(5)], FakeError(grpc.StatusCode.UNAVAILABLE))
        second = FakeStream([change(6, "a")], FakeError(grpc.StatusCode.UNAVAILABLE))
        third = FakeStream([change(7, "a")])
        client = FakeClient([listing], [first, second, third])
        events = self.run_recipe(client, 8)
        starts = [r.start_cursor for r in client.watch.requests]
        self.assertEqual(starts, [cur(2), cur(5), cur(6)])
        disconnected = [e for e in events if isinstance(e, cm.Disconnected)]
        self.assertEqual([d.code for d in disconnected], [grpc.StatusCode.UNAVAILABLE] * 2)
        # The backoff restarts once a stream delivers.
        self.assertEqual(self.sleeps, [0.1, 0.1])

    def test_resume_cursor_of_the_error_wins_and_nothing_is_repeated(self):
        listing = [page([], 2)]
        first = FakeStream(
            [change(3, "a", watch_pb2.OPERATION_CREATED)],
            FakeError(grpc.StatusCode.RESOURCE_EXHAUSTED, "CONSUMER_TOO_SLOW", resumeCursor=cur(4)),
        )
        # The server resends 4 (already passed) and goes on.
        second = FakeStream([change(4, "b"), change(5, "c", watch_pb2.OPERATION_CREATED)])
        client = FakeClient([listing], [first, second])
        events = self.run_recipe(client, 4)
        self.assertEqual(client.watch.requests[1].start_cursor, cur(4))
        applied = [e.change.cursor for e in events if isinstance(e, cm.Applied)]
        self.assertEqual(applied, [cur(3), cur(5)])
        self.assertEqual(events[2].reason, "CONSUMER_TOO_SLOW")

    def test_backoff_doubles_to_one_second(self):
        listing = [page([], 1)]
        errors = [FakeStream([], FakeError(grpc.StatusCode.UNAVAILABLE)) for _ in range(6)]
        client = FakeClient([listing], errors + [FakeStream([heartbeat(1)])])
        self.run_recipe(client, 8)
        self.assertEqual(self.sleeps, [0.1, 0.2, 0.4, 0.8, 1.0, 1.0])

    def test_cursor_expired_lists_again(self):
        first_listing = [page([user("a", 1)], 2)]
        second_listing = [page([user("x", 1)], 1)]
        expired = FakeStream([], FakeError(grpc.StatusCode.OUT_OF_RANGE, "CURSOR_EXPIRED", oldestCursor=cur(9)))
        client = FakeClient([first_listing, second_listing], [expired, FakeStream([caught_up(1)])])
        events = self.run_recipe(client, 4)
        self.assertEqual([type(e).__name__ for e in events], ["Listed", "Disconnected", "Listed", "CaughtUp"])
        self.assertTrue(events[1].relist)
        self.assertEqual(sorted(events[2].users), ["x"])
        self.assertEqual(client.watch.requests[1].start_cursor, cur(1))

    def test_other_errors_are_raised(self):
        client = FakeClient([[page([], 1)]], [FakeStream([], FakeError(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CURSOR"))])
        gen = cm.list_then_watch(client, sleep=self.sleeps.append)
        self.assertIsInstance(next(gen), cm.Listed)
        with self.assertRaises(grpc.RpcError) as ctx:
            next(gen)
        self.assertEqual(cm.error_info(ctx.exception).reason, "INVALID_CURSOR")

    def test_a_listing_that_fails_unavailable_is_retried(self):
        client = FakeClient([FakeError(grpc.StatusCode.UNAVAILABLE), [page([user("a", 1)], 1)]], [FakeStream([caught_up(1)])])
        events = self.run_recipe(client, 3)
        self.assertEqual([type(e).__name__ for e in events], ["Disconnected", "Listed", "CaughtUp"])


class FreshChannelTest(unittest.TestCase):
    def test_each_retry_uses_a_fresh_channel_and_closes_the_old_one(self):
        made = []

        class Template:
            def fresh(self):
                streams = [FakeStream([heartbeat(1)], FakeError(grpc.StatusCode.UNAVAILABLE))]
                if len(made) == 2:
                    streams = [FakeStream([change(2, "a", watch_pb2.OPERATION_CREATED)])]
                c = FakeClient([[page([], 1)]], streams)
                c.closed = False
                c.close = lambda: setattr(c, "closed", True)
                made.append(c)
                return c

        gen = cm.list_then_watch(Template(), sleep=lambda s: None)
        events = take(gen, 6)  # Listed, Heartbeat, Disconnected, Heartbeat, Disconnected, Applied
        self.assertIsInstance(events[-1], cm.Applied)
        self.assertEqual(len(made), 3)
        self.assertEqual([c.closed for c in made], [True, True, True])  # the last one on close()
        self.assertEqual(len(made[1].directory.requests), 0)  # listed once, on the first channel


class ErrorInfoTest(unittest.TestCase):
    def test_reads_the_detail(self):
        info = cm.error_info(FakeError(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND", cursor=cur(1)))
        self.assertEqual(info.reason, "RESOURCE_NOT_FOUND")
        self.assertEqual(info.metadata["cursor"], cur(1))

    def test_none_without_details(self):
        self.assertIsNone(cm.error_info(FakeError(grpc.StatusCode.UNAVAILABLE)))
        self.assertEqual(cm.error_reason(FakeError(grpc.StatusCode.UNAVAILABLE)), "")


if __name__ == "__main__":
    unittest.main()
