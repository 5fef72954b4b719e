// The training lab: POST a run, follow its server-sent events (queue position, loading and
// evaluation progress, steps, the streamed sample answer, the summary), draw the loss live,
// show before/after answers, keep earlier runs for comparison, and let the reader try the
// adapter on a request of their own. Numbers arrive computed and formatted by the server
// (the `display` fields); this file only moves them onto the page.
(function () {
  "use strict";
  var root = document.querySelector("[data-lab]");
  if (!root) return;
  var form = root.querySelector("form.lab-form");
  var $ = function (id) { return document.getElementById(id); };
  var status = $("lab-status"), progress = $("lab-progress"), bar = $("lab-progress-bar");
  var cancelButton = $("lab-cancel"), startButton = $("lab-start");
  var table = $("lab-table"), plotEl = $("lab-loss");
  var sampleBox = $("lab-sample"), sampleLog = $("lab-sample-log");
  var outcome = $("lab-outcome"), compare = $("lab-compare"), headline = $("lab-headline");
  var tryForm = $("lab-try"), tryStatus = $("lab-try-status");
  var runs = [];
  var current = null;
  var lastFinished = null;

  function setStatus(text, kind) {
    status.textContent = text;
    status.dataset.kind = kind || "";
  }

  function setProgress(fraction) {
    var pct = Math.max(0, Math.min(100, Math.round(100 * fraction)));
    progress.hidden = false;
    bar.style.width = pct + "%";
    bar.setAttribute("aria-valuenow", String(pct));
  }

  function body() {
    var data = new FormData(form);
    return {
      method: data.get("method"),
      rank: Number(data.get("rank")),
      alpha: Number(data.get("alpha")),
      target_modules: String(data.get("targets") || "").split(",").filter(Boolean),
      lr: Number(data.get("lr")),
      steps: Number(data.get("steps")),
      batch_size: Number(data.get("batch_size")),
      seed: Number(data.get("seed")),
    };
  }

  var METHOD_NAMES = { lora: "LoRA", qlora: "QLoRA", dora: "DoRA" };

  function label(request) {
    var targets = form.querySelector("#lab-targets");
    return (METHOD_NAMES[request.method] || request.method) + " r=" + request.rank + " α=" + request.alpha + " on " +
      targets.options[targets.selectedIndex].text + ", " + request.steps + " steps";
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
          setStatus("The book predicts " + p.trainable_params + " trainable parameters of " + p.total_params +
                    " for " + label(body()) + ". Start a run to measure them, and to see what the model learns.", "");
          status.dataset.prediction = p.trainable_params;
        });
    }, 150);
  }
  form.addEventListener("input", showPrediction);
  form.addEventListener("change", showPrediction);
  showPrediction();

  function drawLoss() {
    plotEl.hidden = false;
    window.loralabLoadPlotly().then(function (Plotly) {
      var css = getComputedStyle(document.documentElement);
      var text = css.getPropertyValue("--text").trim(), grid = css.getPropertyValue("--border").trim();
      var palette = ["#6d5bd0", "#2a9d8f", "#e76f51", "#3a86ff", "#f4a261", "#d1495b"];
      var data = runs.map(function (run, i) {
        return { type: "scatter", mode: "lines+markers", name: run.shortLabel, x: run.steps.slice(), y: run.losses.slice(),
                 marker: { size: 4 }, line: { width: 2.5, color: palette[i % palette.length] } };
      });
      Plotly.react(plotEl, data, {
        height: 300, margin: { l: 56, r: 16, t: 32, b: 44 }, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
        font: { color: text, family: "system-ui, sans-serif", size: 13 },
        title: { text: "Training loss (answer tokens)", font: { size: 14 } },
        xaxis: { title: { text: "step" }, gridcolor: grid, zerolinecolor: grid },
        yaxis: { title: { text: "cross-entropy" }, gridcolor: grid, zerolinecolor: grid, rangemode: "tozero" },
        legend: { orientation: "h", y: -0.25 },
      }, { responsive: true, displaylogo: false });
      plotEl.classList.add("plot-ready");
    });
  }
  document.addEventListener("loralab:theme", function () { if (runs.length) drawLoss(); });

  function cell(row, text, className) {
    var td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function row(run) {
    if (!run.row) {
      run.row = document.createElement("tr");
      table.querySelector("tbody").appendChild(run.row);
      table.hidden = false;
    }
    var s = run.summary || {}, p = s.predicted || run.predicted || {}, last = run.last || {};
    run.row.innerHTML = "";
    cell(run.row, run.shortLabel);
    cell(run.row, s.exact_match || "…", "num");
    cell(run.row, s.trainable_params || "…", "num");
    cell(run.row, p.trainable_params || "—", "num");
    cell(run.row, s.peak_memory || last.peak_memory || "…", "num");
    cell(run.row, p.memory || p.accounted_memory || "—", "num");
    cell(run.row, s.tokens_per_s || last.tokens_per_s || "…", "num");
    cell(run.row, s.wall || "…", "num");
    var action = cell(run.row, "");
    if (run.adapterUrl) {
      var a = document.createElement("a");
      a.href = run.adapterUrl; a.className = "download"; a.textContent = "Download adapter";
      a.setAttribute("download", "");
      action.appendChild(a);
    }
  }

  function showSample(sample) {
    sampleBox.hidden = false;
    $("lab-sample-prompt").textContent = sample.prompt;
    var item = document.createElement("li");
    var step = document.createElement("span");
    step.className = "lab-sample-step";
    step.textContent = sample.step === 0 ? "before" : "step " + sample.step;
    var code = document.createElement("code");
    code.textContent = sample.answer || "(no answer)";
    item.appendChild(step);
    item.appendChild(code);
    if (sample.exact) { item.classList.add("exact"); item.title = "exactly the expected answer"; }
    sampleLog.appendChild(item);
  }

  function showOutcome(summary) {
    var d = summary.display;
    headline.innerHTML = "";
    [["Exact match, held out", d.exact_match], ["Answer loss, held out", d.answer_loss],
     ["Trainable / total parameters", d.trainable_params + " / " + d.total_params],
     ["Time", d.wall + " · " + d.tokens_per_s + " tokens/s" + (d.precision ? " · " + d.precision : "")]].forEach(function (pair) {
      var div = document.createElement("div"), dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = pair[0]; dd.textContent = pair[1];
      div.appendChild(dt); div.appendChild(dd); headline.appendChild(div);
    });
    var tbody = compare.querySelector("tbody");
    tbody.innerHTML = "";
    summary.samples.forEach(function (s) {
      var tr = document.createElement("tr");
      var request = cell(tr, s.prompt, "lab-request");
      var expected = document.createElement("small");
      expected.textContent = "expected: " + s.expected;
      request.appendChild(document.createElement("br"));
      request.appendChild(expected);
      [s.before, s.after].forEach(function (answer) {
        var td = cell(tr, "");
        var code = document.createElement("code");
        code.textContent = answer || "(no answer)";
        td.appendChild(code);
        var ok = answer.trim() === s.expected.trim();
        td.className = ok ? "exact" : "miss";
        var mark = document.createElement("span");
        mark.className = "mark";
        mark.textContent = ok ? " ✓ exact" : "";
        td.appendChild(mark);
      });
      tbody.appendChild(tr);
    });
    $("lab-memory-note").textContent = d.memory_note;
    outcome.hidden = false;
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
    source.addEventListener("queued", function (event) {
      var q = JSON.parse(event.data);
      setStatus("Queued: " + q.ahead + (q.ahead === 1 ? " run" : " runs") + " ahead of yours. It starts by itself.", "running");
    });
    source.addEventListener("phase", function (event) {
      var phase = JSON.parse(event.data);
      if (phase.phase === "load" || phase.phase === "before") setProgress(0.1 * phase.done / phase.total);
      if (phase.phase === "after") setProgress(0.9 + 0.1 * phase.done / phase.total);
      setStatus(phase.message + (phase.total > 1 ? " (" + phase.done + " of " + phase.total + ")" : "") + "…", "running");
    });
    source.addEventListener("step", function (event) {
      var step = JSON.parse(event.data);
      run.steps.push(step.step);
      run.losses.push(step.loss);
      run.last = step.display;
      setProgress(0.1 + 0.8 * step.step / run.total);
      setStatus("Step " + step.step + " of " + run.total + " · loss " + step.display.loss + " · " +
        step.display.tokens_per_s + " tokens/s" + (step.display.eta ? " · about " + step.display.eta + " left" : ""), "running");
      drawLoss();
      row(run);
    });
    source.addEventListener("sample", function (event) { showSample(JSON.parse(event.data)); });
    source.addEventListener("notice", function (event) { setStatus(JSON.parse(event.data).message, "warning"); });
    source.addEventListener("summary", function (event) {
      var summary = JSON.parse(event.data);
      run.summary = summary.display;
      run.adapterUrl = run.links.adapter;
      showSample({ step: summary.steps_completed, prompt: summary.samples[0].prompt, answer: summary.samples[0].after,
                   exact: summary.samples[0].after.trim() === summary.samples[0].expected.trim() });
      showOutcome(summary);
    });
    source.addEventListener("error", function (event) {
      if (!event.data) return; // a dropped connection: EventSource reconnects by itself
      run.error = JSON.parse(event.data).message;
    });
    source.addEventListener("end", function (event) {
      source.close();
      var end = JSON.parse(event.data);
      var words = { succeeded: "Finished " + run.shortLabel + ": exact match on the held-out requests " + ((run.summary || {}).exact_match || "") + ".",
                    cancelled: "Cancelled. The adapter trained so far can still be downloaded.", timed_out: "Stopped at the server's time limit.",
                    failed: "The run failed: " + (run.error || "the server log has the details.") };
      if (end.status === "succeeded") setProgress(1);
      if (end.status === "succeeded" || end.status === "cancelled") { lastFinished = run; tryForm.hidden = false; $("lab-try-adapted-label").textContent = "After fine-tuning (" + run.shortLabel + ")"; }
      finish(run, words[end.status] || end.status, end.status === "succeeded" ? "done" : "error");
    });
  }

  function post(url, payload) {
    return fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload) })
      .then(function (response) {
        return response.json().then(function (json) { return { response: response, json: json }; });
      });
  }

  function problem(result) {
    if (result.response.status === 429) {
      return "The server is busy with other runs; try again in about " + result.response.headers.get("Retry-After") + " s.";
    }
    var detail = result.json.detail;
    return Array.isArray(detail) ? detail.map(function (d) { return d.msg; }).join("; ") : String(detail);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (current) return;
    var request = body();
    startButton.disabled = true;
    setStatus("Queuing…", "running");
    post("/api/v1/train", request).then(function (result) {
      if (!result.response.ok) {
        startButton.disabled = false;
        setStatus(problem(result), result.response.status === 429 ? "warning" : "error");
        return;
      }
      var run = { id: result.json.id, label: label(request), shortLabel: (METHOD_NAMES[request.method] || request.method) + " r=" + request.rank + " #" + (runs.length + 1),
                  links: result.json.links, steps: [], losses: [], total: request.steps, predicted: result.json.predicted_display };
      runs.push(run);
      current = run;
      cancelButton.hidden = false;
      sampleLog.innerHTML = "";
      outcome.hidden = true;
      setProgress(0);
      setStatus(result.json.queue_position > 1 ? "Queued…" : "Starting…", "running");
      row(run);
      follow(run);
    }).catch(function (error) { startButton.disabled = false; setStatus("Could not start: " + error, "error"); });
  });

  cancelButton.addEventListener("click", function () {
    if (current) fetch(current.links.self, { method: "DELETE" });
    setStatus("Cancelling after the current step…", "warning");
  });

  root.querySelectorAll("input[type=range]").forEach(function (input) {
    input.addEventListener("input", function () {
      var out = $(input.id + "-value");
      if (out) out.textContent = input.value;
    });
  });

  tryForm.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!lastFinished) return;
    var button = $("lab-try-start");
    button.disabled = true;
    tryStatus.dataset.kind = "running";
    tryStatus.textContent = "Queued with the training runs…";
    post(lastFinished.links.try, { prompt: $("lab-try-prompt").value }).then(function (result) {
      if (!result.response.ok) {
        button.disabled = false;
        tryStatus.dataset.kind = "error";
        tryStatus.textContent = problem(result);
        return;
      }
      var source = new EventSource(result.json.links.events);
      source.addEventListener("queued", function (e) {
        var q = JSON.parse(e.data);
        tryStatus.textContent = "Queued: " + q.ahead + " ahead of yours…";
      });
      source.addEventListener("phase", function () { tryStatus.textContent = "Both models are answering…"; });
      source.addEventListener("answers", function (e) {
        var answers = JSON.parse(e.data);
        $("lab-try-base").textContent = answers.base || "(no answer)";
        $("lab-try-adapted").textContent = answers.adapted || "(no answer)";
        $("lab-try-answers").hidden = false;
      });
      source.addEventListener("error", function (e) {
        if (!e.data) return;
        tryStatus.dataset.kind = "error";
        tryStatus.textContent = JSON.parse(e.data).message;
      });
      source.addEventListener("end", function (e) {
        source.close();
        button.disabled = false;
        if (JSON.parse(e.data).status === "succeeded") { tryStatus.dataset.kind = "done"; tryStatus.textContent = "Greedy answers, side by side."; }
      });
    }).catch(function (error) { button.disabled = false; tryStatus.textContent = "Could not ask: " + error; });
  });
})();
