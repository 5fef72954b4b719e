// Live figures: htmx redraws a figure when one of its controls changes (the server draws it);
// this file keeps the URL and the browser history in step with the figure's settings, as the
// instruments do. On a figure's own page each new setting is a history entry (settings that
// change within a second replace it) and Back/Forward put the form and the drawing back. In a
// chapter or the gallery the URL carries each live figure's settings as `<figure id>.<field>`,
// replaced in place, and its "Open on its own page" link carries them along. No maths here.
(function () {
  "use strict";
  var lastPush = 0, restoring = false;

  function formQuery(form) {
    var params = new URLSearchParams();
    new FormData(form).forEach(function (value, key) { params.append(key, value); });
    return params;
  }

  function figureOf(form) { return form.closest("figure.fig-live[data-url-mode]"); }

  function remember(form) {
    var figure = figureOf(form);
    if (!figure) return;
    var query = formQuery(form);
    var link = figure.querySelector(".fig-page-link");
    if (link) link.href = "/figures/" + figure.dataset.figure + "?" + query.toString();
    var url = new URL(window.location.href);
    if (figure.dataset.urlMode === "page") {
      if (url.search === "?" + query.toString()) return;
      url.search = query.toString();
      var now = Date.now();
      if (restoring || now - lastPush < 1000) history.replaceState({ loralabFigure: true }, "", url);
      else history.pushState({ loralabFigure: true }, "", url);
      lastPush = now;
      return;
    }
    var prefix = figure.id + ".";
    Array.from(url.searchParams.keys()).forEach(function (key) {
      if (key.indexOf(prefix) === 0) url.searchParams.delete(key);
    });
    if (query.toString() !== form.dataset.initial) {
      query.forEach(function (value, key) { url.searchParams.append(prefix + key, value); });
    }
    history.replaceState(history.state, "", url);
  }

  // Put the reader's settings back from the URL: `values` maps a field's name to its values.
  // A radio group or select whose value is not among its options is left alone.
  function restoreFields(form, values) {
    Array.from(form.elements).forEach(function (field) {
      if (!field.name || field.type === "hidden" || field.type === "submit" || !(field.name in values)) return;
      var wanted = values[field.name];
      if (field.type === "checkbox") field.checked = wanted.indexOf(field.value) >= 0;
      else if (field.type === "radio") {
        var group = form.querySelectorAll("input[type=radio][name='" + field.name + "']");
        var known = Array.from(group).some(function (radio) { return wanted.indexOf(radio.value) >= 0; });
        if (known) field.checked = wanted.indexOf(field.value) >= 0;
      } else if (field.tagName === "SELECT") {
        var value = wanted[wanted.length - 1];
        if (Array.from(field.options).some(function (o) { return o.value === value; })) field.value = value;
      }
    });
  }

  function valuesFor(params, prefix) {
    var mine = {}, found = false;
    params.forEach(function (value, key) {
      if (key.indexOf(prefix) !== 0) return;
      var name = key.slice(prefix.length);
      (mine[name] = mine[name] || []).push(value);
      found = true;
    });
    return found ? mine : null;
  }

  function redraw(form) {
    if (!window.htmx || formQuery(form).toString() === form.dataset.shown) return;
    restoring = true;
    window.htmx.trigger(form, "change");
  }

  function restoreAll(fromHistory) {
    var params = new URLSearchParams(window.location.search);
    document.querySelectorAll("figure.fig-live[data-url-mode] form.fig-controls").forEach(function (form) {
      var figure = figureOf(form);
      var page = figure.dataset.urlMode === "page";
      if (page && !fromHistory) return;  // the server drew this page from its URL already
      var values = valuesFor(params, page ? "" : figure.id + ".");
      if (values) restoreFields(form, values);
      else if (fromHistory) form.reset();  // an entry without settings is the figure as first drawn
      else return;
      redraw(form);
    });
  }

  window.addEventListener("popstate", function () { restoreAll(true); });

  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail.elt;
    if (!form || !form.matches || !form.matches("form.fig-controls")) return;
    if (event.detail.successful || (event.detail.xhr && event.detail.xhr.status === 422)) {
      form.dataset.shown = formQuery(form).toString();
      remember(form);
    }
    restoring = false;
  });
  // A 422 names the bad field: show it in place of the drawing.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var form = event.detail.requestConfig && event.detail.requestConfig.elt;
    if (form && form.matches && form.matches("form.fig-controls") && event.detail.xhr.status === 422) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  function start() {
    document.querySelectorAll("figure.fig-live form.fig-controls").forEach(function (form) {
      form.dataset.initial = formQuery(form).toString();
      form.dataset.shown = form.dataset.initial;
    });
    // htmx binds the forms' triggers on DOMContentLoaded too; restore once it has.
    if (document.readyState === "complete") restoreAll(false);
    else window.addEventListener("load", function () { restoreAll(false); }, { once: true });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
