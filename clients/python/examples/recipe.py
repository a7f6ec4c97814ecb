#!/usr/bin/env python3
"""The client's walk through clerk-mirror, one JSON object per line on stdout.

Run from clients/python:  .venv/bin/python examples/recipe.py

Environment:
  CLERK_MIRROR_TARGET   host:port of the gRPC port (e.g. 127.0.0.1:50051)
  CLERK_MIRROR_TOKEN    a reader token (optional)
  RECIPE_USER_ID        a user to look up (`user_…`)
  RECIPE_ORG_ID         an organization she belongs to (`org_…`)
  RECIPE_PERMISSION     a permission key to check (`org:invoices:manage`)
  RECIPE_STOP_USER_ID   stop once a change of this user has been applied

Prints, in order: `lookup`, `not_found`, `check`, `listed`, then while watching `caught_up`,
`change` and `disconnected` lines, and finally `done` (exit 0) or `error` (exit 1).
Logs go to stderr.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path

try:
    import clerkmirror_client as cm
except ImportError:  # not installed through install.sh: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    import clerkmirror_client as cm

import grpc

log = logging.getLogger("recipe")
UNARY_TIMEOUT = 10.0  # seconds, for each unary call
MISSING_USER = "users/user_recipe_does_not_exist"


def emit(**fields) -> None:
    """One JSON object, one line, flushed: the harness reads stdout line by line."""
    sys.stdout.write(json.dumps(fields, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise SystemExit(f"{name} is not set")
    return value


def resource(prefix: str, value: str) -> str:
    """`users/` + id, unless the value is a resource name already."""
    return value if value.startswith(prefix) else prefix + value


def enum_name(enum, value: int) -> str:
    """The enum value's name; its number for a value newer than this client."""
    try:
        return enum.Name(value)
    except ValueError:
        return str(value)


def run() -> int:
    target = env("CLERK_MIRROR_TARGET")
    token = os.environ.get("CLERK_MIRROR_TOKEN") or None
    user_id = env("RECIPE_USER_ID")
    org_id = env("RECIPE_ORG_ID")
    permission = env("RECIPE_PERMISSION")
    stop_user_id = env("RECIPE_STOP_USER_ID")

    with cm.connect(target, token=token) as client:
        return walk(client, user_id, org_id, permission, stop_user_id)


def walk(client: cm.Client, user_id: str, org_id: str, permission: str, stop_user_id: str) -> int:
    directory = client.directory

    # 1. A lookup by resource name.
    user = directory.GetUser(
        cm.directory_pb2.GetUserRequest(name=resource("users/", user_id)), timeout=UNARY_TIMEOUT
    ).user
    emit(event="lookup", id=user.id, first_name=user.first_name)

    # 2. A miss, and the ErrorInfo it carries.
    try:
        directory.GetUser(cm.directory_pb2.GetUserRequest(name=MISSING_USER), timeout=UNARY_TIMEOUT)
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.NOT_FOUND:
            raise
        info = cm.error_info(err)
        emit(event="not_found", code=err.code().name, reason=info.reason if info else "")
    else:
        raise RuntimeError(f"{MISSING_USER} exists")

    # 3. A permission check.
    check = directory.CheckPermission(
        cm.directory_pb2.CheckPermissionRequest(
            organization=resource("organizations/", org_id),
            user=resource("users/", user_id),
            permission=permission,
        ),
        timeout=UNARY_TIMEOUT,
    )
    emit(event="check", allowed=check.allowed, source=enum_name(cm.directory_pb2.CheckSource, check.source))

    # 4-6. List, then watch every entity type, resuming after drops.
    # closing(): leaving the loop ends the watch stream at once (not when garbage collected).
    disconnected = False
    with contextlib.closing(cm.list_then_watch(client, page_size=2, list_timeout=UNARY_TIMEOUT)) as events:
        for event in events:
            if isinstance(event, cm.Listed):
                emit(event="listed", users=len(event.users), cursor=event.cursor)
            elif isinstance(event, cm.CaughtUp):
                emit(event="caught_up", cursor=event.cursor)
            elif isinstance(event, cm.Applied):
                change = event.change
                if change.entity_type not in cm.watch_pb2.EntityType.values():
                    log.info("skipping a change of an entity type this client does not know: %d", change.entity_type)
                    continue
                emit(
                    event="change",
                    cursor=change.cursor,
                    entity_type=cm.watch_pb2.EntityType.Name(change.entity_type),
                    operation=enum_name(cm.watch_pb2.Operation, change.operation),
                    id=event.entity_id,
                )
                if event.entity_id == stop_user_id:
                    emit(event="done", users=len(event.users))
                    return 0
            elif isinstance(event, cm.Disconnected):
                log.warning(
                    "stream failed (%s %s: %s); retrying in %.1fs from %s",
                    event.code.name, event.reason, event.details, event.retry_in, event.resume_from or "a new listing",
                )
                emit(event="disconnected", code=event.code.name)
                disconnected = True
            elif isinstance(event, cm.Heartbeat):
                if disconnected:
                    log.info("watching again from %s", event.cursor)
                    disconnected = False
                else:
                    log.debug("heartbeat %s", event.cursor)
    return 1  # list_then_watch never ends on its own


def main() -> int:
    logging.basicConfig(stream=sys.stderr, level=os.environ.get("RECIPE_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run()
    except grpc.RpcError as err:
        info = cm.error_info(err)
        reason = f" ({info.reason})" if info and info.reason else ""
        message = f"{err.code().name}{reason}: {err.details()}"
    except SystemExit as exc:
        message = str(exc.code)
    except Exception as exc:  # noqa: BLE001 - the harness reads one error line
        log.exception("fatal")
        message = f"{type(exc).__name__}: {exc}"
    log.error("%s", message)
    emit(event="error", message=message)
    return 1


if __name__ == "__main__":
    sys.exit(main())
