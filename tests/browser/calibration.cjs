// Browser test of the calibration views, driven by the Rust test `dashboard::browser_*_ridge*` in
// tests/integration: Playwright (playwright-core) drives Debian's Chromium through the job page's
// two-parameter view, its filters, the history page and a parameter set's page of a demo job
// ($MOPS_DASHBOARD_JOB), and
// prints one line "RESULT <json>" with what it saw. The Rust test asserts on it. Screenshots go
// to $MOPS_SCREENSHOT_DIR when set.
"use strict";

const { launch, watchedPage, env } = require("./chromium.cjs");

// The cells and points of the heat map on the page.
async function heatmap(page) {
  return page.$eval("svg.heatmap", (svg) => ({
    x: svg.getAttribute("data-x"),
    y: svg.getAttribute("data-y"),
    size: Number(svg.getAttribute("data-size")),
    cells: Array.from(svg.querySelectorAll("rect.cell")).map((c) => ({
      x0: Number(c.getAttribute("data-x0")), x1: Number(c.getAttribute("data-x1")),
      y0: Number(c.getAttribute("data-y0")), y1: Number(c.getAttribute("data-y1")),
      value: Number(c.getAttribute("data-value")), count: Number(c.getAttribute("data-count")),
      best: c.hasAttribute("data-best"),
    })),
    // Lowest first (the page draws them the other way round, so the lowest is on top).
    points: Array.from(svg.querySelectorAll("circle.point")).map((p) => ({
      rank: Number(p.getAttribute("data-rank")),
      param_id: p.getAttribute("data-param-id"), loss: Number(p.getAttribute("data-loss")),
    })).sort((a, b) => a.rank - b.rank),
  }));
}

