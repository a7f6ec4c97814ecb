// @clerk-mirror/client: typed clients for clerk-mirror's gRPC API (connect-es v2 over Node's
// HTTP/2 for gRPC, or HTTP/1.1 for gRPC-Web), plus two helpers: `errorReason` (an error's
// google.rpc.ErrorInfo) and `listThenWatch` (the README's "List, then watch" recipe with resume).

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import type { Client, Interceptor, Transport } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import type { DescEnum } from "@bufbuild/protobuf";

import { AdminService } from "./gen/clerkmirror/v1/admin_pb.js";
import { BillingService } from "./gen/clerkmirror/v1/billing_pb.js";
import { DirectoryService } from "./gen/clerkmirror/v1/directory_pb.js";
import type { User } from "./gen/clerkmirror/v1/resources_pb.js";
import { Operation, WatchService } from "./gen/clerkmirror/v1/watch_pb.js";
import type { Change, EntityType, WatchChangesResponse } from "./gen/clerkmirror/v1/watch_pb.js";
import { ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";

export * from "./gen/clerkmirror/v1/admin_pb.js";
export * from "./gen/clerkmirror/v1/billing_pb.js";
export * from "./gen/clerkmirror/v1/directory_pb.js";
export * from "./gen/clerkmirror/v1/resources_pb.js";
export * from "./gen/clerkmirror/v1/watch_pb.js";
export * from "./gen/google/rpc/error_details_pb.js";
export { Code, ConnectError } from "@connectrpc/connect";

// ---------------------------------------------------------------------------------------------
// Clients

/** How to reach a mirror. */
export interface MirrorOptions {
  /** The gRPC port's URL, e.g. `http://127.0.0.1:50051` (or `https://…` when it serves TLS). */
  baseUrl: string;
  /**
   * A reader or admin token (`--reader-token name=<secret>`): sent as
   * `authorization: Bearer <token>` on every call. Never ship one to a browser: a reader token
   * reads every user's email addresses and private metadata.
   */
  token?: string | undefined;
  /**
   * `grpc` (default): gRPC over HTTP/2. `grpc-web`: gRPC-Web over HTTP/1.1, for runtimes and
   * proxies without HTTP/2 trailers (the server must run with `--grpc-web`).
   */
  protocol?: "grpc" | "grpc-web" | undefined;
  /** More interceptors, run after the one that adds the token. */
  interceptors?: Interceptor[] | undefined;
}

/** The four services of a mirror, as typed connect-es clients sharing one transport. */
export interface Mirror {
  directory: Client<typeof DirectoryService>;
  watch: Client<typeof WatchService>;
  billing: Client<typeof BillingService>;
  admin: Client<typeof AdminService>;
  transport: Transport;
}

/** An interceptor that sends `authorization: Bearer <token>` with every request. */
export function bearerToken(token: string): Interceptor {
  const value = `Bearer ${token}`;
  return (next) => (req) => {
    req.header.set("authorization", value);
    return next(req);
  };
}

/** Typed clients for a mirror's `DirectoryService`, `WatchService`, `BillingService` and `AdminService`. */
export function createMirror(options: MirrorOptions): Mirror {
  const interceptors: Interceptor[] = [];
  if (options.token !== undefined && options.token !== "") interceptors.push(bearerToken(options.token));
  interceptors.push(...(options.interceptors ?? []));
  const protocol = options.protocol ?? "grpc";
  let transport: Transport;
  switch (protocol) {
    case "grpc":
      transport = createGrpcTransport({ baseUrl: options.baseUrl, interceptors });
      break;
    case "grpc-web":
      transport = createGrpcWebTransport({ baseUrl: options.baseUrl, httpVersion: "1.1", interceptors });
      break;
    default:
      throw new Error(`unknown protocol ${JSON.stringify(protocol)}: use "grpc" or "grpc-web"`);
  }
  return {
    directory: createClient(DirectoryService, transport),
    watch: createClient(WatchService, transport),
    billing: createClient(BillingService, transport),
    admin: createClient(AdminService, transport),
    transport,
  };
}

// ---------------------------------------------------------------------------------------------
// Errors

/** The `google.rpc.ErrorInfo` every error of the mirror carries (domain `clerkmirror`). */
export interface ErrorReason {
  /** E.g. `RESOURCE_NOT_FOUND`, `CURSOR_EXPIRED`, `SHUTTING_DOWN`, `INVALID_FILTER`. */
  reason: string;
  domain: string;
  /** E.g. `cursor` and `resourceName` of a `NOT_FOUND`, `resumeCursor`, `oldestCursor`. */
  metadata: Record<string, string>;
}

/**
 * The `google.rpc.ErrorInfo` of an error thrown by a call (any value is accepted: it is converted
 * with `ConnectError.from`), or `undefined` when it carries none (e.g. a connection refused).
 */
export function errorReason(err: unknown): ErrorReason | undefined {
  const info = ConnectError.from(err).findDetails(ErrorInfoSchema)[0];
  if (info === undefined) return undefined;
  return { reason: info.reason, domain: info.domain, metadata: { ...info.metadata } };
}

/** Connect's name of a code, as its error messages print it: `not_found`, `unavailable`… */
export function codeName(code: Code): string {
  return codeToString(code);
}

/** The proto name of an enum value (`ENTITY_TYPE_USER`, `CHECK_SOURCE_ROLE`…), or its number. */
export function enumName(schema: DescEnum, value: number): string {
  return schema.value[value]?.name ?? String(value);
}

// Node's error codes of a connection that failed or broke: the call never got a gRPC status.
const TRANSPORT_ERRNOS = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENETDOWN",
  "EAI_AGAIN",
  "ERR_STREAM_PREMATURE_CLOSE",
  "ERR_STREAM_DESTROYED",
  "ERR_HTTP2_STREAM_ERROR",
  "ERR_HTTP2_SESSION_ERROR",
  "ERR_HTTP2_GOAWAY_SESSION",
  "ERR_HTTP2_INVALID_SESSION",
  "ERR_HTTP2_INVALID_STREAM",
  "ERR_HTTP2_STREAM_CANCEL",
  "ERR_HTTP2_PING_CANCEL",
  "UND_ERR_SOCKET",
  "UND_ERR_CLOSED",
]);

