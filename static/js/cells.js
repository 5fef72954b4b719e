// Runnable Python cells: an editor per cell (CodeMirror 6 when its bundle loaded, else a
// textarea), Run / Shift+Enter, Stop, Reset and Restart, and an output area for stdout,
// stderr, tracebacks and plots. Python runs in one Web Worker per page
// (pyodide-worker.mjs), started on the first Run only, so cells share state like a
// notebook and a page nobody runs loads no Pyodide. The page draws the figures that
// static/py/loralab_cells.py builds; no maths here.
(function () {
  "use strict";

  var WORKER_URL = "/static/js/pyodide-worker.mjs";
  var PLOTLY_URL = "/static/vendor/plotly/plotly.min.js";
  var MAX_OUTPUT_CHARS = 100000;

  var api = {
    timeLimitMs: 30000, // per run; then the worker is terminated with a clear message
    worker: null,
    ready: false,
    bootMs: null,
  };
  window.loralabCells = api;

  var cells = [];
  var runs = {}; // id -> run record
  var queue = []; // ids in the order they were sent to the worker
  var nextId = 1;
  var timer = null;

  // --- the worker -----------------------------------------------------------------
  function ensureWorker() {
    if (api.worker) return api.worker;
    var worker = new Worker(WORKER_URL, { type: "module", name: "loralab-python" });
    worker.onmessage = function (event) { onWorkerMessage(worker, event.data); };
    worker.onerror = function (event) {
      event.preventDefault();
      failAll("Python could not start: " + (event.message || "the worker failed to load") + ".");
    };
    api.worker = worker;
    api.ready = false;
    document.documentElement.dataset.pyodide = "loading";
    return worker;
  }

  function stopWorker() {
    if (api.worker) api.worker.terminate();
    api.worker = null;
    api.ready = false;
    clearTimeout(timer);
    timer = null;
    delete document.documentElement.dataset.pyodide;
  }

  function onWorkerMessage(worker, message) {
    if (worker !== api.worker) return; // a message from a worker we already stopped
    var run = message.id != null ? runs[message.id] : current();
    switch (message.type) {
      case "status":
        queue.forEach(function (id) { setStatus(runs[id].cell, message.text, "loading"); });
        break;
      case "ready":
        api.ready = true;
        api.bootMs = message.ms;
        api.boot = message;
        document.documentElement.dataset.pyodide = "ready";
        break;
      case "start":
        if (run) startClock(run);
        break;
      case "stdout":
      case "stderr":
        if (run) write(run, message.text, message.type);
        break;
      case "plot":
        if (run) addPlot(run, JSON.parse(message.figure));
        break;
      case "done":
        if (run) finish(run, message.ok ? "done" : "error");
        break;
      case "fatal":
        failAll("Python could not start: " + message.text);
        break;
    }
  }

  function current() { return queue.length ? runs[queue[0]] : null; }

  function startClock(run) {
    run.startedAt = performance.now();
    setStatus(run.cell, "Running…", "running");
    clearTimeout(timer);
    timer = setTimeout(function () {
      var limit = Math.round(api.timeLimitMs / 1000);
      interruptAll(run, "Stopped: the cell ran longer than the " + limit + " s time limit. Python was restarted, " +
        "so variables from earlier cells are gone; run them again.");
    }, api.timeLimitMs);
  }

  // Stop and the time limit both end the worker: the only way to interrupt Python here.
  function interruptAll(culprit, message) {
    stopWorker();
    queue.slice().forEach(function (id) {
      var run = runs[id];
      if (run === culprit || !culprit) write(run, message + "\n", "notice");
      else write(run, "Not run: Python was restarted before this cell's turn.\n", "notice");
      finish(run, "stopped");
    });
  }

  function failAll(message) {
    stopWorker();
    queue.slice().forEach(function (id) { write(runs[id], message + "\n", "stderr"); finish(runs[id], "error"); });
  }

  // --- runs ---------------------------------------------------------------------------
  function runCell(cell) {
    if (cell.runId && runs[cell.runId]) return; // already queued or running
    var id = nextId++;
    var run = { id: id, cell: cell, clickedAt: performance.now(), chars: 0, firstOutputMs: null };
    runs[id] = run;
    queue.push(id);
    cell.runId = id;
    clearOutput(cell);
    cell.el.dataset.state = "running";
    delete cell.el.dataset.firstOutputMs;
    cell.stop.hidden = false;
    cell.run.disabled = true;
    setStatus(cell, api.ready ? "Queued…" : "Starting Python…", api.ready ? "running" : "loading");
    ensureWorker().postMessage({ type: "run", id: id, code: cell.getCode(), cell: cell.index });
  }

  function finish(run, state) {
    var cell = run.cell;
    var i = queue.indexOf(run.id);
    if (i >= 0) queue.splice(i, 1);
    delete runs[run.id];
    if (i === 0) { clearTimeout(timer); timer = null; }
    cell.runId = null;
    cell.stop.hidden = true;
    cell.run.disabled = false;
    cell.el.dataset.state = state;
    var seconds = ((performance.now() - (run.startedAt || run.clickedAt)) / 1000).toFixed(2) + " s";
    var text = { done: "✓ Ran in " + seconds, error: "✗ Error after " + seconds, stopped: "■ Stopped" }[state];
    setStatus(cell, text, state);
    if (!cell.output.childNodes.length) cell.output.hidden = true;
    cell.el.dispatchEvent(new CustomEvent("loralab:cell-done", { bubbles: true, detail: { state: state } }));
  }

  function firstOutput(run) {
    if (run.firstOutputMs != null) return;
    run.firstOutputMs = performance.now() - run.clickedAt;
    run.cell.el.dataset.firstOutputMs = run.firstOutputMs.toFixed(1);
    run.cell.el.dispatchEvent(new CustomEvent("loralab:cell-output", { bubbles: true, detail: { ms: run.firstOutputMs } }));
  }

  // --- output --------------------------------------------------------------------------
  function clearOutput(cell) {
    cell.output.textContent = "";
    cell.output.hidden = true;
    cell.stream = null;
  }

  function write(run, text, kind) {
    var cell = run.cell;
    if (kind === "stdout" && text.slice(0, 2) === "\u2713 ") kind = "check"; // a passed check(...) line
    if (run.chars > MAX_OUTPUT_CHARS) return;
    run.chars += text.length;
    if (run.chars > MAX_OUTPUT_CHARS) { text = "\n… output truncated (more than 100,000 characters)\n"; kind = "notice"; }
    cell.output.hidden = false;
    if (!cell.stream) {
      cell.stream = document.createElement("pre");
      cell.stream.className = "cell-stream";
      cell.output.appendChild(cell.stream);
    }
    var last = cell.stream.lastChild;
    if (last && last.dataset.kind === kind) last.appendChild(document.createTextNode(text));
    else {
      var span = document.createElement("span");
      span.className = "cell-" + kind;
      span.dataset.kind = kind;
      span.textContent = text;
      cell.stream.appendChild(span);
    }
    if (kind !== "notice") firstOutput(run);
  }

  var plotlyLoading = null;
  function loadPlotly() {
    if (window.loralabLoadPlotly) return window.loralabLoadPlotly(); // instruments.js's loader, if on the page
    if (window.Plotly) return Promise.resolve(window.Plotly);
    if (!plotlyLoading) {
      plotlyLoading = new Promise(function (resolve, reject) {
        var script = document.createElement("script");
        script.src = PLOTLY_URL;
        script.onload = function () { resolve(window.Plotly); };
        script.onerror = function () { plotlyLoading = null; reject(new Error("could not load " + PLOTLY_URL)); };
        document.head.appendChild(script);
      });
    }
    return plotlyLoading;
  }

  function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

  function plotTraces(figure) {
    var palette = ["--accent", "--note", "--pitfall", "--good", "--bad"].map(cssVar);
    return figure.traces.map(function (t, i) {
      var color = palette[i % palette.length];
      if (t.type === "line") {
        return { type: "scatter", mode: t.markers || t.x.length <= 30 ? "lines+markers" : "lines", x: t.x, y: t.y, name: t.name,
          line: { color: color, width: 2.2 }, marker: { color: color, size: 6 }, connectgaps: false };
      }
      var bar = { type: "bar", x: t.x, y: t.y, name: t.name,
        marker: { color: color, opacity: 0.85, line: { color: color, width: 1 } } };
      if (t.type === "hist") { bar.width = t.width; bar.hovertemplate = "%{x:.4g}: %{y}<extra></extra>"; }
      return bar;
    });
  }

  function plotLayout(figure) {
    var L = figure.layout, text = cssVar("--text"), muted = cssVar("--text-muted"), grid = cssVar("--border");
    var axis = function (title) {
      return { title: { text: title, font: { color: muted, size: 12.5 } }, gridcolor: grid, zerolinecolor: grid,
        linecolor: grid, tickfont: { color: muted, size: 11.5 }, automargin: true };
    };
    var yaxis = axis(L.ylabel);
    if (L.logy) { yaxis.type = "log"; yaxis.exponentformat = "power"; yaxis.dtick = "D2"; }
    return {
      title: L.title ? { text: L.title, x: 0.01, xanchor: "left", font: { size: 14.5, color: text } } : undefined,
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
      font: { family: "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", size: 13, color: text },
      margin: { l: 56, r: 16, t: L.title ? 44 : 16, b: 44 },
      height: 320, bargap: figure.kind === "hist" ? 0.04 : 0.25,
      xaxis: axis(L.xlabel), yaxis: yaxis,
      showlegend: figure.traces.length > 1,
      legend: { orientation: "h", x: 1, xanchor: "right", y: 1.02, yanchor: "bottom", font: { color: muted } },
      hoverlabel: { font: { family: "system-ui, sans-serif" } },
    };
  }

  var PLOT_CONFIG = { responsive: true, displaylogo: false,
    modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d", "toggleSpikelines"] };

  function addPlot(run, figure) {
    var cell = run.cell;
    cell.output.hidden = false;
    var el = document.createElement("div");
    el.className = "cell-plot";
    el.setAttribute("role", "img");
    el.setAttribute("aria-label", figure.layout.title || "plot");
    el._loralabCellFigure = figure;
    cell.output.appendChild(el);
    cell.stream = null; // later text goes below the plot, in output order
    firstOutput(run);
    loadPlotly().then(function (Plotly) {
      return Plotly.newPlot(el, plotTraces(figure), plotLayout(figure), PLOT_CONFIG);
    }).catch(function (err) {
      el.className = "cell-plot-error";
      el.textContent = "Could not draw the plot: " + err.message;
    });
  }

  document.addEventListener("loralab:theme", function () {
    if (!window.Plotly) return;
    document.querySelectorAll(".cell-plot.js-plotly-plot").forEach(function (el) {
      var figure = el._loralabCellFigure;
      if (figure) window.Plotly.react(el, plotTraces(figure), plotLayout(figure), PLOT_CONFIG);
    });
  });

  function setStatus(cell, text, state) {
    cell.status.textContent = text;
    cell.status.dataset.state = state || "";
  }

  // --- editors ---------------------------------------------------------------------------
  function textareaEditor(cell, textarea, onRun) {
    textarea.hidden = false;
    textarea.classList.add("cell-textarea");
    var fit = function () { textarea.rows = Math.max(2, textarea.value.split("\n").length); };
    fit();
    textarea.addEventListener("input", fit);
    textarea.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && (event.shiftKey || event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        onRun();
      } else if (event.key === "Tab" && !event.altKey && !event.ctrlKey && !event.metaKey) {
        // Tab indents and Shift+Tab dedents the selected lines by four spaces (Esc then Tab leaves).
        if (textarea.dataset.escaped) { delete textarea.dataset.escaped; return; }
        event.preventDefault();
        var v = textarea.value, s = textarea.selectionStart, e = textarea.selectionEnd;
        var lineStart = v.lastIndexOf("\n", s - 1) + 1;
        if (!event.shiftKey && s === e) {
          textarea.setRangeText("    ", s, e, "end");
        } else {
          var block = v.slice(lineStart, e);
          var changed = event.shiftKey ? block.replace(/^ {1,4}/gm, "") : block.replace(/^/gm, "    ");
          textarea.setRangeText(changed, lineStart, e, "select");
        }
        fit();
      } else if (event.key === "Escape") {
        textarea.dataset.escaped = "1";
      } else if (event.key === "Enter") {
        // Keep the current line's indentation, one level more after a colon.
        event.preventDefault();
        var value = textarea.value, pos = textarea.selectionStart;
        var line = value.slice(value.lastIndexOf("\n", pos - 1) + 1, pos);
        var indent = line.match(/^\s*/)[0] + (/:\s*$/.test(line) ? "    " : "");
        textarea.setRangeText("\n" + indent, pos, textarea.selectionEnd, "end");
        fit();
      }
    });
    return {
      get: function () { return textarea.value; },
      set: function (text) { textarea.value = text; fit(); },
      focus: function () { textarea.focus(); },
    };
  }

  function setUp(el) {
    var textarea = el.querySelector("textarea.cell-code");
    var original = textarea.value.replace(/\n$/, "");
    var cell = {
      el: el, index: Number(el.dataset.cell), original: original,
      status: el.querySelector(".cell-status"), output: el.querySelector(".cell-output"),
      run: el.querySelector(".cell-run"), stop: el.querySelector(".cell-stop"),
      reset: el.querySelector(".cell-reset"), restart: el.querySelector(".cell-restart"),
    };
    var onRun = function () { runCell(cell); };
    var onChange = function () { el.classList.toggle("cell-edited", cell.getCode() !== cell.original); };
    var editor;
    textarea.value = original;
    if (window.LoralabEditor) {
      var host = document.createElement("div");
      host.className = "cell-editor";
      el.querySelector(".cell-source").replaceWith(host);
      editor = window.LoralabEditor.create(host, original, { onRun: onRun, onChange: onChange, label: "Python code of cell " + cell.index });
    } else {
      el.querySelector(".cell-source").hidden = true;
      editor = textareaEditor(cell, textarea, onRun);
      textarea.addEventListener("input", onChange);
    }
    cell.editor = editor;
    cell.getCode = editor.get;
    cell.run.addEventListener("click", onRun);
    cell.stop.addEventListener("click", function () {
      interruptAll(null, "Stopped. Python was restarted, so variables from earlier cells are gone; run them again.");
    });
    cell.reset.addEventListener("click", function () { editor.set(cell.original); onChange(); editor.focus(); });
    cell.restart.addEventListener("click", function () {
      interruptAll(null, "Stopped: Python was restarted.");
      cells.forEach(function (c) {
        if (c.el.dataset.state) { setStatus(c, "Python restarted: run again", "idle"); c.el.dataset.state = "idle"; }
      });
    });
    el.querySelector(".cell-actions").hidden = false;
    el.classList.add("cell-live");
    cells.push(cell);
  }

  api.cells = cells;
  api.setCode = function (index, code) { // for tests and the benchmark
    var cell = cells.filter(function (c) { return c.index === index; })[0];
    cell.editor.set(code);
  };
  document.querySelectorAll(".cell[data-cell]").forEach(setUp);
})();
