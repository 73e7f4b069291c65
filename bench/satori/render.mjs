// The peer of `make bench`: Satori (element tree to SVG, text as paths) then
// resvg-js (SVG to PNG), in one long-lived process so node's start-up and
// module loading are not counted.
//
//   node render.mjs <config.json>
//
// config: {"regular": TTF/OTF path, "bold": TTF/OTF path, "emoji": PNG path or "",
//          "avatar": PNG path, "subtitle": str, "price": str}
// Then one JSON request per line on stdin, {"title": str, "out"?: path}, and
// one JSON answer per line on stdout:
// {"satoriMs", "resvgMs", "totalMs", "bytes", "width", "height"} or {"error"}.
// The first line on stdout is {"ready": true, "satori": version, "resvg": version}.

import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { performance } from 'node:perf_hooks';

import satori from 'satori';
import { Resvg } from '@resvg/resvg-js';

const require = createRequire(import.meta.url);
const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const dataUri = (path) => `data:image/png;base64,${readFileSync(path).toString('base64')}`;
const fonts = [
  { name: 'Noto Sans', data: readFileSync(config.regular), weight: 400, style: 'normal' },
  { name: 'Noto Sans', data: readFileSync(config.bold), weight: 700, style: 'normal' },
];
const avatar = dataUri(config.avatar);
// Satori cannot read colour emoji fonts (CBDT): an emoji is drawn from an
// image, as @vercel/og does with Twemoji. This one is Noto Color Emoji's own
// glyph, rasterised by the bench, so it looks like Chromium's ("" = none).
const graphemeImages = config.emoji ? { '🚀': dataUri(config.emoji) } : {};

// bench/_card.py's CARD_HTML as a React-element-like tree (no JSX, no React).
const h = (type, style, children, extra = {}) => ({ type, props: { style, children, ...extra } });
const card = (title) => h('div', {
  width: 1200, height: 630, display: 'flex', flexDirection: 'column', boxSizing: 'border-box',
  padding: 72, position: 'relative', color: '#fff', fontFamily: 'Noto Sans',
  backgroundImage: 'linear-gradient(135deg, #4f46e5 0%, #9333ea 50%, #db2777 100%)',
}, [
  h('h1', { fontSize: 64, fontWeight: 700, margin: '0 0 24px', lineHeight: 1.1 },
    `${title} 🚀`),
  h('p', { fontSize: 32, margin: 0, opacity: 0.9 }, config.subtitle),
  h('img', { position: 'absolute', left: 72, bottom: 72, width: 120, height: 120,
             borderRadius: '50%', border: '6px solid #fff', objectFit: 'cover' },
    undefined, { src: avatar, width: 120, height: 120 }),
  h('div', { position: 'absolute', right: 72, bottom: 72, fontSize: 56, fontWeight: 700,
             backgroundColor: 'rgba(0,0,0,.25)', padding: '8px 28px', borderRadius: 16 },
    config.price),
]);

async function render(request) {
  const started = performance.now();
  const svg = await satori(card(request.title), { width: 1200, height: 630, fonts, graphemeImages });
  const drawn = performance.now();
  const image = new Resvg(svg, { font: { loadSystemFonts: false } }).render();
  const png = image.asPng();
  const done = performance.now();
  if (request.out) writeFileSync(request.out, png);
  return { satoriMs: drawn - started, resvgMs: done - drawn, totalMs: done - started,
           bytes: png.length, width: image.width, height: image.height };
}

const write = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
write({ ready: true, satori: require('satori/package.json').version,
        resvg: require('@resvg/resvg-js/package.json').version });
// One request at a time, in order: a render never overlaps another.
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  try {
    write(await render(JSON.parse(line)));
  } catch (err) {
    write({ error: String(err && err.stack || err) });
  }
}
