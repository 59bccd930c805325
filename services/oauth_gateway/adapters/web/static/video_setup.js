// Live progress of a running switch: listens to /api/switches/<id>/events
// (server-sent events: `progress` at each change, `settled` at the end) and
// updates #progress and #message in place; reloads once when the switch
// finishes so the failed sessions and buttons are rendered by the server.
// EventSource reconnects by itself with Last-Event-ID; a browser without it
// polls /api/switches/<id> instead.
(function () {
  const section = document.getElementById("switch");
  if (!section || section.dataset.inFlight !== "true") return;
  const id = section.dataset.switchId;
  const every = parseInt(section.dataset.pollMs || "1000", 10);
  const final = ["COMPLETED", "COMPLETED_WITH_FAILURES", "SUPERSEDED", "ROLLED_BACK"];
  const progress = document.getElementById("progress");
  const set = (elementId, value) => {
    const el = document.getElementById(elementId);
    if (el) el.textContent = String(value);
  };

  function show(body) {
    progress.dataset.state = body.state;
    progress.dataset.total = body.sessions_total;
    progress.dataset.migrated = body.sessions_migrated;
    progress.dataset.failed = body.sessions_failed;
    progress.dataset.remaining = body.sessions_remaining;
    set("progress-migrated", body.sessions_migrated);
    set("progress-failed", body.sessions_failed);
    set("progress-remaining", body.sessions_remaining);
    set("progress-state", body.state_label);
    const bar = document.getElementById("progress-bar");
    if (bar) {
      bar.max = body.sessions_total || 1;
      bar.value = body.sessions_migrated + body.sessions_failed;
    }
    const message = document.getElementById("message");
    if (message && body.message) {
      message.dataset.kind = body.message.kind;
      message.className = `banner banner-${body.message.kind}`;
      message.replaceChildren(...body.message.lines.map((line) => {
        const p = document.createElement("p");
        p.textContent = line;
        return p;
      }));
    }
    if (final.includes(body.state)) {
      section.dataset.inFlight = "false";
      window.location.reload();
      return true;
    }
    return false;
  }

  if (window.EventSource) {
    const stream = new EventSource(`/api/switches/${id}/events`, { withCredentials: true });
    section.dataset.live = "events";
    const onEvent = (event) => {
      if (show(JSON.parse(event.data))) stream.close();
    };
    stream.addEventListener("progress", onEvent);
    stream.addEventListener("settled", onEvent);
    return;
  }

  async function poll() {
    let body;
    try {
      const response = await fetch(`/api/switches/${id}`, { credentials: "same-origin" });
      if (!response.ok) throw new Error(String(response.status));
      body = await response.json();
    } catch (err) {
      setTimeout(poll, every * 2);
      return;
    }
    if (!show(body)) setTimeout(poll, every);
  }
  section.dataset.live = "poll";
  setTimeout(poll, every);
})();
