// Copy buttons of the connect page: <button data-copy="ID"> copies the text of the element with id ID.
// navigator.clipboard needs a secure context (HTTPS or localhost); elsewhere a selected textarea and
// document.execCommand("copy") do it. Buttons stay hidden when this script does not run.
"use strict";
(function () {
  function fallback(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }
  function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () { return fallback(text); });
    }
    return fallback(text);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      var status = document.getElementById(button.getAttribute("data-copy") + "-copied");
      button.hidden = false;
      button.addEventListener("click", function () {
        var source = document.getElementById(button.getAttribute("data-copy"));
        copy(source.textContent).then(function () {
          if (status) { status.textContent = "Copied"; }
        }, function () {
          if (status) { status.textContent = "Select the text and copy it by hand"; }
        });
      });
    });
  });
})();