function errnoChain(err: unknown): string[] {
  const codes: string[] = [];
  const seen = new Set<unknown>();
  let e: unknown = err;
  while (e instanceof Error && !seen.has(e)) {
    seen.add(e);
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string") codes.push(code);
    e = (e as { cause?: unknown }).cause;
  }
  return codes;
}

/**
 * Whether a call failed because the connection did (refused, reset, closed mid-stream) rather
 * than with a status the server sent: gRPC calls such a failure `UNAVAILABLE`. connect-node reports
 * some of them as `aborted` or `internal` (its code for a reset stream), so this looks at the
 * Node error underneath: those are always safe to retry, as gRPC's own clients do.
 */
export function isConnectionFailure(err: unknown): boolean {
  const ce = ConnectError.from(err);
  if (ce.code === Code.Unavailable) return true;
  if (ce.findDetails(ErrorInfoSchema).length > 0) return false; // the server answered
  if (errnoChain(err).some((c) => TRANSPORT_ERRNOS.has(c))) return true;
  // A stream the server's process dropped (killed, restarted) without a status: Node resets the
  // HTTP/2 streams of a closed connection with CANCEL, which connect-node reports as `canceled`
  // ("http/2 stream closed with error code CANCEL"), though this side cancelled nothing.
  return (
    (ce.code === Code.Canceled ||
      ce.code === Code.Internal ||
      ce.code === Code.Unknown ||
      ce.code === Code.Aborted) &&
    /http\/2 stream closed|premature close|socket hang up|ECONNRESET|GOAWAY/i.test(ce.rawMessage)
  );
}

// ---------------------------------------------------------------------------------------------
// List, then watch

/** The local copy `listThenWatch` keeps: every live user, and the stream's position. */
export interface MirrorState {
  /** Live users by id, as listed and then as changed. */
  users: Map<string, User>;
  /** The first page's cursor, then the last position the stream passed (change, heartbeat, caught_up). */
  position: string;
}

export type WatchEvent =
  /** Every user is listed (at the start, and again after `CURSOR_EXPIRED`). */
  | { kind: "listed"; cursor: string; state: MirrorState }
  /** A change applied (users are applied to `state.users`; other kinds are for the caller). */
  | { kind: "change"; change: Change; id: string; state: MirrorState }
  /** The backlog is done; what follows is live. */
  | { kind: "caught_up"; cursor: string; state: MirrorState }
  | { kind: "heartbeat"; cursor: string; state: MirrorState }
  /**
   * The stream (or a list page) failed with an error a retry fixes: it is retried after
   * `retryInMs` from `resumeFrom`. `code` is `Unavailable` for a refused or broken connection.
   */
  | {
      kind: "disconnected";
      phase: "list" | "watch";
      code: Code;
      reason: string | undefined;
      error: ConnectError;
      retryInMs: number;
      resumeFrom: string;
      state: MirrorState;
    }
  /** The position is older than the retained log (or from another database): listing again. */
  | { kind: "cursor_expired"; error: ConnectError; state: MirrorState };

