// The dashboard in a real headless Chromium: sign in with a token through the page, upload the
// demo samples, wait for the batch to finish, open an overlay beside its original, download the
// CSV and check it, check the operations page charts the batch; then let a page of another
// origin try an upload riding on the session cookie, delete the batch through its confirmation,
// sign out, and sign in as a viewer, who is offered no upload. Screenshots go to OUT_DIR.
//
//   XCAM_ADMIN_TOKEN=… XCAM_VIEWER_TOKEN=… node tests/browser/dashboard.mjs http://127.0.0.1:PORT samples.zip OUT_DIR
import { chromium } from "playwright-core";
import { mkdirSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";

const [base, zip, out] = process.argv.slice(2);
const { XCAM_ADMIN_TOKEN: adminToken, XCAM_VIEWER_TOKEN: viewerToken } = process.env;
mkdirSync(out, { recursive: true });
const fail = (message) => {
  console.error(`FAIL: ${message}`);
  process.exit(1);
};

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 }, acceptDownloads: true });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));

  const first = await page.goto(`${base}/#/`);
  const headers = first.headers();
  for (const [name, want] of [["content-security-policy", "script-src 'self'"], ["x-content-type-options", "nosniff"], ["x-frame-options", "DENY"], ["referrer-policy", "no-referrer"]]) {
    if (!(headers[name] || "").includes(want)) fail(`${name}: ${headers[name]}`);
  }
  if (!headers["content-security-policy"].includes("frame-ancestors 'none'")) fail("no frame-ancestors 'none'");
  await signIn(page, "bogus-token");
  await page.waitForFunction(() => document.getElementById("sign-in-error")?.textContent.startsWith("invalid_token"));
  await signIn(page, adminToken);
  await page.waitForSelector("#upload select[name=model] option", { state: "attached" });
  const who = await page.textContent("#who");
  if (!who.includes("test-admin") || !who.includes("admin")) fail(`who: ${who}`);
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === "xcam_session");
  if (!session || !session.httpOnly || session.sameSite !== "Strict") fail(`session cookie: ${JSON.stringify(session)}`);
  if (await page.evaluate(() => document.cookie.includes("xcam_session"))) fail("the page's script can read the session cookie");
  await page.selectOption("#upload select[name=model]", "demo");
  await page.setInputFiles("#upload input[type=file]", zip);
  await page.screenshot({ path: join(out, "upload.png") });
  await page.click("#upload-button");
  await page.waitForURL(/#\/batches\/[0-9a-f-]+$/, { timeout: 60_000 });
  const batch = page.url().split("/").pop();
  await page.waitForFunction(() => document.getElementById("batch-status")?.textContent === "succeeded", null, { timeout: 180_000 });
  await page.waitForSelector("img.thumb");
  const thumbs = await page.locator("img.thumb").count();
  if (thumbs < 36) fail(`expected 36 overlay thumbnails, saw ${thumbs}`);
  // Clean samples say "no finding" rather than a near-zero top label; every row says whether its
  // image is like the model's training images (the demo bundle has a reference).
  const noFinding = await page.locator("#results .no-finding").count();
  if (noFinding < 1) fail("no sample says \"no finding\"");
  const judged = await page.locator("#results tbody tr", { hasText: /in \(|out of distribution/ }).count();
  if (judged !== 36) fail(`expected 36 rows with an out-of-distribution verdict, saw ${judged}`);
  await page.screenshot({ path: join(out, "batch.png"), fullPage: false });

  await page.locator("img.thumb").first().click();
  await page.waitForFunction(() => {
    const [a, b] = [document.getElementById("modal-original"), document.getElementById("modal-overlay")];
    return a.complete && b.complete && a.naturalWidth > 0 && b.naturalWidth > 0;
  });
  await page.screenshot({ path: join(out, "overlay.png") });
  await page.click("#modal-close");

  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#csv")]);
  const csvPath = join(out, "results.csv");
  await download.saveAs(csvPath);
  const lines = readFileSync(csvPath, "utf8").trim().split("\n");
  if (lines.length !== 37) fail(`the CSV has ${lines.length - 1} rows, expected 36`);
  if (!lines[0].startsWith("batch_id,item_id")) fail(`unexpected CSV header: ${lines[0]}`);

  await page.goto(`${base}/#/ops`);
  await page.waitForFunction(() => Number(document.getElementById("total-inferences")?.textContent) >= 36, null, { timeout: 30_000 });
  const charted = await page.evaluate(() => Chart.getChart(document.getElementById("chart-counts")).data.datasets[0].data.reduce((a, b) => a + b, 0));
  if (charted < 36) fail(`the inference chart shows ${charted}, expected at least 36`);
  // Latency is charted per model, never mixed across models.
  const latency = await page.evaluate(() => Chart.getChart(document.getElementById("chart-latency")).data.datasets.map((d) => [d.label, d.data.filter((v) => v != null).length]));
  if (!latency.some(([label, points]) => label === "demo p50" && points > 0)) fail(`the latency chart has no demo p50 line: ${JSON.stringify(latency)}`);
  const perModel = await page.evaluate(() => [...document.querySelectorAll(".model-latency")].map((e) => e.textContent));
  if (!perModel.some((t) => t.startsWith("demo p50 / p95"))) fail(`no per-model latency figure: ${JSON.stringify(perModel)}`);
  await page.waitForFunction(() => document.querySelectorAll("#log tbody tr").length >= 36 && document.querySelectorAll("#workers tbody tr code").length >= 1);
  await page.screenshot({ path: join(out, "operations.png"), fullPage: true });

  // A page of another origin on the same site (another port of 127.0.0.1): the browser sends
  // the session cookie with its request, and the API must refuse it.
  const evil = createServer((_, res) => {
    res.writeHead(200, { "content-type": "text/html" });
    res.end(`<!doctype html><script>
      const form = new FormData();
      form.append("file", new Blob(["PK"], { type: "application/zip" }), "x.zip");
      fetch(${JSON.stringify(base)} + "/v1/batches", { method: "POST", body: form, credentials: "include", mode: "no-cors" })
        .then(() => (document.title = "sent"), (e) => (document.title = "error " + e));
    </script>`);
  });
  await new Promise((ok) => evil.listen(0, "127.0.0.1", ok));
  const forged = await context.newPage();
  await forged.goto(`http://127.0.0.1:${evil.address().port}/`);
  await forged.waitForFunction(() => document.title !== "", null, { timeout: 15_000 });
  await forged.close();
  evil.close();

  // Delete the batch from its page, through the confirmation.
  await page.goto(`${base}/#/batches/${batch}`);
  await page.waitForSelector("#delete");
  // Retrying is offered to whoever may delete, and only once something has failed.
  if (!(await page.isVisible("#retry"))) fail("the retry button is not offered");
  await page.waitForSelector("#batch-status");
  if (!(await page.isDisabled("#retry"))) fail("retry is offered for a batch with no failed items");
  if (await page.isVisible("#delete-confirm")) fail("the delete confirmation shows before it is asked for");
  await page.click("#delete");
  await page.click("#delete-no");
  if (await page.isVisible("#delete-confirm")) fail("keeping the batch left the confirmation open");
  await page.click("#delete");
  await page.click("#delete-yes");
  await page.waitForURL(/#\/$/);
  await page.waitForSelector("#batches tbody tr");
  if (await page.isVisible(`tr[data-batch="${batch}"]`)) fail("the deleted batch is still listed");
  const gone = await page.evaluate(async (id) => (await fetch(`/v1/batches/${id}/results`)).status, batch);
  if (gone !== 404) fail(`the deleted batch's results answered ${gone}`);
  await page.screenshot({ path: join(out, "deleted.png") });

  await page.goto(`${base}/#/`);
  await page.click("#sign-out");
  await page.waitForSelector("#sign-in");
  if ((await page.context().cookies()).some((c) => c.name === "xcam_session" && c.value)) fail("sign-out left the cookie");
  const status = await page.evaluate(async () => (await fetch("/v1/batches")).status);
  if (status !== 401) fail(`after sign-out the API answered ${status}`);

  await signIn(page, viewerToken);
  await page.waitForSelector("#batches tbody tr");
  if (await page.isVisible("#upload")) fail("a viewer is offered the upload form");
  if (await page.isVisible("#cancel")) fail("a viewer is offered cancel");
  await page.screenshot({ path: join(out, "viewer.png") });
  await page.click("#sign-out");
  await page.waitForSelector("#sign-in");
  if (errors.length) fail(`page errors: ${errors.join("; ")}`);
  console.log(JSON.stringify({ batch, thumbs, csv_rows: lines.length - 1, charted }));
} finally {
  await browser.close();
}

async function signIn(page, token) {
  await page.waitForSelector("#sign-in");
  await page.fill("#token", token);
  await page.click("#sign-in-button");
}
