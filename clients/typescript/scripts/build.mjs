// The package's build: ESM in dist/, CommonJS in dist/cjs/ (for require() and older bundlers), types for both.
import { execFileSync } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";

const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
const dist = new URL("../dist/", import.meta.url);
rmSync(dist, { recursive: true, force: true }); // nothing left from an older build
for (const project of ["tsconfig.build.json", "tsconfig.cjs.json"]) {
  execFileSync(process.execPath, [tsc, "-p", project], { stdio: "inherit", cwd: new URL("..", import.meta.url) });
}
// The package is "type": "module": dist/cjs's own package.json tells Node its files are CommonJS.
writeFileSync(new URL("cjs/package.json", dist), `${JSON.stringify({ type: "commonjs" })}\n`);
