// Typeset TeX with KaTeX on the server: stdin is a JSON list of {"tex": "...", "display": bool},
// stdout the same-length JSON list of HTML strings (KaTeX's HTML plus MathML for screen
// readers). KaTeX is the copy the app serves (static/vendor/katex/katex.min.js, vendored from
// the pinned npm package by scripts/vendor-assets.mjs), so page and server typeset alike.
// Called by app/maths.py; stdlib only.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const katex = require(process.env.LORALAB_KATEX_JS || join(root, "static", "vendor", "katex", "katex.min.js"));

const items = JSON.parse(readFileSync(0, "utf8"));
const html = items.map(({ tex, display }) =>
  katex.renderToString(tex, { displayMode: Boolean(display), throwOnError: false, output: "htmlAndMathml" }));
process.stdout.write(JSON.stringify({ katex: katex.version, html }));
