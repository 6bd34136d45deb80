// The dashboard in a real headless Chromium: upload the demo samples through the page, wait for
// the batch to finish, open an overlay beside its original, download the CSV and check it, then
// check the operations page charts the batch. Screenshots go to OUT_DIR.
//
//   node tests/browser/dashboard.mjs http://127.0.0.1:PORT path/to/samples.zip OUT_DIR
import { chromium } from "playwright-core";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const [base, zip, out] = process.argv.slice(2);
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
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 }, acceptDownloads: true });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));

  await page.goto(`${base}/#/`);
  await page.waitForSelector("#upload select[name=model] option", { state: "attached" });
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
  await page.waitForFunction(() => document.querySelectorAll("#log tbody tr").length >= 36 && document.querySelectorAll("#workers tbody tr code").length >= 1);
  await page.screenshot({ path: join(out, "operations.png"), fullPage: true });
  if (errors.length) fail(`page errors: ${errors.join("; ")}`);
  console.log(JSON.stringify({ batch, thumbs, csv_rows: lines.length - 1, charted }));
} finally {
  await browser.close();
}
