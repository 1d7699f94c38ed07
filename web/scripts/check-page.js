// Browser check of the dashboard page, with headless Chromium driven over --remote-debugging-pipe
// (no npm package, no WebSocket client needed). Not part of the cargo build.
//
//   cargo run -p netmix-web --example demo &        # serves a fake feed on 127.0.0.1:5055
//   node web/scripts/check-page.js [URL] [reconnect]
//
// Prints the state of the test hooks (#ws-status, .iface-card[data-name], [data-field], rows,
// events, strategy options), tries the strategy switch with a wrong and then the demo token, and
// writes /tmp/web.png (1400x1000) and /tmp/web-full.png (1400x1900). With "reconnect", it waits
// for you to kill and restart the server and prints #ws-status before and after.
const { spawn } = require("child_process");
const fs = require("fs");
const os = require("os");
const path = require("path");
const url = process.argv[2] || "http://127.0.0.1:5055/";
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cdp-"));
const chrome = spawn("chromium", ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run", "--user-data-dir=" + dir,
  "--remote-debugging-pipe", "--window-size=1400,1000", "about:blank"], { stdio: ["ignore", "ignore", "ignore", "pipe", "pipe"] });
const out = chrome.stdio[3], inp = chrome.stdio[4];
let id = 0, buf = "";
const waiting = new Map();
inp.on("data", (d) => {
  buf += d.toString();
  let i;
  while ((i = buf.indexOf("\0")) >= 0) {
    const msg = JSON.parse(buf.slice(0, i)); buf = buf.slice(i + 1);
    if (msg.id && waiting.has(msg.id)) { waiting.get(msg.id)(msg); waiting.delete(msg.id); }
  }
});
function send(method, params = {}, sessionId) {
  const m = { id: ++id, method, params }; if (sessionId) m.sessionId = sessionId;
  out.write(JSON.stringify(m) + "\0");
  return new Promise((res, rej) => waiting.set(m.id, (r) => r.error ? rej(new Error(method + ": " + JSON.stringify(r.error))) : res(r.result)));
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
(async () => {
  const { targetId } = await send("Target.createTarget", { url: "about:blank" });
  const { sessionId } = await send("Target.attachToTarget", { targetId, flatten: true });
  const s = (m, p) => send(m, p, sessionId);
  const ev = async (expr) => (await s("Runtime.evaluate", { expression: expr, awaitPromise: true, returnByValue: true })).result.value;
  await s("Emulation.setDeviceMetricsOverride", { width: 1400, height: 1000, deviceScaleFactor: 1, mobile: false });
  await s("Page.enable");
  await s("Page.navigate", { url });
  await sleep(7000);
  const report = await ev(`JSON.stringify({
    status: document.querySelector('#ws-status').textContent,
    cards: [...document.querySelectorAll('.iface-card')].map(c => c.dataset.name),
    wan0_active: document.querySelector('.iface-card[data-name="wan0"] [data-field="active"]').textContent,
    wan0_bytes_down: document.querySelector('.iface-card[data-name="wan0"] [data-field="bytes_down"]').dataset.value,
    rows: document.querySelectorAll('#connections tbody tr').length,
    events: document.querySelectorAll('#events li').length,
    options: [...document.querySelectorAll('#strategy-select option')].map(o => o.value),
    tokenVisible: !document.querySelector('#token-input').hidden,
  })`);
  console.log("state:", report);
  const png = await s("Page.captureScreenshot", { format: "png" });
  fs.writeFileSync("/tmp/web.png", Buffer.from(png.data, "base64"));
  // Wrong token first, then the right one.
  await ev(`(() => { const sel = document.querySelector('#strategy-select'); sel.value = 'sticky'; sel.dispatchEvent(new Event('change'));
    document.querySelector('#token-input').value = 'nope'; document.querySelector('#strategy-apply').click(); })()`);
  await sleep(800);
  console.log("wrong token:", await ev(`document.querySelector('#strategy-message').textContent + ' | input visible=' + !document.querySelector('#token-input').hidden`));
  await ev(`(() => { document.querySelector('#token-input').value = 'demo-token'; document.querySelector('#strategy-apply').click(); })()`);
  await sleep(1500);
  console.log("right token:", await ev(`document.querySelector('#strategy-message').textContent + ' | active=' + document.querySelector('#strategy-active').textContent + ' | stored=' + (localStorage.getItem('netmix.dashboard.token')) + ' | input visible=' + !document.querySelector('#token-input').hidden`));
  await s("Emulation.setDeviceMetricsOverride", { width: 1400, height: 1900, deviceScaleFactor: 1, mobile: false });
  await sleep(700);
  const full = await s("Page.captureScreenshot", { format: "png" });
  fs.writeFileSync("/tmp/web-full.png", Buffer.from(full.data, "base64"));
  if (process.argv[3] === "reconnect") {
    console.log("kill the server now");
    await sleep(3000);
    console.log("after kill:", await ev(`document.querySelector('#ws-status').textContent`));
    await sleep(6000);
    console.log("after restart:", await ev(`document.querySelector('#ws-status').textContent`));
  }
  chrome.kill();
  process.exit(0);
})().catch((e) => { console.error(e); chrome.kill(); process.exit(1); });
