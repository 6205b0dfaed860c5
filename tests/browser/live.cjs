// Browser test of a running job's provisional landscape, driven by the Rust test
// `dashboard::browser_*_provisional*` in tests/integration while a paced demo job runs: the jobs
// list shows the job running, its page draws the aggregations recorded so far and grows as the
// job reports them (no reload), and the final table replaces it when the job is indexed. Prints
// one line "RESULT <json>" with what it saw; the Rust test asserts on it. A screenshot goes to
// $MOPS_SCREENSHOT_DIR when set.
"use strict";

const { launch, watchedPage, env } = require("./chromium.cjs");

// The provisional rows the page shows (-1 when it shows none).
function provisionalRows(page) {
  return page.evaluate(() => {
    const el = document.querySelector("[data-provisional-rows]");
    return el ? Number(el.getAttribute("data-provisional-rows")) : -1;
  });
}

async function main() {
  const base = env("MOPS_DASHBOARD_URL");
  const shots = process.env.MOPS_SCREENSHOT_DIR;
  const browser = await launch();
  try {
    const { page, problems } = await watchedPage(browser);

    // The jobs list, live: wait for the demo's job to show as running.
    await page.goto(`${base}/jobs`);
    const row = await page.waitForSelector('table#jobs tr[data-job^="demo-"][data-status="running"]', { timeout: 60000 });
    const job = await row.getAttribute("data-job");

    await page.goto(`${base}/jobs/${job}`);
    await page.waitForSelector("[data-provisional-rows]");
    const expected = Number(await page.getAttribute("[data-provisional-rows]", "data-expected"));
    // The page is never reloaded while provisional: a marker set now must survive each growth.
    await page.evaluate(() => { window.__sameDocument = true; });
    const seen = [await provisionalRows(page)];
    let drawnWhileRunning = false;
    let statusWhileGrowing = [];
    for (let k = 0; k < 3; k += 1) {
      const last = seen[seen.length - 1];
      await page.waitForFunction((n) => {
        const el = document.querySelector("[data-provisional-rows]");
        return !el || Number(el.getAttribute("data-provisional-rows")) > n;
      }, last, { timeout: 30000 });
      const now = await provisionalRows(page);
      if (now < 0) break;
      if (!(await page.evaluate(() => window.__sameDocument === true))) break;
      seen.push(now);
      statusWhileGrowing.push(await page.textContent('[data-field="status"]'));
      if (now > 0 && await page.$("#landscape svg.heatmap rect.cell")) {
        drawnWhileRunning = true;
        if (shots && k === 1) {
          const box = await page.locator("#landscape").boundingBox();
          await page.screenshot({ path: `${shots}/dashboard-live.png`, fullPage: true, clip: { x: box.x, y: box.y, width: box.width, height: Math.min(box.height, 620) } });
        }
      }
    }

    // The final table replaces it: the page reloads itself when the index is done.
    await page.waitForSelector("section.table-summary:not(.provisional)", { timeout: 120000 });
    const finalRows = await page.$eval("section.table-summary p", (p) => Number(p.textContent.trim().split(" ")[0]));
    const provisionalAfter = await provisionalRows(page);

    console.log("RESULT " + JSON.stringify({
      job, expected, seen, drawnWhileRunning, statusWhileGrowing, finalRows, provisionalAfter, problems,
    }));
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
