// Browser test of the netmix dashboard: headless Debian chromium driven by playwright-core.
// Run by tests/tests/dashboard.rs INSIDE the lab's client namespace (where the engine's
// dashboard listens on 127.0.0.1:5000); not meant to be run by hand against a real machine.
//
//   node tests/browser/dashboard.mjs <url> <token> <screenshot.png> <card,names> <strategy>
//
// Protocol with the Rust side: this script writes one JSON object per line to stdout
// ({"step": ..., ...}; {"step": "error", "message": ...} on failure, then exit 1) and waits for
// plain-text lines on stdin where the Rust side must act first:
//
//   -> cards        page live, one card per expected uplink,    (Rust: download through each link)
//                   the ZeroTier panel one line
//   -> numbers      the cards' byte counters went up
//   -> switched     strategy switched through the page          (Rust: connections, then "sticky-done N")
//   -> followed     the table's newest N rows use the new strategy, on one link
//   -> load-ready   switched back to round-robin via the page   (Rust: ≥1000 connections, then "load-done")
//   -> responsive   bounded table, live updates, UI round trips measured
//                                                               (Rust: a connection that times out on
//                                                                every link, then "failed-done ID")
//   -> failed-row   that row's cells: interfaces tried, duration, error; the failure counters' names
//   -> screenshot   full-page PNG written                      (Rust: restarts netmix on the same
//                                                                ports, then "restarted START_MS")
//   -> restart      the restart marker and the empty tables' text
//   -> done
//
// Chromium: $CHROMIUM or /usr/bin/chromium (`npx playwright install` is not used).
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";
import { statSync } from "node:fs";

const [url, token, screenshot, cardList, newStrategy] = process.argv.slice(2);
if (!url || !token || !screenshot || !cardList || !newStrategy) {
  console.error("usage: dashboard.mjs <url> <token> <screenshot.png> <card,names> <strategy>");
  process.exit(2);
}
const expectedCards = cardList.split(",").sort();
const STEP_TIMEOUT_MS = Number(process.env.NETMIX_BROWSER_TIMEOUT_MS || 20000);
const ROUND_TRIP_LIMIT_MS = 500;

const emit = (step, data = {}) => process.stdout.write(JSON.stringify({ step, ...data }) + "\n");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// stdin lines, awaited one at a time.
const lines = [];
let lineWaiter = null;
createInterface({ input: process.stdin }).on("line", (l) => {
  if (lineWaiter) {
    const w = lineWaiter;
    lineWaiter = null;
    w(l);
  } else lines.push(l);
});
function nextLine(timeoutMs = 120000) {
  if (lines.length) return Promise.resolve(lines.shift());
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("no instruction from the test within " + timeoutMs + " ms")), timeoutMs);
    lineWaiter = (l) => {
      clearTimeout(t);
      resolve(l);
    };
  });
}
async function expectLine(prefix) {
  const l = await nextLine();
  if (!l.startsWith(prefix)) throw new Error("expected " + prefix + " from the test, got " + JSON.stringify(l));
  return l.slice(prefix.length).trim();
}

let browser;
const consoleErrors = [];

