// Small DOM helpers: every string from the API or a template goes in as text.

export const $ = (id) => document.getElementById(id);

/** An element with properties (text: its textContent, on: listeners) and children. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'text') node.textContent = v;
    else if (k === 'on') Object.entries(v).forEach(([ev, fn]) => node.addEventListener(ev, fn));
    else if (k in node) node[k] = v;
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

/** Lines as the target's text: list items for a list, else lines of text. */
export function showLines(target, lines) {
  target.replaceChildren(...lines.map((line) => (target.tagName === 'UL' || target.tagName === 'OL'
    ? el('li', { text: line }) : document.createTextNode(`${line}\n`))));
}

/** What went wrong, one line per problem. */
export function errorLines(err) {
  return typeof err?.lines === 'function' ? err.lines()
    : [String(err && err.message ? err.message : err)];
}

/**
 * A render answer's image as a path on this page's origin: the gateway that
 * serves this page serves its images too (and the page's CSP allows images
 * from 'self'), whatever base URL it writes into answers.
 */
export function imagePath(result) {
  // The answer's url may point at a CDN or the bucket (LITHO_IMAGE_BASE_URL),
  // which this page's policy does not load from; the gateway serves the same
  // bytes at /images/.
  // The file name (id and extension) ends the URL either way.
  const file = new URL(result.url, window.location.href).pathname.split('/').pop();
  return `/images/${file}`;
}
