// Instruments: htmx does the requests; this file draws the server's Plotly figures in the
// book's theme, keeps controls in step (slider values, power-of-two rank sliders, controls
// that apply to some methods only, target-module presets), keeps the URL and the browser
// history in step with the settings, and tells screen readers the new result once the
// reader stops moving a control. No maths here: every number arrives computed.
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

  // A plot title longer than the plot's width breaks onto lines instead of being cut off.
  function wrapWords(text, perLine) {
    if (text.length <= perLine || text.indexOf("<br>") >= 0) return text;
    var lines = [""];
    text.split(" ").forEach(function (word) {
      var last = lines[lines.length - 1];
      if (last && (last + " " + word).length > perLine) lines.push(word); else lines[lines.length - 1] = last ? last + " " + word : word;
    });
    return lines.join("<br>");
  }

  // Theme colours go on top of the figure's own layout, so figures follow light/dark; on a
  // narrow plot the margins and fonts shrink so the drawing keeps most of the width.
  function themed(layout, width) {
    var text = cssVar("--text"), muted = cssVar("--text-muted"), grid = cssVar("--border");
    var narrow = width && width < 480;
    var out = Object.assign({}, layout, {
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
      font: Object.assign({ family: "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", size: narrow ? 11 : 13 }, layout.font || {}, { color: text }),
      hoverlabel: { font: { family: "system-ui, sans-serif" } },
    });
    if (narrow && out.margin) out.margin = Object.assign({}, out.margin, { l: Math.min(out.margin.l || 40, 44), r: 8 });
    if (width && out.title && out.title.text) {
      // from the figure's left edge (not the plot area's, which the axis labels push right)
      var wrapped = wrapWords(out.title.text, Math.floor((width - 16) / 8));
      var extra = (wrapped.match(/<br>/g) || []).length * 17;
      out.title = Object.assign({}, out.title, { text: wrapped, xref: "container", x: 8 / width, xanchor: "left" });
      if (extra) out.margin = Object.assign({}, out.margin || {}, { t: ((out.margin || {}).t || 36) + extra });
    }
    Object.keys(out).forEach(function (key) {
      if (/^[xy]axis\d*$/.test(key)) {
        out[key] = Object.assign({}, out[key], { gridcolor: grid, zerolinecolor: grid, linecolor: grid, tickfont: { color: muted } });
      }
    });
    if (out.legend) out.legend = Object.assign({}, out.legend, { font: Object.assign({}, out.legend.font || {}, { color: muted }) });
    (out.annotations || []).forEach(function (note) {
      if (note.font && !note.font.color) note.font = Object.assign({}, note.font, { color: muted });
    });
    return out;
  }

  function draw(el) {
    var source = el.querySelector("script.figure-data");
    if (!source) return;
    var figure = JSON.parse(source.textContent);
    el._loralabFigure = figure;
    loadPlotly().then(function (Plotly) {
      Plotly.react(el, figure.data, themed(figure.layout || {}, el.clientWidth), {
        // No mode bar: it shows on hover only, so its buttons were invisible tab stops inside a
        // figure (and on a phone it sat on the title). Dragging still zooms, a double click
        // resets, hovering reads values; the same numbers are in the tables.
        responsive: true, displaylogo: false, displayModeBar: false,
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

  function redrawThemed() {
    document.querySelectorAll(".plot.plot-ready").forEach(function (el) {
      if (window.Plotly && el._loralabFigure) window.Plotly.relayout(el, themed(el._loralabFigure.layout || {}, el.clientWidth));
    });
  }
  document.addEventListener("loralab:theme", redrawThemed);

  // --- controls ---------------------------------------------------------------------------

  function showSliderValue(input) {
    var output = document.getElementById(input.id + "-value");
    if (output) output.textContent = input.value + (output.dataset.unit ? " " + output.dataset.unit : "");
  }

  // A power-of-two slider drives the number box beside it (which the form sends); a typed
  // number moves the slider to the nearest power of two and keeps the exact value.
  function syncRankFromSlider(slider) {
    var box = document.getElementById(slider.dataset.target);
    if (!box) return;
    box.value = String(Math.pow(2, Number(slider.value)));
    slider.setAttribute("aria-valuetext", box.value);
  }
  function syncSliderFromRank(box) {
    var slider = document.getElementById(box.id + "-slider");
    var value = Number(box.value);
    if (!slider || !(value >= 1)) return;
    slider.value = String(Math.max(0, Math.min(Number(slider.max), Math.round(Math.log2(value)))));
    slider.setAttribute("aria-valuetext", String(value));
  }

  document.addEventListener("input", function (event) {
    var input = event.target;
    if (input.type === "range" && input.classList.contains("log2-slider")) syncRankFromSlider(input);
    else if (input.type === "range") showSliderValue(input);
    else if (input.classList && input.classList.contains("rank-number")) syncSliderFromRank(input);
  }, true);  // capture: the number box is updated before htmx reads the form

  // `data-when="method=lora,qlora"`: a control (fieldset) or an option applies only while the
  // named field has one of the values. A fieldset is disabled (or hidden) otherwise, so the form
  // does not send it; an option is disabled, and a select whose choice became invalid falls
  // back to the reader's earlier choice, or the first valid one.
  function whenHolds(form, rule) {
    var parts = rule.split("="), field = form.elements[parts[0]];
    if (!field) return true;
    var value = field.value;
    return parts[1].split(",").indexOf(value) >= 0;
  }

  function applyWhen(form) {
    form.querySelectorAll("fieldset[data-when]").forEach(function (set) {
      var on = whenHolds(form, set.dataset.when);
      set.disabled = !on;
      if (set.hasAttribute("data-when-hide")) set.hidden = !on;
    });
    form.querySelectorAll("select").forEach(function (select) {
      var ruled = select.querySelectorAll("option[data-when]");
      if (!ruled.length) return;
      ruled.forEach(function (option) { option.disabled = !whenHolds(form, option.dataset.when); });
      var chosen = select.options[select.selectedIndex];
      if (chosen && !chosen.disabled) { select.dataset.chosen = select.value; return; }
      var earlier = select.dataset.chosen && select.querySelector("option[value='" + select.dataset.chosen + "']");
      var fallback = earlier && !earlier.disabled ? earlier : Array.from(select.options).find(function (o) { return !o.disabled; });
      if (fallback) select.value = fallback.value;
    });
  }

  document.addEventListener("change", function (event) {
    var form = event.target.form;
    if (form && form.classList.contains("instrument-form")) applyWhen(form);
  }, true);

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

  // A pasted config.json travels in the URL: send it without its indentation.
  document.addEventListener("htmx:configRequest", function (event) {
    var params = event.detail.parameters;
    var config = params && (typeof params.get === "function" ? params.get("config") : params.config);
    if (!config) return;
    try {
      var compact = JSON.stringify(JSON.parse(config));
      if (typeof params.set === "function") params.set("config", compact); else params.config = compact;
    } catch (e) { /* not JSON: the server says what is wrong */ }
  });

  // --- the URL and the history --------------------------------------------------------------
  // On an instrument's own page each new setting is a history entry (settings that change
  // within a second replace it, so dragging a slider is one entry), and Back/Forward put the
  // form and the result back. In a chapter the URL carries each embed's settings as
  // `<embed>.<field>`, replaced in place: Back leaves the chapter as a reader expects.
  function formQuery(form) {
    var params = new URLSearchParams();
    new FormData(form).forEach(function (value, key) {
      if (key === "config" && value) { try { value = JSON.stringify(JSON.parse(value)); } catch (e) {} }
      params.append(key, value);
    });
    return params;
  }

  function updateFullPageLink(section, query) {
    var link = section.querySelector(".full-page-link");
    if (link) link.href = "/instruments/" + section.dataset.instrument + "?" + query.toString();
  }

  var lastPush = 0, restoring = false;

  function rememberSettings(form) {
    var section = form.closest("[data-embed]");
    if (!section) return;
    var query = formQuery(form);
    updateFullPageLink(section, query);
    var url = new URL(window.location.href);
    if (section.dataset.urlMode === "page") {
      if (url.search === "?" + query.toString()) return;
      url.search = query.toString();
      var now = Date.now();
      if (restoring || now - lastPush < 1000) history.replaceState({ loralab: true }, "", url);
      else history.pushState({ loralab: true }, "", url);
      lastPush = now;
      return;
    }
    var prefix = section.dataset.embed + ".";
    Array.from(url.searchParams.keys()).forEach(function (key) {
      if (key.indexOf(prefix) === 0) url.searchParams.delete(key);
    });
    query.forEach(function (value, key) { url.searchParams.append(prefix + key, value); });
    history.replaceState(history.state, "", url);
  }

  // Put a form's fields back from the URL; returns whether anything was there for it.
  function restoreForm(form, params, prefix) {
    var mine = {};
    params.forEach(function (value, key) {
      if (key.indexOf(prefix) !== 0) return;
      var name = key.slice(prefix.length);
      (mine[name] = mine[name] || []).push(value);
    });
    if (!Object.keys(mine).length) return false;
    Array.from(form.elements).forEach(function (field) {
      if (!field.name || field.type === "hidden" || field.type === "submit") return;
      var values = mine[field.name];
      if (field.type === "checkbox") field.checked = !!values && values.indexOf(field.value) >= 0;
      else if (values) field.value = values[values.length - 1];
      else if (field.tagName === "TEXTAREA") field.value = "";
      if (field.type === "range") showSliderValue(field);
      if (field.classList.contains("rank-number")) syncSliderFromRank(field);
    });
    applyWhen(form);
    return true;
  }

  function restoreAll(fromHistory) {
    var params = new URLSearchParams(window.location.search);
    document.querySelectorAll("[data-embed] form.instrument-form").forEach(function (form) {
      var section = form.closest("[data-embed]");
      var page = section.dataset.urlMode === "page";
      if (page && !fromHistory) return;  // the server rendered this page from its URL already
      var found = restoreForm(form, params, page ? "" : section.dataset.embed + ".");
      // On its own page, a history entry without settings is the instrument's defaults.
      if (!found && page && fromHistory) { form.reset(); applyWhen(form); found = true; }
      if (found && window.htmx) { restoring = fromHistory; window.htmx.trigger(form, "change"); }
    });
  }

  window.addEventListener("popstate", function () { restoreAll(true); });

  // --- results ---------------------------------------------------------------------------------

  // The configurator's module checkboxes belong to the model's family: when the reader picks
  // a model of another family, the result carries the new names and presets.
  function syncTargets(result) {
    var source = result.querySelector && result.querySelector("script.target-choices");
    var form = result.previousElementSibling;
    if (!source || !form) return;
    var choices = JSON.parse(source.textContent);
    var fieldset = form.querySelector("fieldset.targets");
    if (!fieldset) return;
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

  // One short sentence per result for screen readers, once the reader has stopped for a moment:
  // the result region itself is not live, so a slider drag is not read out value by value.
  function announce(section) {
    var status = section.querySelector(".instrument-status");
    var summary = section.querySelector(".instrument-result .announce, .instrument-result .result-error");
    if (!status || !summary) return;
    clearTimeout(status._timer);
    status._timer = setTimeout(function () {
      var text = summary.textContent.replace(/\s+/g, " ").trim();
      if (text && status.textContent !== text) status.textContent = text;
    }, 1200);
  }

  document.addEventListener("htmx:afterSwap", function (event) {
    drawAll(event.target);
    syncTargets(event.target);
    var section = event.target.closest && event.target.closest("[data-embed]");
    if (section) announce(section);
  });
  document.addEventListener("htmx:beforeRequest", function (event) {
    var form = event.target.closest && event.target.closest("form.instrument-form");
    if (form) form.closest(".instrument").classList.add("is-loading");
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.target.closest && event.target.closest("form.instrument-form");
    if (!form) return;
    form.closest(".instrument").classList.remove("is-loading");
    if (event.detail.successful || (event.detail.xhr && event.detail.xhr.status === 422)) rememberSettings(form);
    restoring = false;
  });
  // A 422 carries a message naming the bad field: show it in place of the result.
  document.addEventListener("htmx:beforeSwap", function (event) {
    if (event.detail.xhr.status === 422) { event.detail.shouldSwap = true; event.detail.isError = false; }
  });

  function start() {
    drawWhenNear(document);
    document.querySelectorAll(".log2-slider").forEach(function (slider) { slider.hidden = false; });
    document.querySelectorAll("form.instrument-form").forEach(applyWhen);
    // htmx binds the forms' triggers on DOMContentLoaded too; restore once it has.
    if (document.readyState === "complete") restoreAll(false);
    else window.addEventListener("load", function () { restoreAll(false); }, { once: true });
    // Without JS the forms submit as plain GETs; with it, the Update buttons are redundant.
    document.querySelectorAll(".instrument-form .submit-fallback").forEach(function (b) { b.hidden = true; });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
