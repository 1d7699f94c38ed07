// Loads one page in headless Debian chromium through a proxy, driven by playwright-core. Run
// by tests/tests/dashboard.rs inside the lab's client namespace.
//
//   node tests/browser/proxy.mjs <chromium proxy flag> <url>
//
// e.g. `--proxy-server=http://127.0.0.1:1080` or `--proxy-pac-url=http://127.0.0.1:5000/proxy.pac`.
// Writes one JSON line: {"step": "loaded", "status": <HTTP status>, "body": <page text>}, or
// {"step": "error", "message": ...} and exits 1.
import { chromium } from "playwright-core";

const [proxyFlag, url] = process.argv.slice(2);
if (!proxyFlag || !url) {
  console.error("usage: proxy.mjs <--proxy-server=...|--proxy-pac-url=...> <url>");
  process.exit(2);
}
const emit = (step, data = {}) => process.stdout.write(JSON.stringify({ step, ...data }) + "\n");

let browser;
try {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-quic",
      proxyFlag,
    ],
  });
  const page = await browser.newPage();
  const response = await page.goto(url, { timeout: 20000 });
  const body = await page.evaluate(() => document.body.innerText);
  emit("loaded", { status: response.status(), body });
  await browser.close();
} catch (e) {
  emit("error", { message: String(e && e.stack ? e.stack : e) });
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}
