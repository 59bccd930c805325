// Every moment on relink's pages is rendered as <time class="local-time" datetime="…Z">
// with its UTC text; this rewrites it in the viewer's own time zone (the browser's),
// naming the zone twice: its short name ("EST") and its IANA name ("America/New_York").
// Without JavaScript the page keeps the UTC text, which names UTC.
(function () {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const format = new Intl.DateTimeFormat(undefined, {
    weekday: "short",
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "numeric",
    minute: "2-digit",
    timeZoneName: "short",
  });
  function localize(root) {
    for (const el of root.querySelectorAll("time.local-time[datetime]")) {
      const moment = new Date(el.getAttribute("datetime"));
      if (Number.isNaN(moment.getTime())) continue;
      el.textContent = `${format.format(moment)} (${zone})`;
      el.title = el.getAttribute("datetime").replace("T", " ").replace(/:\d\dZ$/, " UTC");
      el.dataset.zone = zone;
    }
  }
  localize(document);
})();
