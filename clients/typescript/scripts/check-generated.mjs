#!/usr/bin/env node
// Regenerates the code into a temporary directory and compares it with the committed src/gen/:
// exits 1 (naming the files that differ) when src/gen/ is stale. Run from clients/typescript
// (`npm run check-generated` does).
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, existsSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const committed = join(root, "src", "gen");
const scratch = mkdtempSync(join(tmpdir(), "clerk-mirror-gen-"));

/** Every file under `dir`, as paths relative to it, sorted. */
function files(dir) {
  if (!existsSync(dir)) return [];
  const out = [];
  const walk = (d) => {
    for (const entry of readdirSync(d)) {
      const path = join(d, entry);
      if (statSync(path).isDirectory()) walk(path);
      else out.push(relative(dir, path));
    }
  };
  walk(dir);
  return out.sort();
}

let differences = [];
try {
  const buf = join(root, "node_modules", ".bin", process.platform === "win32" ? "buf.cmd" : "buf");
  execFileSync(buf, ["generate", "--template", "buf.gen.yaml", "-o", scratch], {
    cwd: root,
    stdio: ["ignore", "inherit", "inherit"],
  });
  const fresh = join(scratch, "src", "gen");
  const want = files(fresh);
  const have = files(committed);
  for (const f of want) {
    if (!have.includes(f)) differences.push(`missing: src/gen/${f}`);
    else if (!readFileSync(join(fresh, f)).equals(readFileSync(join(committed, f)))) {
      differences.push(`differs: src/gen/${f}`);
    }
  }
  for (const f of have) if (!want.includes(f)) differences.push(`not generated any more: src/gen/${f}`);
} finally {
  rmSync(scratch, { recursive: true, force: true });
}

if (differences.length > 0) {
  for (const d of differences) console.error(`  ${d}`);
  console.error("src/gen is stale: run `npm run generate` in clients/typescript");
  process.exit(1);
}
console.log("src/gen is up to date");
