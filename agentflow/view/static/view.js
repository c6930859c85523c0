// AgentFlow view: live progress of running runs. Elements with data-live-run="ID" are
// refreshed from /api/progress every few seconds; a page marked data-reload-on-finish
// reloads once its run is no longer running, to show the final summary.
(function () {
  "use strict";
  var body = document.body;
  var every = parseInt(body.getAttribute("data-poll-ms"), 10) || 2000;
  var url = body.getAttribute("data-progress-url");

  function live() { return Array.prototype.slice.call(document.querySelectorAll("[data-live-run]")); }

  function set(el, field, text) {
    var target = el.querySelector('[data-field="' + field + '"]');
    if (target && text !== undefined && text !== null) { target.textContent = String(text); }
  }

  function update(el, run) {
    set(el, "done", run.done);
    set(el, "total", run.total);
    set(el, "failed", run.failed);
    set(el, "tokens", Number(run.tokens).toLocaleString("en-US"));
    if (run.accuracy !== null && run.accuracy !== undefined) { set(el, "accuracy", run.accuracy.toFixed(3)); }
    if (run.kind === "synthesis") { set(el, "qa_accepted", run.qa_accepted); }
    var bar = el.querySelector("progress");
    if (bar) { bar.max = run.total || 1; bar.value = run.done; }
    var badge = el.querySelector('[data-field="status"] .badge');
    if (badge && badge.textContent !== run.status) {
      badge.textContent = run.status;
      badge.className = "badge s-" + run.status;
    }
    if (run.status !== "running") {
      el.removeAttribute("data-live-run");
      if (el.hasAttribute("data-reload-on-finish")) { window.location.reload(); }
    }
  }

  function poll() {
    var els = live();
    if (!els.length || !url) { return; }
    var query = els.map(function (el) { return "run=" + encodeURIComponent(el.getAttribute("data-live-run")); });
    fetch(url + "?" + query.join("&"), { headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : { runs: [] }; })
      .then(function (data) {
        var byId = {};
        data.runs.forEach(function (run) { byId[run.id] = run; });
        els.forEach(function (el) {
          var run = byId[el.getAttribute("data-live-run")];
          if (run) { update(el, run); }
        });
      })
      .catch(function () { /* the viewer went away: try again next time */ })
      .then(function () { if (live().length) { window.setTimeout(poll, every); } });
  }

  if (live().length) { window.setTimeout(poll, every); }
}());
