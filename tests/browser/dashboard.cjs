// Browser test of the dashboard, driven by the Rust test `dashboard::browser_*` in
// tests/integration: Playwright (playwright-core) drives Debian's Chromium.
//
// Protocol on stdio:
//   1. logs in at $MOPS_DASHBOARD_URL/jobs with $MOPS_DASHBOARD_TOKEN, opens the jobs page,
//      starts recording every status the page shows per job, and prints "READY";
//   2. reads one line from stdin: the id of the job to follow (the Rust test has meanwhile run
//      `mops demo`);
//   3. waits until that job's row says succeeded, checks the page was never reloaded, opens the
//      job page through the row's link, screenshots it to $MOPS_DASHBOARD_SCREENSHOT, and prints
//      one line "RESULT <json>" with what it saw. The Rust test asserts on it.
"use strict";

const { launch, watchedPage, env } = require("./chromium.cjs");
const readline = require("node:readline");

async function nextLine() {
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    lines.close();
    return line.trim();
  }
  throw new Error("stdin closed before a job id arrived");
}

async function main() {
  const base = env("MOPS_DASHBOARD_URL");
  const browser = await launch();
  try {
    const { page, problems } = await watchedPage(browser);

    // Without the token the dashboard sends the browser to its login form.
    await page.goto(`${base}/jobs`);
    if (!page.url().includes("/login")) throw new Error(`expected the login form, got ${page.url()}`);
    await page.fill("input[name=token]", process.env.MOPS_DASHBOARD_TOKEN || "");
    await Promise.all([page.waitForURL(/\/jobs$/), page.click("button[type=submit]")]);

    // Mark this document: a reload would lose the mark. Record every status shown per job.
    await page.evaluate(() => {
      window.__mopsMark = "loaded-once";
      window.__mopsSeen = {};
      const record = () => {
        document.querySelectorAll("#jobs tbody tr[data-job]").forEach((row) => {
          const job = row.getAttribute("data-job");
          const status = row.querySelector("[data-field=status]").textContent;
          const seen = (window.__mopsSeen[job] = window.__mopsSeen[job] || []);
          if (seen[seen.length - 1] !== status) seen.push(status);
        });
      };
      record();
      new MutationObserver(record).observe(document.querySelector("#jobs tbody"), {
        subtree: true, childList: true, characterData: true, attributes: true,
      });
    });
    await page.waitForSelector("[data-live-indicator].on", { timeout: 10000 });
    const before = await page.$$eval("#jobs tbody tr[data-job]", (rows) => rows.map((r) => r.getAttribute("data-job")));
    console.log("READY");

    const job = await nextLine();
    const row = `#jobs tbody tr[data-job="${job}"]`;
    await page.waitForSelector(`${row} [data-field=status]:text-is("succeeded")`, { timeout: 60000 });
    const mark = await page.evaluate(() => window.__mopsMark);
    const seen = await page.evaluate((id) => window.__mopsSeen[id] || [], job);
    const progress = await page.textContent(`${row} .progress .count`);

    await Promise.all([page.waitForURL(new RegExp(`/jobs/${job}$`)), page.click(`${row} a.job-link`)]);
    await page.waitForSelector("figure.landscape svg");
    const landscapes = await page.$$eval("figure.landscape", (figs) =>
      figs.map((f) => ({ param: f.getAttribute("data-param"), points: f.querySelectorAll("svg circle").length })));
    const best = await page.$$eval("#best tbody tr", (rows) => rows.map((r) => ({
      target: r.getAttribute("data-target"),
      param_id: r.getAttribute("data-param-id"),
      loss: Number(r.getAttribute("data-loss")),
    })));
    const histogram = await page.$$eval("figure.histogram svg rect", (rects) => rects.length);
    const counts = await page.$$eval("[data-count]", (cells) =>
      Object.fromEntries(cells.map((c) => [c.getAttribute("data-count"), Number(c.textContent)])));
    const downloads = await page.$$eval("a.download", (links) => links.map((a) => a.getAttribute("href")));
    const screenshot = process.env.MOPS_DASHBOARD_SCREENSHOT;
    if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });

    console.log("RESULT " + JSON.stringify({
      job, before, mark, seen, progress, landscapes, best, histogram, counts, downloads, problems,
    }));
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : String(error));
  process.exit(1);
});
