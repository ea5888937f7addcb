// Bundles the browser apps (TypeScript + CSS, Leaflet included) into dist/apps/<app>/ with
// esbuild: one script, one stylesheet and the page per app, no CDN, nothing fetched at run time.
import { copyFile, mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "dist", "apps");
const apps = ["tracking", "dashboard"];

await rm(out, { recursive: true, force: true });
for (const app of apps) {
  const target = join(out, app);
  await mkdir(target, { recursive: true });
  await build({
    entryPoints: { main: join(here, app, "main.ts") },
    bundle: true,
    format: "esm",
    target: "es2022",
    minify: true,
    sourcemap: true,
    outdir: target,
    // Leaflet's stylesheet references marker images; the apps draw their own markers.
    loader: { ".png": "empty", ".svg": "empty" },
    logLevel: "warning",
  });
  await copyFile(join(here, app, "index.html"), join(target, "index.html"));
}
console.log(`built ${apps.join(", ")} into ${out}`);
