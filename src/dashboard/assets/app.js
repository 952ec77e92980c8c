// whatan dashboard: live updates and copy buttons. The pages work without
// it (forms are plain HTML forms); it only keeps them current.
(function () {
  "use strict";

  // Copy buttons: <button data-copy="ID"> copies the text of element ID.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) return;
    var done = function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 1500);
    };
    var fallback = function () {
      var range = document.createRange();
      range.selectNodeContents(source);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      try { document.execCommand("copy"); done(); } catch (e) { /* selected: copy by hand */ }
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(source.textContent).then(done, fallback);
    } else {
      fallback();
    }
  });

  // Forms with data-confirm="question" ask before they go.
  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  // Live parts: every element with data-live and an id is replaced by the
  // same element of a fresh copy of the page, every 2 seconds while the
  // tab is visible.
  if (!document.querySelector("[data-live]")) return;
  var INTERVAL_MS = 2000;
  var schedule = function () { setTimeout(refresh, INTERVAL_MS); };
  function refresh() {
    if (document.hidden) { schedule(); return; }
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Whatan-Live": "1" } })
      .then(function (response) {
        if (response.redirected && new URL(response.url).pathname === "/login") {
          window.location.reload();
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (text) {
        if (!text) return;
        var fresh = new DOMParser().parseFromString(text, "text/html");
        document.querySelectorAll("[data-live]").forEach(function (element) {
          var replacement = fresh.getElementById(element.id);
          if (replacement && replacement.innerHTML !== element.innerHTML) {
            element.innerHTML = replacement.innerHTML;
          }
        });
      })
      .catch(function () { /* offline for a moment: try again */ })
      .then(schedule);
  }
  schedule();
})();
