// Copy the pinned front-end libraries from node_modules/ into static/vendor/, which the
// app serves itself: pages never reference another host. Run by `scripts/setup assets`.
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
  ["katex/dist/contrib/auto-render.min.js", "katex/auto-render.min.js"],
  ["katex/dist/fonts", "katex/fonts"],
  ["plotly.js-dist-min/plotly.min.js", "plotly/plotly.min.js"],
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
