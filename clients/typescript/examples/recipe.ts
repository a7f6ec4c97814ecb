// The client recipe end to end: a lookup, a miss and its ErrorInfo, a permission check, then
// list-then-watch with resume, until a change of RECIPE_STOP_USER_ID has been applied.
//
//   CLERK_MIRROR_URL=http://127.0.0.1:50051 RECIPE_USER_ID=user_… RECIPE_ORG_ID=org_… \
//   RECIPE_PERMISSION=org:invoices:manage RECIPE_STOP_USER_ID=user_… node_modules/.bin/tsx examples/recipe.ts
//
// Optional: CLERK_MIRROR_TOKEN (a reader token), CLERK_MIRROR_PROTOCOL (`grpc`, the default, or
// `grpc-web`). Stdout carries one JSON object a line and nothing else (a test drives it);
// logs go to stderr. Exits 0 after `done`, 1 after `error`.

import {
  CheckSourceSchema,
  Code,
  ConnectError,
  EntityTypeSchema,
  OperationSchema,
  codeName,
  createMirror,
  enumName,
  errorReason,
  listThenWatch,
} from "../src/index.js";

/** Writes one JSON line to stdout and waits until it has been handed to the OS. */
function emit(event: Record<string, unknown>): Promise<void> {
  return new Promise((resolve, reject) => {
    process.stdout.write(JSON.stringify(event) + "\n", (err) => (err ? reject(err) : resolve()));
  });
}

function log(message: string): void {
  process.stderr.write(`recipe: ${message}\n`);
}

function env(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") throw new Error(`${name} is not set`);
  return value;
}

/** `users/{id}` from an id (a resource name is accepted as it is). */
function resource(collection: string, id: string): string {
  return id.startsWith(`${collection}/`) ? id : `${collection}/${id}`;
}

async function main(): Promise<void> {
  const baseUrl = env("CLERK_MIRROR_URL");
  const protocol = process.env["CLERK_MIRROR_PROTOCOL"] || "grpc";
  if (protocol !== "grpc" && protocol !== "grpc-web") {
    throw new Error(`CLERK_MIRROR_PROTOCOL must be grpc or grpc-web, not ${JSON.stringify(protocol)}`);
  }
  const userId = env("RECIPE_USER_ID");
  const orgId = env("RECIPE_ORG_ID");
  const permission = env("RECIPE_PERMISSION");
  const stopUserId = env("RECIPE_STOP_USER_ID");
  const mirror = createMirror({ baseUrl, token: process.env["CLERK_MIRROR_TOKEN"], protocol });
  log(`${protocol} ${baseUrl}`);

  // 1. A lookup.
  const { user } = await mirror.directory.getUser({ name: resource("users", userId) });
  await emit({ event: "lookup", id: user?.id ?? "", first_name: user?.firstName ?? "" });

  // 2. A miss: NOT_FOUND, with the ErrorInfo's reason (and, in its metadata, the cursor it reflects).
  try {
    await mirror.directory.getUser({ name: "users/user_recipe_does_not_exist" });
    throw new Error("users/user_recipe_does_not_exist was found");
  } catch (e) {
    const err = ConnectError.from(e);
    if (err.code !== Code.NotFound) throw err;
    await emit({ event: "not_found", code: codeName(err.code), reason: errorReason(err)?.reason ?? "" });
  }

  // 3. May this user do this in this organization?
  const check = await mirror.directory.checkPermission({
    organization: resource("organizations", orgId),
    user: resource("users", userId),
    permission,
  });
  await emit({ event: "check", allowed: check.allowed, source: enumName(CheckSourceSchema, check.source) });

  // 4.–6. List every user (two a page, so that it pages), then watch every change from the first
  // page's cursor, resuming after failures, until the stop user's change has been applied.
  for await (const ev of listThenWatch(mirror, { pageSize: 2 })) {
    switch (ev.kind) {
      case "listed":
        await emit({ event: "listed", users: ev.state.users.size, cursor: ev.cursor });
        break;
      case "caught_up":
        await emit({ event: "caught_up", cursor: ev.cursor });
        break;
      case "heartbeat":
        break;
      case "change":
        await emit({
          event: "change",
          cursor: ev.change.cursor,
          entity_type: enumName(EntityTypeSchema, ev.change.entityType),
          operation: enumName(OperationSchema, ev.change.operation),
          id: ev.id,
        });
        if (ev.id === stopUserId) {
          await emit({ event: "done", users: ev.state.users.size });
          return;
        }
        break;
      case "disconnected":
        log(`${ev.phase}: ${ev.error.message}; retrying in ${ev.retryInMs} ms from ${ev.resumeFrom || "the start"}`);
        if (ev.phase === "watch") await emit({ event: "disconnected", code: codeName(ev.code) });
        break;
      case "cursor_expired":
        log(`${ev.error.message}: listing again`);
        break;
    }
  }
}

main().then(
  () => process.exit(0),
  async (e: unknown) => {
    const message = e instanceof Error ? e.message : String(e);
    log(`fatal: ${message}`);
    try {
      await emit({ event: "error", message });
    } finally {
      process.exit(1);
    }
  },
);
