// Template source <-> GrapesJS, keeping the template language intact.
//
// GrapesJS parses HTML with the browser and exports its own serialisation, so
// the template's {{ tags }} would be escaped ({{ a > b }} -> {{ a &gt; b }}),
// block tags between elements ({{ for x in xs }}<li>…) would become stray text
// (or be moved out of a table by the HTML parser), and every attribute, text
// and void element would come back in GrapesJS's own spelling. So:
//
// * protect(source) lexes the source once (template tags are atomic, even
//   inside quoted attribute values), keeps the document shell (doctype, head,
//   the <body> tag and what follows </body>) aside, and hands GrapesJS only
//   the body's content, in which
//     - block tags ({{ if }}, {{ else }}, {{ for }}, {{ end }}), <style> and
//       <script> elements and stray end tags become HTML comments
//       <!--lt<nonce>b<N>-->, which survive the HTML parser in any context;
//     - output tags in text stay visible, HTML-escaped so the browser shows
//       them exactly as written;
//     - template tags inside a start tag become alphanumeric tokens
//       lt<nonce>n<N>z (valid attribute names, class names and values);
//     - every start tag gets data-lo="<K>", the index of its original text.
// * exportHtml(wrapper, doc) serialises GrapesJS's component tree itself: an
//   element whose attributes are what they were just after loading gets its
//   original start and end tags back byte for byte, a text node whose text is
//   unchanged gets its original source text, and the placeholders their
//   original text; anything changed is written fresh, with {{ tags }} left
//   unescaped.

const VOID = new Set(['area', 'base', 'br', 'col', 'embed', 'hr', 'img', 'input', 'link',
  'meta', 'param', 'source', 'track', 'wbr']);
