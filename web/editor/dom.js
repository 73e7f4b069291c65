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
 * An image URL the gateway answered, as a path on this page's origin: the
 * gateway that serves this page serves its images too, whatever public base
 * URL it writes into answers (and the page's CSP allows images from 'self').
 */
export function imagePath(url) {
  const parsed = new URL(url, window.location.href);
  return `${parsed.pathname}${parsed.search}`;
}