async function main() {
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
    ],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  page.on("console", (m) => {
    if (m.type() === "error") consoleErrors.push(m.text());
  });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));

  // --- 1. one card per uplink, live feed ---
  await page.goto(url);
  await page.waitForFunction(() => document.querySelector("#ws-status").dataset.state === "live");
  await page.waitForFunction(
    (n) => document.querySelectorAll(".iface-card").length === n && document.querySelector("#strategy-select").options.length > 0,
    expectedCards.length,
  );
  const names = await page.$$eval(".iface-card", (cards) => cards.map((c) => c.dataset.name).sort());
  if (JSON.stringify(names) !== JSON.stringify(expectedCards)) {
    throw new Error("cards " + JSON.stringify(names) + ", expected " + JSON.stringify(expectedCards));
  }
  const readCounters = () =>
    page.evaluate(() => {
      const v = (root, f) => Number(root.querySelector('[data-field="' + f + '"]').dataset.value || 0);
      const cards = {};
      for (const c of document.querySelectorAll(".iface-card")) {
        cards[c.dataset.name] = { bytes_down: v(c, "bytes_down"), bytes_up: v(c, "bytes_up"), successes_shown: c.querySelector('[data-field="success_rate"]').textContent };
      }
      return { cards, connections_total: v(document.querySelector("#totals"), "connections_total"), bytes_down: v(document.querySelector("#totals"), "bytes_down") };
    });
  const before = await readCounters();
  // ZeroTier is not installed in the lab: the panel is one line, no error, no empty tables.
  await page.waitForFunction(() => document.querySelector("#zerotier").dataset.service === "not_installed");
  const zerotier = await page.$eval("#zerotier", (p) => ({
    text: p.innerText.trim(),
    tables: [...p.querySelectorAll("table")].filter((t) => t.getClientRects().length > 0).length,
  }));
  emit("cards", { names, before, zerotier });

  // --- 2. numbers change once traffic flows (the test downloads through every link) ---
  const minBytes = Number(await expectLine("traffic-done"));
  await page.waitForFunction(
    ([before, minBytes]) => {
      const v = (root, f) => Number(root.querySelector('[data-field="' + f + '"]').dataset.value || 0);
      for (const c of document.querySelectorAll(".iface-card")) {
        if (v(c, "bytes_down") - before.cards[c.dataset.name].bytes_down < minBytes) return false;
      }
      return v(document.querySelector("#totals"), "connections_total") > before.connections_total;
    },
    [before, minBytes],
  );
  const after = await readCounters();
  emit("numbers", { before, after });

  // --- 3. switch the strategy through the page: a wrong token first, then the right one ---
  const oldStrategy = await page.textContent("#strategy-active");
  await page.selectOption("#strategy-select", newStrategy);
  await page.fill("#token-input", "wrong-" + token);
  await page.click("#strategy-apply");
  await page.waitForFunction(() => document.querySelector("#strategy-message").textContent.startsWith("token refused"));
  const refusedActive = await page.textContent("#strategy-active");
  if (refusedActive !== oldStrategy) throw new Error("a wrong token changed the strategy to " + refusedActive);
  await page.selectOption("#strategy-select", newStrategy);
  await page.fill("#token-input", token);
  await page.click("#strategy-apply");
  await page.waitForFunction((s) => document.querySelector("#strategy-message").textContent === "now using " + s, newStrategy);
  await page.waitForFunction((s) => document.querySelector("#strategy-active").textContent === s, newStrategy);
  emit("switched", { from: oldStrategy, to: newStrategy, message: await page.textContent("#strategy-message") });

  // --- 4. the next connections follow it: newest rows show the new strategy, on one link ---
  const n = Number(await expectLine("sticky-done"));
  await page.waitForFunction(
    ([s, n]) => {
      const rows = [...document.querySelectorAll("#connections tbody tr")].slice(0, n);
      return rows.length === n && rows.every((r) => r.dataset.state === "closed" && r.children[4].textContent === s);
    },
    [newStrategy, n],
  );
  const followed = await page.$$eval(
    "#connections tbody tr",
    (rows, n) => rows.slice(0, n).map((r) => ({ id: r.dataset.id, interface: r.children[3].textContent, strategy: r.children[4].textContent, reason: r.children[5].textContent })),
    n,
  );
  emit("followed", { rows: followed });
  await page.screenshot({ path: screenshot.replace(/\.png$/, "-switched.png"), fullPage: true });

  // --- 5. back to the first strategy (the token is remembered now), then ≥1000 connections ---
  const tokenHidden = await page.$eval("#token-input", (e) => e.hidden);
  if (!tokenHidden) throw new Error("the accepted token was not remembered (token input still shown)");
  await page.selectOption("#strategy-select", oldStrategy);
  await page.click("#strategy-apply");
  await page.waitForFunction((s) => document.querySelector("#strategy-active").textContent === s, oldStrategy);
  const startTotal = (await readCounters()).connections_total;
  emit("load-ready", { strategy: oldStrategy, connections_total: startTotal });

  // While the test opens connections: the counter must keep moving and frames keep coming.
  const seenTotals = new Set();
  let maxFrameMs = 0;
  let frames = 0;
  let loadDone = null;
  const done = expectLine("load-done").then((v) => (loadDone = Number(v)));
  while (loadDone === null) {
    const sample = await page.evaluate(
      () =>
        new Promise((resolve) => {
          const t0 = performance.now();
          requestAnimationFrame(() =>
            resolve({ ms: performance.now() - t0, total: document.querySelector('#totals [data-field="connections_total"]').dataset.value }),
          );
        }),
    );
    maxFrameMs = Math.max(maxFrameMs, sample.ms);
    frames += 1;
    seenTotals.add(sample.total);
    await Promise.race([sleep(100), done]);
  }
  const expectedTotal = loadDone;
  await page.waitForFunction(
    (t) => Number(document.querySelector('#totals [data-field="connections_total"]').dataset.value) >= t,
    expectedTotal,
  );
  const rows = await page.$$eval("#connections tbody tr", (r) => r.length);
  const status = await page.$eval("#ws-status", (e) => e.dataset.state);
  const countText = await page.textContent("#connections-count");

  // One UI round trip: type a filter, wait until the table shows only matching rows.
  const filterRoundTrip = async (value) => {
    const t0 = Date.now();
    const inPage = await page.evaluate(
      (value) =>
        new Promise((resolve) => {
          const input = document.querySelector("#connections-filter");
          const body = document.querySelector("#connections tbody");
          const matches = () => {
            const rows = [...body.querySelectorAll("tr")];
            return rows.length > 0 && rows.every((r) => (value ? r.children[3].textContent === value : true));
          };
          const t0 = performance.now();
          const obs = new MutationObserver(() => {
            if (matches()) {
              obs.disconnect();
              resolve({ ms: performance.now() - t0, rows: body.querySelectorAll("tr").length });
            }
          });
          obs.observe(body, { childList: true });
          input.value = value;
          input.dispatchEvent(new Event("input", { bubbles: true }));
          setTimeout(() => {
            obs.disconnect();
            resolve({ ms: Infinity, rows: body.querySelectorAll("tr").length });
          }, 5000);
        }),
      value,
    );
    return { ...inPage, wallMs: Date.now() - t0 };
  };
  const filtered = await filterRoundTrip("wan1");
  const cleared = await filterRoundTrip("");
  // Also through the real input path (keystrokes), measured from outside the page.
  const t0 = Date.now();
  await page.fill("#connections-filter", "");
  await page.type("#connections-filter", "wan2");
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll("#connections tbody tr")];
    return rows.length > 0 && rows.every((r) => r.children[3].textContent === "wan2");
  });
  const typedMs = Date.now() - t0;
  await page.fill("#connections-filter", "");
  await page.waitForFunction(() => document.querySelectorAll("#connections tbody tr").length >= 100);
  const result = {
    rows,
    status,
    countText,
    distinctTotalsDuringLoad: seenTotals.size,
    frames,
    maxFrameMs,
    filtered,
    cleared,
    typedMs,
    expectedTotal,
  };
  if (rows > 100) throw new Error("table not bounded: " + JSON.stringify(result));
  if (status !== "live") throw new Error("live feed not live after the load: " + JSON.stringify(result));
  if (seenTotals.size < 3) throw new Error("the counter did not move during the load: " + JSON.stringify(result));
  for (const [what, ms] of [["filter", filtered.ms], ["clear", cleared.ms], ["frame", maxFrameMs]]) {
    if (!(ms < ROUND_TRIP_LIMIT_MS)) throw new Error(what + " round trip " + ms + " ms: " + JSON.stringify(result));
  }
  emit("responsive", result);

  // --- 6. a connection that failed on every link: its row says where, how long and why ---
  const failedId = await expectLine("failed-done");
  const failedSel = '#connections tbody tr[data-id="' + failedId + '"]';
  await page.waitForSelector(failedSel + '[data-state="failed"]');
  const failedRow = await page.$eval(failedSel, (r) => {
    const cell = (k) => ({ text: r.children[k].textContent, visible: r.children[k].getClientRects().length > 0 && r.children[k].offsetWidth > 0 });
    return { interface: cell(3), state: cell(6), error: cell(7), duration: cell(10), retries: cell(11) };
  });
  const counters = await page.evaluate(() => {
    const failed = document.querySelector('#totals [data-field="failed"]');
    return {
      columns: [...document.querySelectorAll("#connections thead th")].map((th) => th.textContent),
      header: failed.parentElement.querySelector("dt").textContent,
      headerValue: Number(failed.dataset.value),
      cards: [...document.querySelectorAll('.iface-card [data-field="failures"]')].map((f) => f.closest("div").querySelector("dt").textContent),
    };
  });
  emit("failed-row", { row: failedRow, counters });

  // --- 7. the screenshot artifact ---
  await page.screenshot({ path: screenshot, fullPage: true });
  emit("screenshot", { path: screenshot, bytes: statSync(screenshot).size, consoleErrors });

  // --- 8. netmix restarts under the open page: a visible marker, and empty tables say so ---
  const consoleBefore = consoleErrors.length;
  const newStart = await expectLine("restarted");
  await page.waitForFunction(
    (t) => {
      const m = document.querySelector("#restart-marker");
      return !m.hidden && m.dataset.startedUnixMs === t && document.querySelector("#ws-status").dataset.state === "live";
    },
    newStart,
  );
  await page.waitForFunction(() => !document.querySelector("#no-connections").hidden);
  const restart = await page.evaluate(() => {
    const m = document.querySelector("#restart-marker");
    const r = m.getBoundingClientRect();
    const empty = document.querySelector("#no-connections");
    return {
      marker: m.textContent,
      markerVisible: r.width > 0 && r.height > 0 && getComputedStyle(m).display !== "none",
      markerTop: r.top,
      startedUnixMs: m.dataset.startedUnixMs,
      rows: document.querySelectorAll("#connections tbody tr").length,
      noConnections: empty.textContent,
      noConnectionsVisible: empty.getClientRects().length > 0,
      total: document.querySelector('#totals [data-field="connections_total"]').dataset.value,
    };
  });
  await page.screenshot({ path: screenshot.replace(/\.png$/, "-restarted.png"), fullPage: true });
  emit("restart", { ...restart, consoleErrors: consoleErrors.slice(consoleBefore) });
  await browser.close();
  emit("done");
  process.exit(0);
}

main().catch(async (e) => {
  emit("error", { message: String(e && e.stack ? e.stack : e), consoleErrors });
  try {
    if (browser) await browser.close();
  } catch (_) {
    /* already gone */
  }
  process.exit(1);
});
