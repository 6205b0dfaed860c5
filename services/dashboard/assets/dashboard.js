// The dashboard's only script: relative times, filter forms that submit on change, and live
// job rows from the server-sent event stream at /jobs/events. No network polling.
"use strict";

(function () {
  function relative(iso) {
    const at = Date.parse(iso);
    if (Number.isNaN(at)) return iso;
    const seconds = Math.round((Date.now() - at) / 1000);
    const future = seconds < 0;
    const s = Math.abs(seconds);
    let text;
    if (s < 5) return "just now";
    else if (s < 60) text = s + " s";
    else if (s < 3600) text = Math.floor(s / 60) + " min";
    else if (s < 86400) text = Math.floor(s / 3600) + " h";
    else text = Math.floor(s / 86400) + " d";
    return future ? "in " + text : text + " ago";
  }

  function refreshTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      const iso = el.getAttribute("datetime");
      if (iso) el.textContent = relative(iso);
    });
  }

  // Fills the elements marked data-field inside `root` from a job row (see JobRow in jobs.rs).
  function fill(root, job) {
    root.querySelectorAll("[data-field]").forEach(function (el) {
      const field = el.getAttribute("data-field");
      if (field === "status") {
        el.textContent = job.status;
        el.className = "status status-" + job.status;
      } else if (field === "progress") {
        const bar = el.querySelector("progress");
        const pct = job.total > 0 ? Math.min(100, Math.max(0, (100 * job.completed) / job.total)) : 0;
        if (bar) bar.value = pct;
        const count = el.querySelector(".count");
        if (count) count.textContent = job.completed + " / " + job.total;
      } else if (field === "created_at" || field === "updated_at") {
        el.setAttribute("datetime", job[field]);
        el.setAttribute("title", job[field]);
        el.textContent = relative(job[field]);
      } else if (field === "index_state") {
        el.textContent = job.index_state;
      } else if (field === "error") {
        el.textContent = job.error || "";
      }
    });
    if (root.hasAttribute("data-status")) root.setAttribute("data-status", job.status);
    if (root.hasAttribute("data-created")) root.setAttribute("data-created", job.created_at);
  }

  function follow(url, onJob) {
    const indicator = document.querySelector("[data-live-indicator]");
    const source = new EventSource(url);
    source.addEventListener("open", function () { if (indicator) indicator.className = "live on"; });
    source.addEventListener("error", function () { if (indicator) indicator.className = "live off"; });
    source.addEventListener("job", function (event) {
      onJob(JSON.parse(event.data));
    });
    return source;
  }

  function jobsTable(table) {
    const statuses = (table.getAttribute("data-filter-statuses") || "").split(",").filter(Boolean);
    const since = Date.parse(table.getAttribute("data-filter-since") || "");
    const tbody = table.querySelector("tbody");
    const template = document.getElementById("job-row");
    function keeps(job) {
      if (statuses.length && statuses.indexOf(job.status) < 0) return false;
      if (!Number.isNaN(since) && Date.parse(job.created_at) < since) return false;
      return true;
    }
    follow(table.getAttribute("data-events"), function (job) {
      let row = tbody.querySelector('tr[data-job="' + CSS.escape(job.job_id) + '"]');
      if (!keeps(job)) {
        if (row) row.remove();
        return;
      }
      if (!row) {
        row = template.content.firstElementChild.cloneNode(true);
        row.setAttribute("data-job", job.job_id);
        const link = row.querySelector("a.job-link");
        link.href = "/jobs/" + encodeURIComponent(job.job_id);
        link.textContent = job.job_id;
        tbody.insertBefore(row, tbody.firstChild);
        const empty = document.querySelector("p.empty");
        if (empty) empty.remove();
      }
      fill(row, job);
    });
  }

  function jobPage(section) {
    const id = section.getAttribute("data-live-job");
    follow("/jobs/events", function (job) {
      if (job.job_id !== id) return;
      fill(section, job);
      if (section.hasAttribute("data-reload-when-indexed") && job.index_state === "done") {
        window.location.reload();
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    refreshTimes(document);
    setInterval(function () { refreshTimes(document); }, 5000);
    document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
    const table = document.querySelector("table#jobs[data-events]");
    if (table) jobsTable(table);
    const section = document.querySelector("[data-live-job]");
    if (section) jobPage(section);
  });
})();
