// What both browser tests share: Debian's Chromium started as this machine allows (no sandbox as
// root, no background networking on a closed network), and a page at 1400 × 1000 that records
// every script error and console error, for the test to report.
"use strict";

const { chromium } = require("playwright-core");

async function launch() {
  return chromium.launch({
    executablePath: process.env.MOPS_TEST_CHROMIUM || "/usr/bin/chromium",
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}

// A new page of `browser` and the list its errors are pushed to.
async function watchedPage(browser) {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const problems = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console: ${message.text()}`);
  });
  return { page, problems };
}

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

module.exports = { launch, watchedPage, env };
