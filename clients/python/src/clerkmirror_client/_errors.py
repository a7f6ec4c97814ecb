"""The `google.rpc.ErrorInfo` every clerk-mirror error carries."""

from __future__ import annotations

from typing import Optional

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def error_info(rpc_error: grpc.RpcError) -> Optional[error_details_pb2.ErrorInfo]:
    """The `ErrorInfo` detail of a failed call (`reason`, `domain`, `metadata`), or None.

    Read from the call's `grpc-status-details-bin` trailer with `grpc_status.rpc_status`.
    None when the error has no such detail (a connection refused, a deadline the client
    enforced) or is not a call (e.g. an error raised before the call started)."""
    if not isinstance(rpc_error, grpc.Call):
        return None
    try:
        status = rpc_status.from_call(rpc_error)
    except ValueError:  # the trailer disagrees with the call's code or message
        return None
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def error_reason(rpc_error: grpc.RpcError) -> str:
    """The ErrorInfo `reason` of a failed call, or "" without one."""
    info = error_info(rpc_error)
    return info.reason if info is not None else ""
