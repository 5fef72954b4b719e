// Copy the pinned front-end libraries from node_modules/ into static/vendor/, which the
// app serves itself: pages never reference another host. Run by `scripts/setup assets`.
// The cells' code editor (CodeMirror 6) is bundled here with esbuild from node_modules/;
// the Pyodide runtime and its wheels are vendored (and verified) by scripts/vendor-pyodide.py.
import { cpSync, mkdirSync, rmSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const vendor = join(root, "static", "vendor");

// [package file or folder, destination under static/vendor]
const ASSETS = [
  ["htmx.org/dist/htmx.min.js", "htmx/htmx.min.js"],
  ["katex/dist/katex.min.js", "katex/katex.min.js"],
  ["katex/dist/katex.min.css", "katex/katex.min.css"],
  ["katex/dist/fonts", "katex/fonts"],
  ["plotly.js-basic-dist-min/plotly-basic.min.js", "plotly/plotly.min.js"],  // scatter and bar: all the book draws
  ["swagger-ui-dist/swagger-ui-bundle.js", "swagger-ui/swagger-ui-bundle.js"],
  ["swagger-ui-dist/swagger-ui.css", "swagger-ui/swagger-ui.css"],
];

for (const [source, target] of ASSETS) {
  const from = join(root, "node_modules", source);
  if (!existsSync(from)) {
    console.error(`vendor-assets: missing ${from}; run npm ci first`);
    process.exit(1);
  }
  const to = join(vendor, target);
  rmSync(to, { recursive: true, force: true });
  mkdirSync(dirname(to), { recursive: true });
  cpSync(from, to, { recursive: true });
}
console.log(`vendor-assets: ${ASSETS.length} assets in ${vendor}`);

// CodeMirror 6 for the Python cells: one IIFE bundle exposing window.LoralabEditor.
// Colours come from the book's CSS (classHighlighter emits tok-* classes), so the editor
// follows the light/dark theme without JavaScript.
const EDITOR_ENTRY = `
import { EditorState } from "@codemirror/state";
import { EditorView, keymap, lineNumbers, highlightActiveLine, drawSelection } from "@codemirror/view";
import { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
import { indentUnit, syntaxHighlighting, bracketMatching, indentOnInput } from "@codemirror/language";
import { python } from "@codemirror/lang-python";
import { classHighlighter } from "@lezer/highlight";

export function create(parent, doc, options) {
  const run = () => { options.onRun(); return true; };
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc,
      extensions: [
        lineNumbers(), history(), drawSelection(), highlightActiveLine(), bracketMatching(), indentOnInput(),
        EditorView.lineWrapping,  // a long line wraps on a phone instead of running out of the cell
        indentUnit.of("    "), EditorState.tabSize.of(4), python(), syntaxHighlighting(classHighlighter),
        keymap.of([{ key: "Shift-Enter", run }, { key: "Mod-Enter", run }, ...defaultKeymap, ...historyKeymap, indentWithTab]),
        EditorView.contentAttributes.of({ "aria-label": options.label || "Python code" }),
        EditorView.updateListener.of((u) => { if (u.docChanged && options.onChange) options.onChange(); }),
      ],
    }),
  });
  return {
    view,
    get: () => view.state.doc.toString(),
    set: (text) => view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } }),
    focus: () => view.focus(),
  };
}
`;

const { build } = await import("esbuild");
mkdirSync(join(vendor, "codemirror"), { recursive: true });
await build({
  stdin: { contents: EDITOR_ENTRY, resolveDir: root, loader: "js", sourcefile: "loralab-editor.js" },
  bundle: true, minify: true, format: "iife", globalName: "LoralabEditor", target: ["es2020"],
  outfile: join(vendor, "codemirror", "editor.min.js"), logLevel: "warning", legalComments: "none",
});
console.log("vendor-assets: CodeMirror editor bundled into static/vendor/codemirror/editor.min.js");