export interface ListThenWatchOptions {
  /** Users per list page (default 1000, the server's maximum). */
  pageSize?: number | undefined;
  /** A list page's deadline (default 30 s); a page past it is asked for again. */
  listTimeoutMs?: number | undefined;
  /** The kinds to watch (default: every kind; the caller skips kinds it does not know). */
  entityTypes?: EntityType[] | undefined;
  /** The heartbeat interval to ask for, in seconds (default 10; 1–60). */
  heartbeatSeconds?: number | undefined;
  /**
   * With no message for this long (default: three heartbeats and 5 s), the stream is deemed
   * dead and reconnected (a half-open connection sends no error).
   */
  idleTimeoutMs?: number | undefined;
  /** First retry delay (default 100 ms), doubled on each failure in a row… */
  initialBackoffMs?: number | undefined;
  /** …up to this (default 1 s). It starts again from `initialBackoffMs` once a stream delivers. */
  maxBackoffMs?: number | undefined;
  /** Stops everything: the generator then throws the abort's error. */
  signal?: AbortSignal | undefined;
}

const RESUMABLE_REASONS = new Set(["CONSUMER_TOO_SLOW", "SHUTTING_DOWN"]);

type Verdict =
  | { action: "retry"; code: Code; reason: string | undefined; resumeCursor: string | undefined }
  | { action: "relist" }
  | { action: "throw" };

