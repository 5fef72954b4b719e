// The Python interpreter behind a page's cells: self-hosted Pyodide in a module Web
// Worker, so a long computation never freezes the page. Every file comes from our own
// server (indexURL /static/vendor/pyodide/); nothing is fetched from a CDN.
//
// Protocol (page -> worker): {type: "run", id, code, cell}
// (worker -> page): {type: "status", text} while loading, {type: "ready", ms}, {type: "start", id},
//   {type: "stdout"|"stderr", id, text}, {type: "plot", id, figure}, {type: "done", id, ok},
//   {type: "fatal", text} when the interpreter cannot start.
// One interpreter, one namespace per page: cells share state like a notebook. Stop and
// the time limit are handled by the page, which terminates this worker and starts another.
import { loadPyodide } from "/static/vendor/pyodide/pyodide.mjs";

const INDEX_URL = "/static/vendor/pyodide/";
const CALCULATORS_WHEEL = INDEX_URL + "loralab_calculators-0.1.0-py3-none-any.whl";
const HELPERS = "/static/py/loralab_cells.py";

let currentRun = null; // id of the run whose output is being produced

function post(message) { self.postMessage(message); }
function status(text) { post({ type: "status", text }); }

// The cell runner: executes in the page's shared namespace, prints the value of a final
// expression (like a notebook), and shows tracebacks without the runner's own frames.
const RUNNER = `
import linecache, sys, traceback
from pyodide.code import eval_code_async
import loralab_cells

NAMESPACE = {"__name__": "__main__", "plot": loralab_cells.plot, "plot_xy": loralab_cells.plot_xy, "check": loralab_cells.check}

async def run_cell(code, filename):
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        value = await eval_code_async(code, globals=NAMESPACE, filename=filename)
        if value is not None:
            print(repr(value))
        return True
    except BaseException as exc:
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != filename:
            tb = tb.tb_next
        sys.stderr.write("".join(traceback.format_exception(type(exc), exc, tb)))
        return False
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
`;

async function fetchOk(url, as) {
  const response = await fetch(url, { cache: "no-cache" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response[as]();
}

async function boot() {
  const started = performance.now();
  status("Loading Python…");
  // Our two small files download while the interpreter starts.
  const helpers = fetchOk(HELPERS, "text");
  const wheel = fetchOk(CALCULATORS_WHEEL, "arrayBuffer");
  const pyodide = await loadPyodide({
    indexURL: INDEX_URL,
    lockFileURL: INDEX_URL + "pyodide-lock.json",
    fullStdLib: false,
    stdout: (text) => post({ type: "stdout", id: currentRun, text: text + "\n" }),
    stderr: (text) => post({ type: "stderr", id: currentRun, text: text + "\n" }),
  });
  const pyodideMs = performance.now() - started;
  // The project's calculators package, unpacked straight into site-packages.
  pyodide.unpackArchive(await wheel, "wheel");
  const site = pyodide.runPython("import site; site.getsitepackages()[0]");
  pyodide.FS.writeFile(`${site}/loralab_cells.py`, await helpers);
  pyodide.runPython(RUNNER, { filename: "<loralab-runner>" });
  pyodide.runPython("import loralab_cells");
  pyodide.globals.get("loralab_cells").sink = (json) => post({ type: "plot", id: currentRun, figure: json });
  // numpy (about a second) loads in the background; a cell that needs it waits for it.
  const numpy = pyodide.loadPackage("numpy", {
    messageCallback: () => {},
    errorCallback: (m) => post({ type: "stderr", id: currentRun, text: m + "\n" }),
  });
  post({ type: "ready", ms: Math.round(performance.now() - started), pyodideMs: Math.round(pyodideMs) });
  const findImports = pyodide.pyimport("pyodide.code").find_imports;
  return { pyodide, numpy, findImports, runCell: pyodide.globals.get("run_cell") };
}

// Imports that need numpy: numpy itself and our calculators (built on numpy).
const NEEDS_NUMPY = new Set(["numpy", "calculators"]);

async function prepare(interp, code) {
  let names = [];
  try {
    const found = interp.findImports(code);
    names = found.toJs();
    found.destroy();
  } catch (err) { /* a syntax error: the run reports it */ }
  if (names.some((n) => NEEDS_NUMPY.has(n.split(".")[0])) && !interp.numpyLoaded) {
    status("Loading numpy…");
    await interp.numpy;
    interp.numpyLoaded = true;
  }
}

let ready = null;
const queue = [];
let busy = false;

async function drain() {
  if (busy) return;
  busy = true;
  while (queue.length) {
    const { id, code, cell } = queue.shift();
    let ok = false;
    try {
      const interp = await ready;
      await prepare(interp, code);
      currentRun = id;
      post({ type: "start", id });
      ok = await interp.runCell(code, `<cell ${cell}>`);
    } catch (err) {
      post({ type: "stderr", id, text: String(err && err.message || err) + "\n" });
    }
    currentRun = null;
    post({ type: "done", id, ok });
  }
  busy = false;
}

self.onmessage = (event) => {
  const message = event.data;
  if (message.type === "run") {
    if (!ready) {
      ready = boot();
      ready.catch((err) => post({ type: "fatal", text: String(err && err.message || err) }));
    }
    queue.push(message);
    drain();
  }
};
