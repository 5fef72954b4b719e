// The training lab: POST a run, follow its server-sent events, draw the loss live, and
// keep earlier runs on the same chart for comparison. Numbers arrive computed and
// formatted by the server (the `display` fields); this file only moves them onto the page.
(function () {
  "use strict";
  var root = document.querySelector("[data-lab]");
  if (!root) return;
  var form = root.querySelector("form");
  var status = document.getElementById("lab-status");
  var progress = document.getElementById("lab-progress");
  var bar = document.getElementById("lab-progress-bar");
  var cancelButton = document.getElementById("lab-cancel");
  var startButton = document.getElementById("lab-start");
  var table = document.getElementById("lab-table");
  var memoryNote = document.getElementById("lab-memory-note");
  var plotEl = document.getElementById("lab-loss");
  var runs = [];
  var current = null;

  function setStatus(text, kind) {
    status.textContent = text;
    status.dataset.kind = kind || "";
  }

  function body() {
    var data = new FormData(form);
    return {
      method: data.get("method"),
      rank: Number(data.get("rank")),
      alpha: Number(data.get("alpha")),
      target_modules: data.getAll("target_modules"),
      lr: Number(data.get("lr")),
      steps: Number(data.get("steps")),
      batch_size: Number(data.get("batch_size")),
      seq_len: Number(data.get("seq_len")),
      seed: Number(data.get("seed")),
    };
  }

  var METHOD_NAMES = { lora: "LoRA", qlora: "QLoRA", dora: "DoRA" };

  function label(request) {
    return (METHOD_NAMES[request.method] || request.method) + " r=" + request.rank + " α=" + request.alpha;
  }

  // Before the first run, the status line says what the book's calculators predict for the
  // settings on the form (the server computes it; nothing is trained).
  var predictTimer = null;
  function showPrediction() {
    if (runs.length) return;
    clearTimeout(predictTimer);
    predictTimer = setTimeout(function () {
      fetch("/api/v1/train/predict", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body()) })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (json) {
          var p = json && json.predicted_display;
          if (runs.length || !p || !p.trainable_params) return;
          setStatus("The book predicts " + p.trainable_params + " trainable parameters and a peak of " + p.peak_memory +
                    " for " + label(body()) + ". Start a run to measure both. A default run takes about a minute on two CPU cores.", "");
          status.dataset.prediction = p.trainable_params;
        });
    }, 150);
  }
  form.addEventListener("input", showPrediction);
  form.addEventListener("change", showPrediction);
  showPrediction();

  function drawLoss() {
    window.loralabLoadPlotly().then(function (Plotly) {
      var css = getComputedStyle(document.documentElement);
      var text = css.getPropertyValue("--text").trim(), grid = css.getPropertyValue("--border").trim();
      var palette = ["#6d5bd0", "#2a9d8f", "#e76f51", "#3a86ff", "#f4a261", "#d1495b"];
      var data = runs.map(function (run, i) {
        return { type: "scatter", mode: "lines", name: run.label, x: run.steps.slice(), y: run.losses.slice(),
                 line: { width: 2.5, color: palette[i % palette.length] } };
      });
      Plotly.react(plotEl, data, {
        height: 320, margin: { l: 56, r: 16, t: 32, b: 44 }, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
        font: { color: text, family: "system-ui, sans-serif", size: 13 }, title: { text: "Training loss", font: { size: 14 } },
        xaxis: { title: { text: "step" }, gridcolor: grid, zerolinecolor: grid },
        yaxis: { title: { text: "cross-entropy loss" }, gridcolor: grid, zerolinecolor: grid, rangemode: "tozero" },
        legend: { orientation: "h", y: -0.25 },
      }, { responsive: true, displaylogo: false });
      plotEl.classList.add("plot-ready");
    });
  }
  document.addEventListener("loralab:theme", function () { if (runs.length) drawLoss(); });

  function row(run) {
    if (!run.row) {
      run.row = document.createElement("tr");
      table.querySelector("tbody").appendChild(run.row);
      table.hidden = false;
    }
    var p = run.predicted || {}, s = run.summary || {}, last = run.last || {};
    var cells = [
      run.label,
      s.trainable_params || "…",
      p.trainable_params || "—",
      last.peak_memory || "…",
      p.peak_memory || "—",
      last.tokens_per_s || "…",
      s.accuracy ? s.accuracy : "…",
    ];
    run.row.innerHTML = "";
    cells.forEach(function (value, i) {
      var td = document.createElement("td");
      td.textContent = value;
      if (i > 0) td.className = "num";
      run.row.appendChild(td);
    });
    var action = document.createElement("td");
    if (run.adapterUrl) {
      var a = document.createElement("a");
      a.href = run.adapterUrl; a.className = "download"; a.textContent = "Download adapter";
      a.setAttribute("download", "");
      action.appendChild(a);
    }
    run.row.appendChild(action);
  }

  function finish(run, text, kind) {
    current = null;
    startButton.disabled = false;
    cancelButton.hidden = true;
    setStatus(text, kind);
    row(run);
  }

  function follow(run) {
    var source = new EventSource(run.links.events);
    run.source = source;
    source.addEventListener("started", function () { setStatus("Training " + run.label + "…", "running"); });
    source.addEventListener("step", function (event) {
      var step = JSON.parse(event.data);
      run.steps.push(step.step);
      run.losses.push(step.loss);
      run.last = step.display;
      var pct = Math.round(100 * step.step / run.total);
      progress.hidden = false;
      bar.style.width = pct + "%";
      bar.setAttribute("aria-valuenow", String(pct));
      setStatus("Step " + step.step + " of " + run.total + " · loss " + step.display.loss + " · " +
        step.display.tokens_per_s + " tokens/s · " + (step.display.eta ? "about " + step.display.eta + " left" : ""), "running");
      drawLoss();
      row(run);
    });
    source.addEventListener("notice", function (event) { setStatus(JSON.parse(event.data).message, "warning"); });
    source.addEventListener("summary", function (event) {
      var summary = JSON.parse(event.data);
      run.summary = summary.display;
      run.adapterUrl = summary.cancelled ? null : run.links.adapter;
      if (summary.display.memory_note) { memoryNote.textContent = summary.display.memory_note; memoryNote.hidden = false; }
    });
    source.addEventListener("error", function (event) {
      if (!event.data) return; // a dropped connection: EventSource reconnects by itself
      var error = JSON.parse(event.data);
      run.error = error.message;
    });
    source.addEventListener("end", function (event) {
      source.close();
      var end = JSON.parse(event.data);
      var words = { succeeded: "Finished: " + run.label + ". Accuracy " + ((run.summary || {}).accuracy || ""),
                    cancelled: "Cancelled.", timed_out: "Stopped at the time limit.",
                    failed: "The run failed: " + (run.error || "see the server log") };
      bar.style.width = end.status === "succeeded" ? "100%" : bar.style.width;
      finish(run, words[end.status] || end.status, end.status === "succeeded" ? "done" : "error");
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (current) return;
    var request = body();
    startButton.disabled = true;
    setStatus("Queuing…", "running");
    fetch("/api/v1/train", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request) })
      .then(function (response) {
        return response.json().then(function (json) { return { response: response, json: json }; });
      })
      .then(function (result) {
        if (result.response.status === 429) {
          startButton.disabled = false;
          setStatus("The server is busy with other runs; try again in about " + result.response.headers.get("Retry-After") + " s.", "warning");
          return;
        }
        if (!result.response.ok) {
          startButton.disabled = false;
          var detail = result.json.detail;
          setStatus(Array.isArray(detail) ? detail.map(function (d) { return d.msg; }).join("; ") : String(detail), "error");
          return;
        }
        var run = { id: result.json.id, label: label(request), links: result.json.links, steps: [], losses: [],
                    total: request.steps, predicted: result.json.predicted_display };
        runs.push(run);
        current = run;
        cancelButton.hidden = false;
        bar.style.width = "0%";
        setStatus(result.json.queue_position > 1 ? "Queued (position " + result.json.queue_position + ")…" : "Loading the model…", "running");
        row(run);
        follow(run);
      })
      .catch(function (error) { startButton.disabled = false; setStatus("Could not start: " + error, "error"); });
  });

  cancelButton.addEventListener("click", function () {
    if (current) fetch(current.links.self, { method: "DELETE" });
    setStatus("Cancelling after the current step…", "warning");
  });

  root.querySelectorAll("input[type=range]").forEach(function (input) {
    input.addEventListener("input", function () {
      var out = document.getElementById(input.id + "-value");
      if (out) out.textContent = input.value;
    });
  });
})();
