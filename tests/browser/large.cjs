// Browser test of a job page over a 1M-row table, driven by the Rust test
// `dashboard::browser_*_million*` in tests/integration: the page loads in Chromium with every view
// (two parameters at once, the pair matrix, parallel coordinates, loss against each parameter, the
// histogram, the best sets) drawn from bounded data. Prints one line "RESULT <json>"; the Rust test
// asserts on it.
"use strict";

const { launch, watchedPage, env } = require("./chromium.cjs");

async function main() {
  const base = env("MOPS_DASHBOARD_URL");
  const job = env("MOPS_DASHBOARD_JOB");
  const browser = await launch();
  try {
    const { page, problems } = await watchedPage(browser);
    const started = Date.now();
    const response = await page.goto(`${base}/jobs/${job}`, { timeout: 120000 });
    await page.waitForSelector("svg.heatmap rect.cell");
    const loadedMs = Date.now() - started;
    const html = await response.text();
    const seen = await page.evaluate(() => ({
      cells: Array.from(document.querySelectorAll("svg.heatmap rect.cell")).map((c) => Number(c.getAttribute("data-count"))),
      points: document.querySelectorAll("svg.heatmap circle.point").length,
      pairs: document.querySelectorAll("svg.pairs a.pair").length,
      lines: document.querySelectorAll("svg.parallel path.line").length,
      slices: document.querySelectorAll("figure.landscape").length,
      slicePoints: Array.from(document.querySelectorAll("figure.landscape")).map((f) => f.querySelectorAll("circle").length),
      histogram: document.querySelectorAll("figure.histogram").length,
      best: document.querySelectorAll("#best tbody tr").length,
      summary: document.querySelector("section.table-summary p").textContent,
      nodes: document.getElementsByTagName("*").length,
    }));
    console.log("RESULT " + JSON.stringify({ ...seen, loadedMs, bytes: html.length, problems }));
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : String(error));
  process.exit(1);
});
