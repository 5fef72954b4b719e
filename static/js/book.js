// Page behaviour shared by every page: theme toggle, copy buttons, the contents'
// current-section highlight, and a fallback for maths: the server typesets formulas
// (app/maths.py); one it could not is typeset here, by the KaTeX script that such a chapter
// loads. No maths computed here: numbers come from the server.
(function () {
  "use strict";
  var root = document.documentElement;

  function effectiveTheme() {
    var t = root.dataset.theme;
    if (t === "light" || t === "dark") return t;
    return window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }
  window.loralabTheme = effectiveTheme;

  var toggle = document.getElementById("theme-toggle");
  if (toggle) {
    var update = function () { toggle.setAttribute("aria-pressed", String(effectiveTheme() === "dark")); };
    update();
    toggle.addEventListener("click", function () {
      var next = effectiveTheme() === "dark" ? "light" : "dark";
      root.dataset.theme = next;
      try { localStorage.setItem("loralab-theme", next); } catch (e) {}
      update();
      document.dispatchEvent(new CustomEvent("loralab:theme", { detail: next }));
    });
  }

  function renderMath() {
    if (!window.katex) return;
    document.querySelectorAll(".math:not([data-rendered])").forEach(function (el) {
      try {
        window.katex.render(el.textContent, el, { displayMode: el.dataset.display === "block", throwOnError: false, output: "htmlAndMathml" });
        el.dataset.rendered = "1";
      } catch (e) { el.classList.add("math-error"); }
    });
  }
  window.loralabRenderMath = renderMath;
  // katex.min.js is deferred like this file; wait for it if it is still loading.
  if (window.katex) renderMath(); else window.addEventListener("load", renderMath);

  document.addEventListener("click", function (event) {
    var button = event.target.closest(".copy-button");
    if (!button) return;
    var code = button.parentElement.querySelector("code");
    if (code && navigator.clipboard) {
      navigator.clipboard.writeText(code.innerText).then(function () {
        button.textContent = "Copied";
        setTimeout(function () { button.textContent = "Copy"; }, 1200);
      });
    }
  });

  var links = document.querySelectorAll(".toc a");
  if (links.length && "IntersectionObserver" in window) {
    var byId = {};
    links.forEach(function (a) { byId[a.getAttribute("href").slice(1)] = a; });
    var observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        if (entry.isIntersecting && byId[entry.target.id]) {
          links.forEach(function (a) { a.classList.remove("active"); });
          byId[entry.target.id].classList.add("active");
        }
      });
    }, { rootMargin: "0px 0px -70% 0px" });
    document.querySelectorAll(".chapter h2[id], .chapter h3[id]").forEach(function (h) { observer.observe(h); });
  }
})();