async function main() {
  const base = env("MOPS_DASHBOARD_URL");
  const job = env("MOPS_DASHBOARD_JOB");
  const shots = process.env.MOPS_SCREENSHOT_DIR;
  const browser = await launch();
  try {
    const { page, problems } = await watchedPage(browser);

    // The default view: the strongest interacting pair.
    await page.goto(`${base}/jobs/${job}`);
    await page.waitForSelector("svg.heatmap rect.cell");
    const target = await page.getAttribute("section#pairs", "data-target");
    const initial = await heatmap(page);
    const bestRow = await page.$eval(`#best tbody tr[data-target="${target}"]`, (r) => ({
      param_id: r.getAttribute("data-param-id"), loss: Number(r.getAttribute("data-loss")),
    }));
    const width = await page.$eval("svg.heatmap", (svg) => svg.getBoundingClientRect().width);

    // Hover the lowest point: the tooltip names its row.
    await page.hover('svg.heatmap circle.point[data-rank="1"]');
    await page.waitForSelector(".tooltip:not([hidden])");
    const tooltip = await page.textContent(".tooltip");
    if (shots) await page.locator("section#pairs").screenshot({ path: `${shots}/dashboard-pairs.png` });

    // Brush the beta axis of the parallel coordinates from 20 % to 50 % of its height.
    await page.locator("svg.parallel").scrollIntoViewIfNeeded();
    const area = await page.$eval('svg.parallel g.axis[data-name="beta"] rect.brush-area', (r) => {
      const box = r.getBoundingClientRect();
      return { x: box.x + box.width / 2, y: box.y, h: box.height };
    });
    await page.mouse.move(area.x, area.y + area.h * 0.2);
    await page.mouse.down();
    await page.mouse.move(area.x, area.y + area.h * 0.5, { steps: 5 });
    await page.mouse.up();
    const brushed = await page.$eval("svg.parallel", (svg) => {
      const axis = svg.querySelector('g.axis[data-name="beta"]');
      const values = (p) => p.getAttribute("data-values").split(",").map(Number);
      return {
        index: Number(axis.getAttribute("data-index")),
        range: (axis.getAttribute("data-range") || "").split(",").map(Number),
        shown: Number(svg.getAttribute("data-shown")),
        all: Array.from(svg.querySelectorAll("path.line")).map(values),
        visible: Array.from(svg.querySelectorAll("path.line:not(.hidden)")).map(values),
      };
    });
    brushed.counter = await page.textContent("[data-brushed]");

    // Keep the best 10 %: the page reloads with the choice in its URL.
    await Promise.all([page.waitForURL(/keep=10(&|$)/), page.selectOption('select[name="keep"]', "10")]);
    await page.waitForSelector("svg.heatmap rect.cell");
    const kept = await heatmap(page);
    const keptUrl = page.url();

    // Another pair from the matrix.
    const other = await page.$$eval("svg.pairs a.pair", (links) => links
      .map((a) => ({ x: a.getAttribute("data-x"), y: a.getAttribute("data-y"), href: a.getAttribute("href") })));
    const next = other.find((p) => !(p.x === initial.x && p.y === initial.y));
    await Promise.all([page.waitForURL(/x=/), page.click(`svg.pairs a.pair[data-x="${next.x}"][data-y="${next.y}"]`)]);
    await page.waitForSelector("svg.heatmap rect.cell");
    const switched = await heatmap(page);
    const importance = await page.$$eval("#importance tbody tr", (rows) =>
      rows.map((r) => ({ param: r.getAttribute("data-param"), share: Number(r.getAttribute("data-importance")) })));

    // The jobs list has the job's best loss, target and sets.
    await page.goto(`${base}/jobs`);
    const listed = await page.$eval(`#jobs tr[data-job="${job}"]`, (row) => ({
      best_loss: row.querySelector("[data-field=best_loss]").textContent,
      target: row.querySelector("[data-field=target]").getAttribute("title"),
      sets: row.querySelector("[data-field=sets]").textContent,
    }));

    // The history of the target: the job is a point; hovering it names it.
    await page.goto(`${base}/history?target=${encodeURIComponent(target)}`);
    await page.waitForSelector("svg.history circle.job");
    const history = await page.$$eval("svg.history circle.job", (points) =>
      points.map((p) => ({ job: p.getAttribute("data-job"), loss: Number(p.getAttribute("data-loss")), improved: p.hasAttribute("data-improved") })));
    await page.hover(`svg.history circle.job[data-job="${job}"]`);
    await page.waitForSelector(".tooltip:not([hidden])");
    const historyTooltip = await page.textContent(".tooltip");
    if (shots) await page.locator("main").screenshot({ path: `${shots}/dashboard-history.png` });

    // Clicking the lowest point of the heat map opens its parameter set.
    await page.goto(`${base}/jobs/${job}`);
    await page.waitForSelector('svg.heatmap circle.point[data-rank="1"]');
    await Promise.all([page.waitForURL(/\/sets\//), page.click('svg.heatmap circle.point[data-rank="1"]')]);
    await page.waitForSelector("section.set");
    const set = await page.evaluate(() => ({
      url: window.location.pathname,
      param_id: document.querySelector("section.set").getAttribute("data-param-id"),
      values: Array.from(document.querySelectorAll("table.values tbody tr")).map((r) => r.getAttribute("data-name")),
      losses: Array.from(document.querySelectorAll("table.losses tbody tr")).map((r) => ({
        target: r.getAttribute("data-target"), loss: Number(r.getAttribute("data-loss")), rank: Number(r.getAttribute("data-rank")),
      })),
      replicates: Array.from(document.querySelectorAll("table.replicates tbody tr")).map((r) => Number(r.getAttribute("data-loss"))),
      strips: document.querySelectorAll("svg.replicates circle.replicate").length,
      bands: Array.from(document.querySelectorAll("svg.band")).map((svg) => ({
        output: svg.getAttribute("data-output"), column: svg.getAttribute("data-column"),
        replicates: Number(svg.querySelector("polygon.spread").getAttribute("data-replicates")),
        lo: Number(svg.querySelector("polyline.mean").getAttribute("data-lo")),
        hi: Number(svg.querySelector("polyline.mean").getAttribute("data-hi")),
      })),
      results: Array.from(document.querySelectorAll("table.results tbody tr")).map((r) => r.getAttribute("data-kind")),
      owners: Array.from(document.querySelectorAll("table.results a.owner")).map((a) => a.getAttribute("data-owner")),
      python: document.querySelector("pre.python").textContent,
    }));
    if (shots) await page.locator("main").screenshot({ path: `${shots}/dashboard-set.png` });

    // The model outputs of the target's three best sets, from the job page's link.
    await page.goto(`${base}/jobs/${job}`);
    await Promise.all([page.waitForURL(/\/outputs\?/), page.click("section.best a.outputs")]);
    await page.waitForSelector("svg.band");
    const outputs = await page.evaluate(() => ({
      legend: Array.from(document.querySelectorAll("ol.legend li")).map((li) => li.getAttribute("data-param-id")),
      figures: Array.from(document.querySelectorAll("svg.band")).map((svg) => Array.from(svg.querySelectorAll("polygon.spread")).map((p) => Number(p.getAttribute("data-replicates")))),
    }));
    if (shots) await page.locator("main").screenshot({ path: `${shots}/dashboard-outputs.png` });

    // Zoom: drag across the middle of the heat map; the page shows that range on a new grid.
    await page.goto(`${base}/jobs/${job}`);
    await page.waitForSelector("svg.heatmap rect.cell");
    const plotBox = await page.$eval("svg.heatmap rect.plot-area", (r) => {
      const b = r.getBoundingClientRect();
      return { x: b.x, y: b.y, w: b.width, h: b.height };
    });
    await page.mouse.move(plotBox.x + plotBox.w * 0.25, plotBox.y + plotBox.h * 0.2);
    await page.mouse.down();
    await page.mouse.move(plotBox.x + plotBox.w * 0.7, plotBox.y + plotBox.h * 0.75, { steps: 6 });
    await Promise.all([page.waitForURL(/xrange=/), page.mouse.up()]);
    await page.waitForSelector("svg.heatmap rect.cell");
    const zoomUrl = new URL(page.url());
    const zoomed = {
      xrange: zoomUrl.searchParams.get("xrange").split(",").map(Number),
      yrange: zoomUrl.searchParams.get("yrange").split(",").map(Number),
      map: await heatmap(page),
      note: await page.textContent("section#pairs p.note"),
    };

    // Compare with the demo's second job (half the sets shared): both jobs overlaid.
    await page.goto(`${base}/compare?a=${job}&b=${job}-overlap`);
    await page.waitForSelector("section.overlay figure.landscape svg");
    const overlay = await page.$eval("section.overlay", (s) => ({
      target: s.getAttribute("data-target"),
      rowsA: Number(s.getAttribute("data-rows-a")),
      rowsB: Number(s.getAttribute("data-rows-b")),
      params: Array.from(s.querySelectorAll("figure.landscape")).map((f) => f.getAttribute("data-param")),
      histogram: s.querySelectorAll("figure.histogram svg").length,
    }));
    if (shots) await page.locator("section.overlay").screenshot({ path: `${shots}/dashboard-compare.png` });

    console.log("RESULT " + JSON.stringify({
      target, initial, bestRow, width, tooltip, brushed, kept, keptUrl, next, switched, importance, listed, history, historyTooltip, set, outputs, zoomed, overlay, problems,
    }));
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : String(error));
  process.exit(1);
});
