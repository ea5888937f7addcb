// A headless Chromium driven over stdin/stdout, one JSON object per line, for the pytest
// end-to-end tests (tests/e2e/): the tests say what to do, this script does it in the
// browser and answers {"id", "ok", "value"} or {"id", "ok": false, "error"}.
//
// Debian's chromium (/usr/bin/chromium) through playwright-core: no browser download.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const EXECUTABLE = "/usr/bin/chromium";
const ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-quic",
];

let context;
let page;
let profile;
const consoleErrors = [];

const ops = {
  async launch({ width, height, mobile = false }) {
    profile = await mkdtemp(join(tmpdir(), "lastmile-chromium-"));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: EXECUTABLE,
      headless: true,
      args: ARGS,
      viewport: { width, height },
      isMobile: mobile,
      hasTouch: mobile,
      deviceScaleFactor: 1,
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.on("console", (message) => {
      if (message.type() === "error") consoleErrors.push(message.text());
    });
    page.on("pageerror", (error) => consoleErrors.push(`page error: ${error.message}`));
    return true;
  },
  async goto({ url }) {
    await page.goto(url, { waitUntil: "load" });
    return page.url();
  },
  async eval({ expression }) {
    return await page.evaluate(expression);
  },
  async wait({ expression, timeoutMs = 15000 }) {
    const handle = await page.waitForFunction(expression, undefined, { timeout: timeoutMs, polling: 100 });
    return await handle.jsonValue();
  },
  async click({ selector }) {
    await page.click(selector);
    return true;
  },
  async fill({ selector, value }) {
    await page.fill(selector, value);
    return true;
  },
  async mouse({ x, y, double = false }) {
    if (double) await page.mouse.dblclick(x, y);
    else await page.mouse.click(x, y);
    return true;
  },
  async screenshot({ path, fullPage = false }) {
    await page.screenshot({ path, fullPage });
    return path;
  },
  async errors() {
    return consoleErrors;
  },
  async close() {
    await context?.close();
    if (profile) await rm(profile, { recursive: true, force: true });
    return true;
  },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const { id, op, ...args } = JSON.parse(line);
  let answer;
  try {
    if (!(op in ops)) throw new Error(`unknown op ${op}`);
    answer = { id, ok: true, value: (await ops[op](args)) ?? null };
  } catch (error) {
    answer = { id, ok: false, error: String(error?.message ?? error) };
  }
  let text;
  try {
    text = JSON.stringify(answer);
  } catch (error) {
    text = JSON.stringify({ id, ok: false, error: `answer is not JSON: ${error.message}` });
  }
  process.stdout.write(text + "\n");
  if (op === "close") break;
}
await context?.close().catch(() => {});
// stdin is still open (the test holds its end): without an explicit exit node would wait on
// it and the test would kill this process after its grace period.
lines.close();
process.exit(0);
