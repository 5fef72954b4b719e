// Instruments: htmx does the requests; this file draws the server's Plotly figures in the
// book's theme, shows slider values, applies target-module presets, and keeps the URL in
// step with the settings. No maths here: every number arrives computed.
(function () {
  "use strict";
  var plotlyLoading = null;

  function loadPlotly() {
    if (window.Plotly) return Promise.resolve(window.Plotly);
    if (!plotlyLoading) {
      plotlyLoading = new Promise(function (resolve, reject) {
        var script = document.createElement("script");
        script.src = "/static/vendor/plotly/plotly.min.js";
        script.onload = function () { resolve(window.Plotly); };
        script.onerror = reject;
        document.head.appendChild(script);
      });
    }
    return plotlyLoading;
  }
  window.loralabLoadPlotly = loadPlotly;

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  // Theme colours go on top of the figure's own layout, so figures follow light/dark.
  function themed(layout) {
    var text = cssVar("--text"), muted = cssVar("--text-muted"), grid = cssVar("--border");
    var out = Object.assign({}, layout, {
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
      font: Object.assign({ family: "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", size: 13 }, layout.font || {}, { color: text }),
      hoverlabel: { font: { family: "system-ui, sans-serif" } },
    });
    Object.keys(out).forEach(function (key) {
      if (/^[xy]axis\d*$/.test(key)) {
        out[key] = Object.assign({}, out[key], { gridcolor: grid, zerolinecolor: grid, linecolor: grid, tickfont: { color: muted } });
      }
    });
    if (out.legend) out.legend = Object.assign({}, out.legend, { font: { color: muted } });
    return out;
  }

  function draw(el) {
    var source = el.querySelector("script.figure-data");
    if (!source) return;
    var figure = JSON.parse(source.textContent);
    el._loralabFigure = figure;
    loadPlotly().then(function (Plotly) {
      Plotly.react(el, figure.data, themed(figure.layout || {}), {
        responsive: true, displaylogo: false,
        modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d", "toggleSpikelines"],
      });
      el.classList.add("plot-ready");
    });
  }

  function drawAll(root) {
    (root || document).querySelectorAll(".plot").forEach(draw);
  }

  // On page load, a figure is drawn (and Plotly's 1.1 MB fetched) only when it nears the
  // viewport: a chapter whose instrument is far below costs nothing until the reader gets there.
  var nearViewport = "IntersectionObserver" in window ? new IntersectionObserver(function (entries) {
    entries.forEach(function (entry) {
      if (!entry.isIntersecting) return;
      nearViewport.unobserve(entry.target);
      draw(entry.target);
    });
  }, { rootMargin: "600px 0px" }) : null;

  function drawWhenNear(root) {
    (root || document).querySelectorAll(".plot").forEach(function (el) {
      if (nearViewport) nearViewport.observe(el); else draw(el);
    });
  }

  document.addEventListener("loralab:theme", function () {
    document.querySelectorAll(".plot.plot-ready").forEach(function (el) {
      if (window.Plotly && el._loralabFigure) window.Plotly.relayout(el, themed(el._loralabFigure.layout || {}));
    });
  });

  // Slider values are shown next to the slider as the reader drags.
  document.addEventListener("input", function (event) {
    var input = event.target;
    if (input.type !== "range") return;
    var output = document.getElementById(input.id + "-value");
    if (output) output.textContent = input.value + (output.dataset.unit ? " " + output.dataset.unit : "");
  });

  // Presets tick a named set of target modules.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-preset]");
    if (!button) return;
    var wanted = button.dataset.preset.split(",");
    var form = button.closest("form");
    form.querySelectorAll("input[name=target_modules]").forEach(function (box) {
      box.checked = wanted.indexOf(box.value) >= 0;
    });
    if (window.htmx) window.htmx.trigger(form, "change");
  });

  // In a chapter, the URL carries each embedded instrument's settings as `<embed>.<field>`;
  // on a standalone page htmx pushes the instrument's own URL (hx-push-url).
  function formQuery(form) {
    var params = new URLSearchParams();
    new FormData(form).forEach(function (value, key) { params.append(key, value); });
    return params;
  }

  function rememberInChapterUrl(form) {
    var embed = form.closest("[data-embed]");
    if (!embed || form.hasAttribute("hx-push-url")) return;
    var prefix = embed.dataset.embed + ".";
    var url = new URL(window.location.href);
    Array.from(url.searchParams.keys()).forEach(function (key) {
      if (key.indexOf(prefix) === 0) url.searchParams.delete(key);
    });
    formQuery(form).forEach(function (value, key) { url.searchParams.append(prefix + key, value); });
    history.replaceState(history.state, "", url);
  }

  function restoreFromChapterUrl() {
    var params = new URLSearchParams(window.location.search);
    document.querySelectorAll("[data-embed] form.instrument-form").forEach(function (form) {
      var prefix = form.closest("[data-embed]").dataset.embed + ".";
      var mine = {};
      params.forEach(function (value, key) {
        if (key.indexOf(prefix) === 0) (mine[key.slice(prefix.length)] = mine[key.slice(prefix.length)] || []).push(value);
      });
      if (!Object.keys(mine).length) return;
      Array.from(form.elements).forEach(function (field) {
        if (!field.name || !(field.name in mine)) return;
        if (field.type === "checkbox") field.checked = mine[field.name].indexOf(field.value) >= 0;
        else if (field.type !== "hidden") field.value = mine[field.name][mine[field.name].length - 1];
        if (field.type === "range") field.dispatchEvent(new Event("input", { bubbles: true }));
      });
      if (window.htmx) window.htmx.trigger(form, "change");
    });
  }

  // The configurator's module checkboxes belong to the model's family: when the reader picks
  // a model of another family, the result carries the new names and presets.
  function syncTargets(result) {
    var source = result.querySelector && result.querySelector("script.target-choices");
    var form = result.previousElementSibling;
    if (!source || !form) return;
    var choices = JSON.parse(source.textContent);
    var fieldset = form.querySelector("fieldset.targets");
    if (!fieldset) return;
    fieldset.classList.toggle("inactive", !choices.enabled);
    var grid = fieldset.querySelector(".checkbox-grid");
    var current = Array.from(grid.querySelectorAll("input")).map(function (box) { return box.value; });
    if (current.join(",") === choices.names.join(",")) return;
    grid.replaceChildren();
    choices.names.forEach(function (name) {
      var label = document.createElement("label"), box = document.createElement("input");
      box.type = "checkbox"; box.name = "target_modules"; box.value = name;
      box.checked = choices.selected.indexOf(name) >= 0;
      label.append(box, " " + name);
      grid.append(label);
    });
    var presets = fieldset.querySelector(".presets");
    presets.replaceChildren();
    choices.presets.forEach(function (preset) {
      var button = document.createElement("button");
      button.type = "button"; button.dataset.preset = preset[1].join(","); button.textContent = preset[0];
      presets.append(button);
    });
  }

  document.addEventListener("htmx:afterSwap", function (event) { drawAll(event.target); syncTargets(event.target); });
  document.addEventListener("htmx:beforeRequest", function (event) {
    var form = event.target.closest && event.target.closest("form.instrument-form");
    if (form) { form.closest(".instrument").classList.add("is-loading"); rememberInChapterUrl(form); }
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.target.closest && event.target.closest("form.instrument-form");
    if (form) form.closest(".instrument").classList.remove("is-loading");
  });
  // A 422 carries a message naming the bad field: show it in place of the result.
  document.addEventListener("htmx:beforeSwap", function (event) {
    if (event.detail.xhr.status === 422) { event.detail.shouldSwap = true; event.detail.isError = false; }
  });

  function start() {
    drawWhenNear(document);
    // htmx binds the forms' triggers on DOMContentLoaded too; restore once it has.
    if (document.readyState === "complete") restoreFromChapterUrl();
    else window.addEventListener("load", restoreFromChapterUrl, { once: true });
    // Without JS the forms submit as plain GETs; with it, the Update buttons are redundant.
    document.querySelectorAll(".instrument-form .submit-fallback").forEach(function (b) { b.hidden = true; });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