const RAW_ELEMENTS = new Set(['script', 'style']);
const RCDATA = new Set(['textarea', 'title']);
// Where the HTML parser moves text out (before the table): tags there are placeholders.
const TABLE_CONTEXT = new Set(['table', 'thead', 'tbody', 'tfoot', 'tr', 'colgroup', 'select']);
const BLOCK_TAG = /^\{\{\s*(if|else|end|for)(?![\w$])/;
const MAX_SOURCE_CHARS = 4 * 1024 * 1024;

/** The end of the template tag that starts at i ("{{"), or -1 when it never ends. */
export function tagEnd(src, i) {
  let quote = '';
  for (let j = i + 2; j < src.length; j++) {
    const c = src[j];
    if (quote) {
      if (c === '\\') j++;
      else if (c === quote) quote = '';
    } else if (c === '"' || c === "'") {
      quote = c;
    } else if (c === '}' && src[j + 1] === '}') {
      return j + 2;
    }
  }
  return -1;
}

export function isBlockTag(tag) {
  return BLOCK_TAG.test(tag);
}

const escapeText = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const escapeAttr = (s, quote) => s.replace(/&/g, '&amp;').replace(quote === "'" ? /'/g : /"/g,
  quote === "'" ? '&#39;' : '&quot;');

/** Text and template tags of s, as [isTag, piece] pairs, in order. */
function splitTags(s) {
  const out = [];
  let last = 0;
  let i = s.indexOf('{{');
  while (i >= 0) {
    const end = tagEnd(s, i);
    if (end < 0) break;
    if (i > last) out.push([false, s.slice(last, i)]);
    out.push([true, s.slice(i, end)]);
    last = end;
    i = s.indexOf('{{', end);
  }
  if (last < s.length) out.push([false, s.slice(last)]);
  return out;
}

/** Text as HTML: escaped, except the {{ tags }} in it, which the template language reads raw. */
export function textToHtml(text) {
  return splitTags(text).map(([tag, piece]) => (tag ? piece : escapeText(piece))).join('');
}

// ---- the lexer ------------------------------------------------------------

/** Tokens of an HTML source in which {{ … }} tags are atomic. */
export function lex(src) {
  if (src.length > MAX_SOURCE_CHARS) throw new Error('the template is too large to edit');
  const tokens = [];
  let i = 0;
  let text = '';
  const flush = () => {
    if (text) tokens.push({ kind: 'text', raw: text });
    text = '';
  };
  const isAlpha = (c) => /[A-Za-z]/.test(c || '');
  while (i < src.length) {
    const c = src[i];
    if (c === '{' && src[i + 1] === '{') {
      const end = tagEnd(src, i);
      if (end > 0) {
        flush();
        tokens.push({ kind: 'tpl', raw: src.slice(i, end) });
        i = end;
        continue;
      }
    } else if (c === '<') {
      if (src.startsWith('<!--', i)) {
        flush();
        const end = src.indexOf('-->', i + 4);
        const stop = end < 0 ? src.length : end + 3;
        tokens.push({ kind: 'comment', raw: src.slice(i, stop) });
        i = stop;
        continue;
      }
      if (src[i + 1] === '!' || src[i + 1] === '?') {
        flush();
        const end = src.indexOf('>', i);
        const stop = end < 0 ? src.length : end + 1;
        tokens.push({ kind: 'decl', raw: src.slice(i, stop) });
        i = stop;
        continue;
      }
      if (src[i + 1] === '/' && isAlpha(src[i + 2])) {
        flush();
        const end = src.indexOf('>', i);
        const stop = end < 0 ? src.length : end + 1;
        const name = /^<\/([^\s/>]+)/.exec(src.slice(i, stop))[1].toLowerCase();
        tokens.push({ kind: 'end', name, raw: src.slice(i, stop) });
        i = stop;
        continue;
      }
      if (isAlpha(src[i + 1])) {
        flush();
        i = lexStartTag(src, i, tokens);
        continue;
      }
    }
    text += c;
    i++;
  }
  flush();
  return tokens;
}

/** A start tag at i (and, for <style>, <script>, <textarea>, <title>, its content). */
function lexStartTag(src, i, tokens) {
  const start = i;
  let j = i + 1;
  while (j < src.length && !/[\s/>]/.test(src[j]) && !src.startsWith('{{', j)) j++;
  const name = src.slice(i + 1, j).toLowerCase();
  const nameEnd = j;
  // parts: strings of the tag's own text and {tpl} for template tags in it.
  const parts = [src.slice(i, j)];
  let quote = '';
  let selfClosing = false;
  for (;;) {
    if (j >= src.length) break;
    const c = src[j];
    if (c === '{' && src[j + 1] === '{') {
      const end = tagEnd(src, j);
      if (end > 0) {
        parts.push({ tpl: src.slice(j, end) });
        j = end;
        continue;
      }
    }
    if (quote) {
      if (c === quote) quote = '';
    } else if (c === '"' || c === "'") {
      // Only a quote right after "=" (and spaces) opens a value.
      const before = lastString(parts).replace(/\s+$/, '');
      if (before.endsWith('=')) quote = c;
    } else if (c === '>') {
      selfClosing = lastString(parts).endsWith('/');
      j++;
      appendString(parts, '>');
      break;
    }
    appendString(parts, c);
    j++;
  }
  const raw = src.slice(start, j);
  if (RAW_ELEMENTS.has(name)) {
    const close = findClose(src, j, name);
    tokens.push({ kind: 'rawel', name, raw: src.slice(start, close.stop), open: raw,
      content: src.slice(j, close.at) });
    return close.stop;
  }
  tokens.push({ kind: 'start', name, raw, parts, selfClosing, nameLength: nameEnd - start });
  if (RCDATA.has(name)) {
    const close = findClose(src, j, name);
    for (const t of lex(src.slice(j, close.at))) {
      tokens.push(t.kind === 'tpl' ? t : { kind: 'text', raw: t.raw });
    }
    if (close.at < src.length) {
      tokens.push({ kind: 'end', name, raw: src.slice(close.at, close.stop) });
    }
    return close.stop;
  }
  return j;
}

function lastString(parts) {
  const last = parts[parts.length - 1];
  return typeof last === 'string' ? last : '';
}

function appendString(parts, s) {
  if (typeof parts[parts.length - 1] === 'string') parts[parts.length - 1] += s;
  else parts.push(s);
}

function findClose(src, from, name) {
  const re = new RegExp(`</${name}[\\s/>]`, 'ig');
  re.lastIndex = from;
  const m = re.exec(src);
  if (!m) return { at: src.length, stop: src.length };
  const gt = src.indexOf('>', m.index);
  return { at: m.index, stop: gt < 0 ? src.length : gt + 1 };
}

// ---- protect ----------------------------------------------------------------

/**
 * The body content for GrapesJS, and what is needed to write the source back.
 * @returns {{html: string, doc: object}}
 */
export function protect(source, nonce = randomNonce()) {
  const tokens = lex(source);
  let from = 0;
  let to = tokens.length;
  let bodyTag = null;
  const bodyAt = tokens.findIndex((t) => t.kind === 'start' && t.name === 'body');
  if (bodyAt >= 0) {
    bodyTag = tokens[bodyAt];
    from = bodyAt + 1;
    const endAt = tokens.findIndex((t, k) => k > bodyAt && t.kind === 'end' && t.name === 'body');
    if (endAt >= 0) to = endAt;
  } else {
    const headEnd = tokens.findIndex((t) => t.kind === 'end' && t.name === 'head');
    if (headEnd >= 0) {
      from = headEnd + 1;
      const htmlEnd = tokens.findIndex((t, k) => k > headEnd && t.kind === 'end' && t.name === 'html');
      if (htmlEnd >= 0) to = htmlEnd;
    }
  }
  const rawOf = (list) => list.map((t) => t.raw).join('');
  const doc = {
    nonce,
    prefix: rawOf(tokens.slice(0, bodyTag ? from - 1 : from)),
    bodyTag: bodyTag ? bodyTag.raw : null,
    bodyAttrs: null, // the wrapper's attributes just after loading (see snapshot)
    bodyOriginal: [], // the <body> tag's own attributes, with tokens for its tags
    suffix: rawOf(tokens.slice(to)),
    tags: [], // template tags inside start tags, by token number
    blocks: [], // block tags, raw elements and stray end tags, by placeholder number
    starts: [], // original start tags, by data-lo
    ends: [], // original end tags ('' when the source has none), by data-lo
    texts: new Map(), // parent data-lo ('' for the body) -> [{raw, protectedText}]
    snapshots: new Map(), // data-lo -> attributes signature just after loading
    implied: new WeakSet(), // elements the HTML parser added (a table's <tbody>)
    styles: [], // CSS of <style> elements, for the canvas
    editorCss: null, // the content of <style data-litho-editor>, if any
    editorCssAt: -1, // its placeholder number
    bodyParts: '', // the <body> start tag with tokens for its template tags
  };
  for (const t of tokens.slice(0, bodyTag ? from - 1 : from)) {
    if (t.kind === 'rawel' && t.name === 'style') doc.styles.push(t.content);
  }
  if (bodyTag) doc.bodyParts = withTokens(bodyTag.parts, nonce, doc.tags);
  let html = '';
  const stack = []; // [name, K]
  let segRaw = '';
  let segProt = '';
  const parentKey = () => (stack.length ? String(stack[stack.length - 1][1]) : '');
  const flush = () => {
    if (segRaw) {
      const key = parentKey();
      if (!doc.texts.has(key)) doc.texts.set(key, []);
      doc.texts.get(key).push({ raw: segRaw, prot: segProt, text: null });
    }
    segRaw = '';
    segProt = '';
  };
  const placeholder = (raw) => {
    doc.blocks.push(raw);
    return `<!--lt${nonce}b${doc.blocks.length - 1}-->`;
  };
  const inForeign = () => stack.some(([n]) => n === 'svg' || n === 'math');
  for (const t of tokens.slice(from, to)) {
    switch (t.kind) {
      case 'text':
        segRaw += t.raw;
        segProt += t.raw;
        html += t.raw;
        break;
      case 'tpl':
        if (isBlockTag(t.raw) || (stack.length && TABLE_CONTEXT.has(stack[stack.length - 1][0]))) {
          flush();
          html += placeholder(t.raw);
        } else {
          segRaw += t.raw;
          segProt += escapeText(t.raw);
          html += escapeText(t.raw);
        }
        break;
      case 'comment':
        flush();
        html += t.raw.endsWith('-->') ? t.raw : placeholder(t.raw);
        break;
      case 'decl':
        flush();
        html += placeholder(t.raw);
        break;
      case 'rawel': {
        flush();
        const editorOwned = /^<style[^>]*\sdata-litho-editor[\s=>]/i.test(t.open);
        if (t.name === 'style' && !editorOwned) doc.styles.push(t.content);
        html += placeholder(t.raw);
        if (editorOwned) {
          doc.editorCss = t.content;
          doc.editorCssAt = doc.blocks.length - 1;
        }
        break;
      }
      case 'start': {
        flush();
        const k = doc.starts.length;
        doc.starts.push(t.raw);
        doc.ends.push('');
        const rest = withTokens(t.parts, nonce, doc.tags).slice(t.nameLength);
        html += `<${t.name} data-lo="${k}"${/^[\s/>]/.test(rest) ? '' : ' '}${rest}`;
        const closes = VOID.has(t.name) || (t.selfClosing && inForeign());
        if (!closes) stack.push([t.name, k]);
        break;
      }
      case 'end': {
        flush();
        let at = stack.length - 1;
        while (at >= 0 && stack[at][0] !== t.name) at--;
        if (at < 0) {
          html += placeholder(t.raw); // the HTML parser drops it; keep its text
        } else {
          doc.ends[stack[at][1]] = t.raw;
          stack.length = at;
          html += `</${t.name}>`;
        }
        break;
      }
      default:
        throw new Error(`unknown token ${t.kind}`);
    }
  }
  flush();
  // GrapesJS parses what it is given as a whole document, where white space
  // and comments before the first element would land outside the body, and
  // trims it: an explicit <body> and empty placeholders keep them.
  html = `<body>${placeholder('')}${html}${placeholder('')}</body>`;
  return { html, doc };
}

function withTokens(parts, nonce, tags) {
  return parts.map((p) => {
    if (typeof p === 'string') return p;
    tags.push(p.tpl);
    return `lt${nonce}n${tags.length - 1}z`;
  }).join('');
}

function randomNonce() {
  const bytes = new Uint8Array(5);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => (b % 36).toString(36)).join('');
}

// ---- after loading ------------------------------------------------------------

/** What an element's attributes look like to the exporter. */
export function attributesSignature(attrs) {
  const copy = { ...attrs };
  delete copy['data-lo'];
  return JSON.stringify(Object.entries(copy));
}

/**
 * Remember every element's attributes as GrapesJS holds them after loading, and
 * decode the original text segments, so the exporter can tell what changed.
 */
export function snapshot(wrapper, doc, decode) {
  doc.bodyAttrs = attributesSignature(wrapper.getAttributes());
  if (doc.bodyParts) {
    const body = new DOMParser().parseFromString(`${doc.bodyParts}</body>`, 'text/html').body;
    doc.bodyOriginal = [...body.attributes].map((a) => [a.name, a.value]);
  }
  const visit = (comp) => {
    const k = comp.getAttributes()['data-lo'];
    const type = comp.get('type');
    if (k === undefined && type !== 'textnode' && type !== 'comment') doc.implied.add(comp);
    if (k !== undefined && !doc.snapshots.has(String(k))) {
      doc.snapshots.set(String(k), attributesSignature(comp.getAttributes()));
    }
    comp.components().forEach(visit);
  };
  wrapper.components().forEach(visit);
  for (const segs of doc.texts.values()) {
    for (const seg of segs) seg.text = /[&\r\0]/.test(seg.prot) ? decode(seg.prot) : seg.prot;
  }
}

// ---- export -------------------------------------------------------------------

/**
 * The template source for the editor's current state.
 * @param wrapper GrapesJS's wrapper component (the body)
 * @param doc what protect() returned, after snapshot()
 * @param editorCss CSS of GrapesJS's own rules ('' for none)
 * @param overrides component -> inner HTML to write instead of its children
 *   (the text being typed, which GrapesJS has not taken into its model yet)
 */
export function exportHtml(wrapper, doc, editorCss = '', overrides = new Map()) {
  const restore = (s) => s.replace(new RegExp(`lt${doc.nonce}n(\\d+)z`, 'g'),
    (m, n) => doc.tags[Number(n)] ?? m);
  const block = (content) => {
    const m = new RegExp(`^lt${doc.nonce}b(\\d+)$`).exec(content);
    return m ? Number(m[1]) : -1;
  };
  let cssWritten = false;
  const cssBlock = () => {
    cssWritten = true;
    return editorCss ? `<style data-litho-editor>${editorCss}</style>` : '';
  };

  const startTag = (comp, tagName, attrs = comp.getAttributes()) => {
    const k = attrs['data-lo'];
    if (k !== undefined && doc.snapshots.get(String(k)) === attributesSignature(attrs)) {
      return doc.starts[Number(k)];
    }
    let out = `<${tagName}`;
    for (const [name, value] of Object.entries(attrs)) {
      if (name === 'data-lo' || value === false || value === null || value === undefined) continue;
      out += ` ${restore(name)}`;
      if (value === true) continue;
      out += attributeValue(restore(String(value)));
    }
    return `${out}>`;
  };

  const children = (comp, key) => {
    const segs = doc.texts.get(key) || [];
    let textAt = 0;
    let out = '';
    comp.components().forEach((child) => {
      const type = child.get('type');
      if (type === 'textnode') {
        const content = child.get('content') ?? '';
        const seg = segs[textAt++];
        out += seg && seg.text === content ? seg.raw : textToHtml(content);
      } else if (type === 'comment') {
        const content = child.get('content') ?? '';
        const n = block(content);
        if (n < 0) out += `<!--${content}-->`;
        else if (n === doc.editorCssAt) out += cssBlock();
        else out += doc.blocks[n];
      } else {
        out += element(child);
      }
    });
    return out;
  };

  const element = (comp) => {
    const tagName = comp.get('tagName') || 'div';
    const attrs = comp.getAttributes();
    const k = attrs['data-lo'];
    if (doc.implied.has(comp) && attributesSignature(attrs) === '[]') {
      return children(comp, '\u0000'); // the parser's, not the source's: no tags
    }
    let out = startTag(comp, tagName);
    if (overrides.has(comp)) {
      out += overrides.get(comp);
    } else if (comp.components().length) {
      out += children(comp, k === undefined ? '\u0000' : String(k));
    } else if (comp.get('content')) {
      out += comp.get('content');
    }
    if (k !== undefined) out += doc.ends[Number(k)];
    else if (!VOID.has(tagName.toLowerCase())) out += `</${tagName}>`;
    return out;
  };

  let body = children(wrapper, '');
  if (!cssWritten && editorCss) body += cssBlock();
  let bodyTag = '';
  if (doc.bodyTag !== null) {
    const now = wrapper.getAttributes();
    bodyTag = doc.bodyAttrs === attributesSignature(now) ? doc.bodyTag
      : startTag(wrapper, 'body', mergeBody(doc.bodyOriginal, now));
  }
  return doc.prefix + bodyTag + body + doc.suffix;
}

/**
 * The <body> tag's attributes after an edit: GrapesJS's wrapper starts with
 * none of them (they stay in the kept tag), so its style goes after the
 * original style (later declarations win), its classes after the original
 * classes, and any other attribute it has replaces the original's.
 */
function mergeBody(original, now) {
  const merged = Object.fromEntries(original);
  for (const [name, value] of Object.entries(now)) {
    if ((name === 'style' || name === 'class') && merged[name] && value) {
      const sep = name === 'class' ? ' ' : (merged.style.trim().endsWith(';') ? '' : ';');
      merged[name] = `${merged[name]}${sep}${value}`;
    } else {
      merged[name] = value;
    }
  }
  return merged;
}

function attributeValue(value) {
  const quote = value.includes('"') && !value.includes("'") ? "'" : '"';
  const inner = splitTags(value).map(([tag, piece]) => (tag ? piece : escapeAttr(piece, quote)))
    .join('');
  return `=${quote}${inner}${quote}`;
}

/**
 * The inner HTML of a canvas element as template source: text with its
 * {{ tags }} raw, placeholders back to their tags, GrapesJS's own attributes
 * and classes dropped. For the element being typed in, whose model lags.
 */
export function canvasHtml(element, doc) {
  const block = new RegExp(`^lt${doc.nonce}b(\\d+)$`);
  const tokens = new RegExp(`lt${doc.nonce}n(\\d+)z`, 'g');
  const restore = (s) => s.replace(tokens, (m, n) => doc.tags[Number(n)] ?? m);
  let out = '';
  for (const node of element.childNodes) {
    if (node.nodeType === Node.TEXT_NODE) {
      out += textToHtml(node.data);
    } else if (node.nodeType === Node.COMMENT_NODE) {
      const m = block.exec(node.data);
      out += m ? doc.blocks[Number(m[1])] : `<!--${node.data}-->`;
    } else if (node.nodeType === Node.ELEMENT_NODE) {
      const tag = node.namespaceURI === 'http://www.w3.org/1999/xhtml' ? node.localName : node.tagName;
      out += `<${tag}`;
      for (const attr of node.attributes) {
        if (attr.name === 'data-lo' || attr.name.startsWith('data-gjs-')
            || attr.name === 'contenteditable' || attr.name === 'draggable') continue;
        let value = attr.value;
        if (attr.name === 'class') {
          value = value.split(/\s+/).filter((c) => c && !c.startsWith('gjs-')).join(' ');
          if (!value) continue;
        }
        out += ` ${restore(attr.name)}${attributeValue(restore(value))}`;
      }
      out += '>';
      if (!VOID.has(tag)) out += `${canvasHtml(node, doc)}</${tag}>`;
    }
  }
  return out;
}