function classify(err: ConnectError, signal: AbortSignal | undefined): Verdict {
  if (signal?.aborted) return { action: "throw" }; // the caller's own cancellation
  const info = errorReason(err);
  if (info?.reason === "CURSOR_EXPIRED") return { action: "relist" };
  if (info !== undefined && RESUMABLE_REASONS.has(info.reason)) {
    const resume = info.metadata["resumeCursor"];
    return { action: "retry", code: err.code, reason: info.reason, resumeCursor: resume || undefined };
  }
  if (isConnectionFailure(err)) {
    return { action: "retry", code: Code.Unavailable, reason: info?.reason, resumeCursor: undefined };
  }
  return { action: "throw" };
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(ConnectError.from(signal.reason ?? new Error("aborted"), Code.Canceled));
    const onAbort = () => {
      clearTimeout(timer);
      reject(ConnectError.from(signal?.reason ?? new Error("aborted"), Code.Canceled));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** The entity's `id` of a change (every entity message has one), or "" for a kind not known here. */
export function changeEntityId(change: Change): string {
  const entity = change.entity;
  return entity.case === undefined ? "" : entity.value.id;
}

/**
 * The README's "List, then watch": lists every user (paged), keeps the FIRST page's cursor, then
 * watches every change from it, dropping a change whose cursor is ≤ the listed user's
 * `update_cursor` (already in the list). It keeps the last position passed (every change,
 * heartbeat and caught_up) and, when the stream fails with `UNAVAILABLE` (a refused or broken
 * connection too), `CONSUMER_TOO_SLOW` or `SHUTTING_DOWN` (whose `resumeCursor` wins), resumes
 * from it after a backoff (100 ms doubling to 1 s): nothing is missed, nothing repeated.
 * `CURSOR_EXPIRED` lists again. Any other error is thrown.
 *
 * ```ts
 * for await (const ev of listThenWatch(mirror)) {
 *   if (ev.kind === "change") console.log(ev.change.cursor, ev.id, ev.state.users.size);
 * }
 * ```
 */
export async function* listThenWatch(
  mirror: Pick<Mirror, "directory" | "watch">,
  options: ListThenWatchOptions = {},
): AsyncGenerator<WatchEvent, never, undefined> {
  const signal = options.signal;
  const pageSize = options.pageSize ?? 1000;
  const listTimeoutMs = options.listTimeoutMs ?? 30_000;
  const heartbeatSeconds = options.heartbeatSeconds ?? 10;
  const idleTimeoutMs = options.idleTimeoutMs ?? heartbeatSeconds * 3000 + 5000;
  const initialBackoffMs = options.initialBackoffMs ?? 100;
  const maxBackoffMs = options.maxBackoffMs ?? 1000;
  let backoffMs = initialBackoffMs;
  const nextBackoff = () => {
    const ms = backoffMs;
    backoffMs = Math.min(backoffMs * 2, maxBackoffMs);
    return ms;
  };

  for (;;) {
    // List every user; the watch starts from the first page's cursor.
    const state: MirrorState = { users: new Map(), position: "" };
    let pageToken = "";
    for (;;) {
      let page;
      try {
        page = await mirror.directory.listUsers({ pageSize, pageToken }, { signal, timeoutMs: listTimeoutMs });
      } catch (e) {
        const error = ConnectError.from(e);
        const verdict: Verdict =
          error.code === Code.DeadlineExceeded && !signal?.aborted
            ? { action: "retry", code: error.code, reason: undefined, resumeCursor: undefined }
            : classify(error, signal);
        if (verdict.action !== "retry") throw error;
        const retryInMs = nextBackoff();
        yield {
          kind: "disconnected",
          phase: "list",
          code: verdict.code,
          reason: verdict.reason,
          error,
          retryInMs,
          resumeFrom: state.position,
          state,
        };
        await sleep(retryInMs, signal);
        continue; // the same page again (its token stays valid)
      }
      backoffMs = initialBackoffMs;
      if (state.position === "") state.position = page.cursor;
      for (const user of page.users) state.users.set(user.id, user);
      if (page.nextPageToken === "") break;
      pageToken = page.nextPageToken;
    }
    yield { kind: "listed", cursor: state.position, state };

    // Watch from there, resuming after failures, until CURSOR_EXPIRED sends us back to listing.
    let resumeFrom = state.position;
    watching: for (;;) {
      const attempt = new AbortController();
      const abortAttempt = () => attempt.abort(signal?.reason);
      signal?.addEventListener("abort", abortAttempt, { once: true });
      let idle = false;
      let timer: ReturnType<typeof setTimeout> | undefined;
      // The watchdog runs only while waiting for the server, not while the caller handles an event.
      const disarm = () => {
        if (timer !== undefined) clearTimeout(timer);
        timer = undefined;
      };
      const arm = () => {
        disarm();
        timer = setTimeout(() => {
          idle = true;
          attempt.abort(new ConnectError(`no message from the server for ${idleTimeoutMs} ms`, Code.Unavailable));
        }, idleTimeoutMs);
      };
      let failure: ConnectError;
      try {
        arm();
        const stream = mirror.watch.watchChanges(
          {
            start: { case: "startCursor", value: resumeFrom },
            entityTypes: options.entityTypes ?? [],
            heartbeatInterval: { seconds: BigInt(heartbeatSeconds) },
          },
          { signal: attempt.signal },
        );
        for await (const message of stream as AsyncIterable<WatchChangesResponse>) {
          disarm();
          backoffMs = initialBackoffMs; // connected: the next failure retries quickly again
          const event = message.event;
          switch (event.case) {
            case "change": {
              const change = event.value;
              const cursor = change.cursor;
              // A repeat (a resume cursor older than what was passed): already applied.
              const repeat = cursor !== "" && cursor <= state.position;
              if (cursor !== "" && cursor > state.position) state.position = cursor;
              resumeFrom = state.position;
              if (repeat || change.entity.case === undefined) break; // a kind this build does not know: skipped
              const id = change.entity.value.id;
              if (change.entity.case === "user") {
                const known = state.users.get(id);
                if (known !== undefined && cursor <= known.updateCursor) break; // already in the list
                const user = change.entity.value;
                if (change.operation === Operation.DELETED || user.deleteTime !== undefined) state.users.delete(id);
                else state.users.set(id, user);
              }
              yield { kind: "change", change, id, state };
              break;
            }
            case "caughtUp":
            case "heartbeat": {
              const cursor = event.value.cursor;
              if (cursor !== "" && cursor > state.position) state.position = cursor;
              resumeFrom = state.position;
              yield event.case === "caughtUp"
                ? { kind: "caught_up", cursor, state }
                : { kind: "heartbeat", cursor, state };
              break;
            }
            default:
              break; // an event this build does not know
          }
          arm();
        }
        failure = new ConnectError("the server ended the watch stream", Code.Unavailable);
      } catch (e) {
        failure = idle
          ? new ConnectError(`no message from the server for ${idleTimeoutMs} ms`, Code.Unavailable)
          : ConnectError.from(e);
      } finally {
        disarm();
        signal?.removeEventListener("abort", abortAttempt);
        attempt.abort(); // ends the HTTP/2 stream if the consumer stopped iterating
      }

      const verdict = classify(failure, signal);
      switch (verdict.action) {
        case "throw":
          throw failure;
        case "relist":
          yield { kind: "cursor_expired", error: failure, state };
          break watching;
        case "retry": {
          if (verdict.resumeCursor !== undefined) resumeFrom = verdict.resumeCursor; // the server's word wins
          const retryInMs = nextBackoff();
          yield {
            kind: "disconnected",
            phase: "watch",
            code: verdict.code,
            reason: verdict.reason,
            error: failure,
            retryInMs,
            resumeFrom,
            state,
          };
          await sleep(retryInMs, signal);
        }
      }
    }
  }
}
