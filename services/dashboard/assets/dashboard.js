// The dashboard's only script: relative times, filter forms that submit on change, live job rows
// from the server-sent event stream at /jobs/events, the provisional landscape of a job without a
// table fetched again when the job reports progress (at most every two seconds), the hover
// text of plot marks (data-hover), a click on a mark opening its parameter set's page, and a drag
// across the heat map zooming on that range. No polling: every fetch follows an event.
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

  // A number as the server's tables print it (layout::number): six decimals trimmed, or
  // scientific outside [1e-3, 1e6).
  function number(value) {
    if (value === 0 || (Math.abs(value) >= 1e-3 && Math.abs(value) < 1e6)) {
      return value.toFixed(6).replace(/0+$/, "").replace(/\.$/, "");
    }
    return value.toExponential(4);
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
      } else if (job.table && field === "best_loss") {
        el.textContent = job.table.best_loss === null ? "" : number(job.table.best_loss);
      } else if (job.table && field === "target") {
        el.textContent = job.table.target + (job.table.more_targets > 0 ? " +" + job.table.more_targets : "");
        el.setAttribute("title", job.table.target);
      } else if (job.table && field === "sets") {
        el.textContent = String(job.table.sets);
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
    // Only the newest page takes in new jobs; an older page updates the rows it shows.
    const inserts = table.hasAttribute("data-insert");
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
        if (!inserts) return;
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

  // The provisional landscape (#landscape[data-live-url]) fetched again after an event: at most
  // one fetch in flight and one every two seconds; an event meanwhile fetches once more after.
  function provisional(container) {
    const url = container.getAttribute("data-live-url") + window.location.search;
    let busy = false;
    let again = false;
    let last = 0;
    function fetchNow() {
      busy = true;
      last = Date.now();
      fetch(url, { credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (html !== null) {
            container.innerHTML = html;
            container.querySelectorAll("svg.parallel").forEach(parallel);
            container.querySelectorAll("svg.heatmap[data-plot]").forEach(zoom);
          }
        })
        .catch(function () {})
        .then(function () {
          busy = false;
          if (again) { again = false; schedule(); }
        });
    }
    function schedule() {
      if (busy) { again = true; return; }
      const wait = Math.max(0, last + 2000 - Date.now());
      busy = true;
      setTimeout(function () { busy = false; fetchNow(); }, wait);
    }
    return schedule;
  }

  function jobPage(section) {
    const id = section.getAttribute("data-live-job");
    const container = document.querySelector("#landscape[data-live-url]");
    const refresh = container ? provisional(container) : null;
    follow("/jobs/events", function (job) {
      if (job.job_id !== id) return;
      fill(section, job);
      if (section.hasAttribute("data-reload-when-indexed") && job.index_state === "done") {
        window.location.reload();
      } else if (refresh) {
        refresh();
      }
    });
  }

  // One tooltip for every mark with a data-hover text, following the pointer.
  function hovers() {
    const tip = document.createElement("div");
    tip.className = "tooltip";
    tip.hidden = true;
    document.body.appendChild(tip);
    function place(event) {
      tip.style.left = Math.min(event.clientX + 14, window.innerWidth - tip.offsetWidth - 8) + "px";
      tip.style.top = Math.min(event.clientY + 14, window.innerHeight - tip.offsetHeight - 8) + "px";
    }
    document.addEventListener("mouseover", function (event) {
      const mark = event.target.closest ? event.target.closest("[data-hover]") : null;
      if (!mark) { tip.hidden = true; return; }
      tip.textContent = mark.getAttribute("data-hover");
      tip.hidden = false;
      place(event);
    });
    document.addEventListener("mousemove", function (event) { if (!tip.hidden) place(event); });
  }

  // Brushing of parallel coordinates: a drag along an axis keeps the lines whose value on it is
  // in the dragged range (all brushed axes must agree); a short drag clears the axis.
  function parallel(svg) {
    const top = Number(svg.getAttribute("data-top"));
    const height = Number(svg.getAttribute("data-height"));
    const lines = Array.from(svg.querySelectorAll("path.line")).map(function (el) {
      return { el: el, values: el.getAttribute("data-values").split(",").map(Number) };
    });
    const ranges = {};
    const counter = document.querySelector("[data-brushed]");
    function apply() {
      let shown = 0;
      lines.forEach(function (line) {
        const keep = Object.keys(ranges).every(function (k) {
          const v = line.values[Number(k)];
          return v >= ranges[k][0] && v <= ranges[k][1];
        });
        line.el.classList.toggle("hidden", !keep);
        if (keep) shown += 1;
      });
      svg.setAttribute("data-shown", String(shown));
      if (counter) counter.textContent = shown + " of " + lines.length + " shown";
    }
    function svgY(event) {
      const point = svg.createSVGPoint();
      point.x = event.clientX;
      point.y = event.clientY;
      const y = point.matrixTransform(svg.getScreenCTM().inverse()).y;
      return Math.min(Math.max(y, top), top + height);
    }
    svg.querySelectorAll("g.axis").forEach(function (axis) {
      const area = axis.querySelector("rect.brush-area");
      const brush = axis.querySelector("rect.brush");
      const k = axis.getAttribute("data-index");
      const lo = Number(axis.getAttribute("data-lo"));
      const hi = Number(axis.getAttribute("data-hi"));
      const log = axis.getAttribute("data-log") === "true";
      function valueAt(y) {
        const scaled = lo + (1 - (y - top) / height) * (hi - lo);
        return log ? Math.pow(10, scaled) : scaled;
      }
      let start = null;
      area.addEventListener("pointerdown", function (event) {
        start = svgY(event);
        area.setPointerCapture(event.pointerId);
        event.preventDefault();
      });
      area.addEventListener("pointermove", function (event) {
        if (start === null) return;
        const y = svgY(event);
        brush.setAttribute("y", String(Math.min(start, y)));
        brush.setAttribute("height", String(Math.abs(y - start)));
      });
      area.addEventListener("pointerup", function (event) {
        if (start === null) return;
        const y = svgY(event);
        const a = Math.min(start, y);
        const b = Math.max(start, y);
        start = null;
        if (b - a < 3) {
          delete ranges[k];
          brush.setAttribute("height", "0");
          axis.removeAttribute("data-range");
        } else {
          ranges[k] = [valueAt(b), valueAt(a)];
          axis.setAttribute("data-range", ranges[k].join(","));
        }
        apply();
      });
    });
    apply();
  }

  // A click on a plot mark of a parameter set (data-param-id) opens that set's page; a copy
  // button copies the text of the element its data-copy names.
  function clicks() {
    const job = document.querySelector("[data-live-job]");
    document.addEventListener("click", function (event) {
      const copy = event.target.closest ? event.target.closest("button[data-copy]") : null;
      if (copy) {
        const source = document.querySelector(copy.getAttribute("data-copy"));
        if (source && navigator.clipboard) {
          navigator.clipboard.writeText(source.textContent).then(function () { copy.textContent = "Copied"; }, function () {});
        }
        return;
      }
      const mark = event.target.closest ? event.target.closest("svg [data-param-id]") : null;
      if (!mark || !job) return;
      window.location.href = "/jobs/" + encodeURIComponent(job.getAttribute("data-live-job")) + "/sets/" + encodeURIComponent(mark.getAttribute("data-param-id"));
    });
  }

  // Zoom on the heat map: a drag across the plot area shows the dragged range of both
  // parameters (xrange, yrange in the URL; the server bins the rows inside on a new grid).
  function zoom(svg) {
    const plot = svg.getAttribute("data-plot").split(",").map(Number);
    const xAxis = svg.getAttribute("data-x-axis").split(",").map(Number);
    const yAxis = svg.getAttribute("data-y-axis").split(",").map(Number);
    const logX = svg.getAttribute("data-log-x") === "true";
    const logY = svg.getAttribute("data-log-y") === "true";
    const box = svg.querySelector("rect.zoom");
    function local(event) {
      const point = svg.createSVGPoint();
      point.x = event.clientX;
      point.y = event.clientY;
      const p = point.matrixTransform(svg.getScreenCTM().inverse());
      return { x: Math.min(Math.max(p.x, plot[0]), plot[0] + plot[2]), y: Math.min(Math.max(p.y, plot[1]), plot[1] + plot[3]) };
    }
    function value(axis, log, fraction) {
      const scaled = axis[0] + fraction * (axis[1] - axis[0]);
      return log ? Math.pow(10, scaled) : scaled;
    }
    let start = null;
    svg.addEventListener("pointerdown", function (event) {
      if (event.target.closest("[data-param-id]")) return;
      start = local(event);
      svg.setPointerCapture(event.pointerId);
      event.preventDefault();
    });
    svg.addEventListener("pointermove", function (event) {
      if (start === null) return;
      const now = local(event);
      box.setAttribute("x", String(Math.min(start.x, now.x)));
      box.setAttribute("y", String(Math.min(start.y, now.y)));
      box.setAttribute("width", String(Math.abs(now.x - start.x)));
      box.setAttribute("height", String(Math.abs(now.y - start.y)));
    });
    svg.addEventListener("pointercancel", function () {
      start = null;
      box.setAttribute("width", "0");
    });
    svg.addEventListener("pointerup", function (event) {
      if (start === null) return;
      const now = local(event);
      const from = start;
      start = null;
      box.setAttribute("width", "0");
      if (Math.abs(now.x - from.x) < 8 || Math.abs(now.y - from.y) < 8) return;
      const fx = [Math.min(from.x, now.x), Math.max(from.x, now.x)].map(function (x) { return (x - plot[0]) / plot[2]; });
      const fy = [Math.max(from.y, now.y), Math.min(from.y, now.y)].map(function (y) { return 1 - (y - plot[1]) / plot[3]; });
      const url = new URL(window.location.href);
      url.searchParams.set("x", svg.getAttribute("data-x"));
      url.searchParams.set("y", svg.getAttribute("data-y"));
      url.searchParams.set("xscale", logX ? "log" : "linear");
      url.searchParams.set("yscale", logY ? "log" : "linear");
      url.searchParams.set("xrange", fx.map(function (f) { return String(value(xAxis, logX, f)); }).join(","));
      url.searchParams.set("yrange", fy.map(function (f) { return String(value(yAxis, logY, f)); }).join(","));
      url.hash = "pairs";
      window.location.href = url.toString();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    hovers();
    clicks();
    document.querySelectorAll("svg.heatmap[data-plot]").forEach(zoom);
    document.querySelectorAll("svg.parallel").forEach(parallel);
    refreshTimes(document);
    setInterval(function () { refreshTimes(document); }, 5000);
    // Delegated, so the selects of a provisional landscape swapped in later submit too.
    document.addEventListener("change", function (event) {
      const select = event.target.closest ? event.target.closest("select[data-autosubmit]") : null;
      if (select && select.form) select.form.submit();
    });
    const table = document.querySelector("table#jobs[data-events]");
    if (table) jobsTable(table);
    const section = document.querySelector("[data-live-job]");
    if (section) jobPage(section);
  });
})();
