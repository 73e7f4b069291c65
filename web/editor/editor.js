// The Litho editor: GrapesJS on a template's body, the template language kept
// intact by source.js, the API through api.js. No innerHTML anywhere: names,
// errors and API answers go into the page as text. The canvas shows the
// template's own HTML, which is the tenant's.

import { api, ApiError, session } from './api.js';
import { BLOCKS, starterHtml } from './blocks.js';
import { initCopilot, resetCopilot } from './copilot.js';
import { $, el, errorLines, imagePath, showLines } from './dom.js';
import { canvasHtml, exportHtml, protect, snapshot } from './source.js';

const PREVIEW_DELAY_MS = 500;

const state = {
  editor: null,
  template: null, // the template as last loaded or saved
  doc: null, // protect()'s record of the loaded source
  sample: {},
  previewTimer: 0,
  previewSeq: 0,
  nextPageToken: null,
  onResize: null,
  fitTimer: 0,
};

function status(text) {
  $('status').textContent = text;
}

function view(name) {
  $('sign-in').hidden = name !== 'sign-in';
  $('library').hidden = name !== 'library';
  $('workspace').hidden = name !== 'workspace';
  const signedIn = name !== 'sign-in';
  $('sign-out').hidden = !signedIn;
  $('open-library').hidden = !signedIn;
  $('save').hidden = name !== 'workspace';
  if (name !== 'workspace') $('template-name').textContent = '';
}

// ---- sign in ------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const key = $('api-key').value.trim();
  $('sign-in-error').textContent = '';
  try {
    await api.check(key);
  } catch (err) {
    showLines($('sign-in-error'), errorLines(err));
    return;
  }
  session.set(key);
  $('api-key').value = '';
  if (!openFromHash()) await openLibrary();
}

function signOut() {
  session.clear();
  destroyEditor();
  state.template = null;
  view('sign-in');
  $('api-key').focus();
}

// ---- templates ------------------------------------------------------------------

async function openLibrary() {
  state.template = null;
  history.replaceState(null, '', window.location.pathname);
  view('library');
  $('library-error').textContent = '';
  $('template-list').replaceChildren();
  await loadTemplatePage(null);
}

async function loadTemplatePage(pageToken) {
  try {
    const page = await api.listTemplates(pageToken);
    for (const t of page.templates) $('template-list').append(templateRow(t));
    state.nextPageToken = page.nextPageToken || null;
    $('more-templates').hidden = !state.nextPageToken;
  } catch (err) {
    handleAuth(err);
    showLines($('library-error'), errorLines(err));
  }
}

function templateRow(t) {
  return el('li', {},
    el('span', { className: 'grow', text: `${t.name}` }),
    el('span', { className: 'hint', text: `${t.width}×${t.height} · v${t.version}` }),
    el('button', { type: 'button', text: 'Open', on: { click: () => openTemplate(t.id) } }),
    el('button', { type: 'button', text: 'Duplicate', on: { click: () => duplicate(t.id) } }));
}

async function createTemplate(event) {
  event.preventDefault();
  let width;
  let height;
  const preset = $('new-preset').value;
  if (preset === 'blank') {
    width = Number($('new-width').value);
    height = Number($('new-height').value);
  } else {
    [width, height] = preset.split('x').map(Number);
  }
  try {
    const t = await api.createTemplate({
      name: $('new-name').value.trim() || 'Untitled', width, height,
      html: starterHtml(width, height), sampleVariables: {},
    });
    await openTemplate(t.id, t);
  } catch (err) {
    handleAuth(err);
    showLines($('library-error'), errorLines(err));
  }
}

async function duplicate(id) {
  try {
    const t = await api.getTemplate(id);
    const copy = await api.createTemplate({
      name: `${t.name} (copy)`.slice(0, 200), html: t.html, width: t.width, height: t.height,
      sampleVariables: t.sampleVariables || {}, variables: t.variables || [], tags: t.tags || [],
    });
    await openLibrary();
    status(`Duplicated as “${copy.name}”`);
  } catch (err) {
    handleAuth(err);
    showLines($('library-error'), errorLines(err));
  }
}

async function openTemplate(id, loaded) {
  let t = loaded;
  try {
    t = t || await api.getTemplate(id);
  } catch (err) {
    handleAuth(err);
    showLines($('library-error'), errorLines(err));
    return;
  }
  view('workspace');
  history.replaceState(null, '', `#${t.id}`);
  load(t);
}

// ---- the GrapesJS editor ----------------------------------------------------------

function destroyEditor() {
  if (state.editor) state.editor.destroy();
  if (state.onResize) window.removeEventListener('resize', state.onResize);
  state.editor = null;
  ['blocks', 'layers', 'styles', 'traits', 'gjs'].forEach((id) => $(id).replaceChildren());
}

function load(template) {
  destroyEditor();
  state.template = template;
  state.sample = template.sampleVariables || {};
  $('sample').value = JSON.stringify(state.sample, null, 2);
  $('sample-error').textContent = '';
  $('template-name').textContent = `${template.name} · v${template.version}`;
  let html;
  let doc;
  try {
    ({ html, doc } = protect(template.html));
  } catch (err) {
    view('library');
    showLines($('library-error'), [`Cannot open “${template.name}”: ${err.message}`]);
    return;
  }
  state.doc = doc;
  const editor = window.grapesjs.init({
    container: '#gjs',
    height: '100%',
    width: 'auto',
    fromElement: false,
    storageManager: false,
    telemetry: false,
    // Nothing from a CDN (the page's CSP allows none): GrapesJS's default icon
    // font is off, and so is its own CSS in the canvas, so the canvas is the page
    // Chromium renders.
    cssIcons: '',
    protectedCss: '',
    // Styles stay on the elements (no generated #id rules), classes as written.
    avoidInlineStyle: false,
    forceClass: false,
    selectorManager: { componentFirst: true },
    // GrapesJS parses every HTML string as a whole document, so a comment (a
    // block tag's placeholder) or white space at the start of, say, a text
    // being synced back from the canvas would land outside the body and be lost.
    parser: { optionsHtml: { keepEmptyTextNodes: true, allowScripts: false,
      preParser: (input) => `<body>${input}` } },
    // GrapesJS's own frame style paints the body white after the template's
    // styles, hiding a template's own background: keep only its scrollbars.
    // An unstyled page still shows white, as Chromium renders it (the frame
    // element is white).
    canvas: { styles: [], scripts: [], frameStyle: '* ::-webkit-scrollbar { width: 10px }' },
    deviceManager: {
      devices: [{ id: 'template', name: 'Template',
        width: `${template.width}px`, height: `${template.height}px` }],
    },
    panels: { defaults: [] },
    // A click on a block appends it to the selected element (or the body), for
    // keyboards and tests; dragging places it.
    blockManager: { appendTo: '#blocks', blocks: BLOCKS, appendOnClick: true },
    layerManager: { appendTo: '#layers' },
    styleManager: { appendTo: '#styles' },
    traitManager: { appendTo: '#traits' },
    components: '',
  });
  state.editor = editor;
  editor.setDevice('Template');
  editor.setComponents(html);
  snapshot(editor.getWrapper(), doc, decodeHtml);
  editor.setStyle(doc.editorCss || '');
  editor.on('canvas:frame:load', () => injectTemplateStyles(editor, doc));
  injectTemplateStyles(editor, doc);
  editor.on('load', () => {
    injectTemplateStyles(editor, doc);
    fitCanvas(editor, template);
  });
  setTimeout(() => fitCanvas(editor, template), 50);
  window.addEventListener('resize', state.onResize = () => fitCanvas(editor, template));
  editor.on('update', () => schedulePreview());
  editor.on('component:update', () => schedulePreview());
  resetCopilot();
  $('preview').hidden = true;
  $('preview').removeAttribute('src');
  $('preview-warnings').replaceChildren();
  $('syntax-errors').replaceChildren();
  schedulePreview(0);
  loadVersions();
  status('');
  // For tests and the console: the template on the canvas and its source as it would be saved.
  window.lithoEditor = { templateId: template.id, exportHtml: currentHtml, editor };
}

/**
 * The <body> tag's style and classes, for the canvas only: the tag itself is
 * written back as it was (GrapesJS would turn its style into a CSS rule).
 */
function bodyAttributes(doc) {
  if (!doc.bodyParts) return { style: '', classes: [] };
  const body = new DOMParser().parseFromString(`${doc.bodyParts}</body>`, 'text/html').body;
  return { style: body.getAttribute('style') || '', classes: [...body.classList] };
}

function decodeHtml(text) {
  return new DOMParser().parseFromString(`<!doctype html><body>${text}`, 'text/html')
    .body.textContent;
}

function injectTemplateStyles(editor, doc) {
  const frameDoc = editor.Canvas.getDocument();
  if (!frameDoc || !frameDoc.head) return;
  frameDoc.head.querySelectorAll('style[data-litho-template]').forEach((s) => s.remove());
  const body = bodyAttributes(doc);
  frameDoc.body.classList.add(...body.classes);
  for (const css of [...doc.styles, body.style ? `body{${body.style}}` : '']) {
    const style = frameDoc.createElement('style');
    style.setAttribute('data-litho-template', '');
    style.textContent = css;
    frameDoc.head.append(style);
  }
}

/** Zoom the canvas so the whole template shows, and centre it. */
function fitCanvas(editor, template) {
  if (state.editor !== editor) return;
  const box = $('gjs').getBoundingClientRect();
  const zoom = Math.min(100, Math.floor(100 * Math.min((box.width - 40) / template.width,
    (box.height - 40) / template.height)));
  if (zoom <= 0) return;
  editor.Canvas.setZoom(zoom);
  editor.Canvas.setCoords(0, 0);
  // GrapesJS applies the zoom a moment later; then move the frame by what is
  // off, a few times (a move is not always exactly the distance asked for).
  clearTimeout(state.fitTimer);
  let tries = 4;
  const centre = () => {
    const frame = $('gjs').querySelector('iframe.gjs-frame');
    if (!frame || state.editor !== editor) return;
    const rect = frame.getBoundingClientRect();
    const dx = box.left + (box.width - rect.width) / 2 - rect.left;
    const dy = box.top + Math.max(20, (box.height - rect.height) / 2) - rect.top;
    if (Math.abs(dx) < 2 && Math.abs(dy) < 2) return;
    const { x, y } = editor.Canvas.getCoords();
    editor.Canvas.setCoords(x + dx, y + dy);
    if (--tries > 0) state.fitTimer = setTimeout(centre, 100);
  };
  state.fitTimer = setTimeout(centre, 150);
}

/**
 * The template source for what the canvas shows. While text is being typed,
 * GrapesJS's model lags behind the canvas: a save takes the text into the
 * model first (commit), a preview reads it from the canvas (syncing the model
 * mid-typing would move the caret).
 */
async function currentHtml({ commit = false } = {}) {
  const editor = state.editor;
  const overrides = new Map();
  const selected = editor.getSelected();
  const view = selected && selected.view;
  if (view && view.rteEnabled) {
    if (commit) await view.syncContent();
    else overrides.set(selected, canvasHtml(view.getChildrenContainer(), state.doc));
  }
  // Only the CSS rules made in the editor (getCss() would add a copy of every
  // element's inline style as an #id rule).
  const css = editor.CodeManager.getCode(null, 'css', { cssc: editor.Css, keepUnusedStyles: true,
    avoidProtected: true }) || '';
  return exportHtml(editor.getWrapper(), state.doc, css.trim(), overrides);
}

// ---- saving and versions ------------------------------------------------------------

async function save() {
  if (!state.editor || !state.template) return;
  const html = await currentHtml({ commit: true });
  let sample;
  try {
    sample = parseSample();
  } catch {
    status('Fix the sample data first');
    return;
  }
  status('Saving…');
  try {
    const check = await api.validate(html);
    if (!check.valid) {
      showSyntaxErrors(check.errors);
      selectTab('data');
      status('Not saved: the template has errors');
      return;
    }
    const t = await api.updateTemplate(state.template.id, { html, sampleVariables: sample });
    state.template = t;
    $('template-name').textContent = `${t.name} · v${t.version}`;
    status(`Saved version ${t.version}`);
    loadVersions();
  } catch (err) {
    handleAuth(err);
    status(`Not saved: ${errorLines(err).join('; ')}`);
  }
}

async function loadVersions() {
  const list = $('versions');
  list.replaceChildren();
  try {
    const page = await api.versions(state.template.id);
    for (const v of page.versions) {
      list.append(el('li', {},
        el('span', { className: 'grow', text: `v${v.version} · ${new Date(v.updatedAt).toLocaleString()}` }),
        el('button', { type: 'button', text: 'Restore', on: { click: () => restore(v) } })));
    }
  } catch (err) {
    list.append(el('li', { className: 'error', text: errorLines(err).join('; ') }));
  }
}

async function restore(version) {
  status(`Restoring version ${version.version}…`);
  try {
    const t = await api.updateTemplate(state.template.id, {
      name: version.name, html: version.html, width: version.width, height: version.height,
      sampleVariables: version.sampleVariables || {}, variables: version.variables || [],
    });
    load(t);
    status(`Restored version ${version.version} as version ${t.version}`);
  } catch (err) {
    handleAuth(err);
    status(`Not restored: ${errorLines(err).join('; ')}`);
  }
}

// ---- variables and the live preview ----------------------------------------------------

function parseSample() {
  const value = JSON.parse($('sample').value || '{}');
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new SyntaxError('sample data must be a JSON object, like {"title": "Hello"}');
  }
  return value;
}

function onSampleInput() {
  try {
    state.sample = parseSample();
    $('sample-error').textContent = '';
    schedulePreview();
  } catch (err) {
    $('sample-error').textContent = `Invalid JSON: ${err.message}`;
  }
}

function schedulePreview(delay = PREVIEW_DELAY_MS) {
  clearTimeout(state.previewTimer);
  state.previewTimer = setTimeout(preview, delay);
}

function showSyntaxErrors(errors) {
  showLines($('syntax-errors'), errors.map((e) => `line ${e.line}, column ${e.column}: ${e.message}`));
}

async function preview() {
  if (!state.editor || !state.template) return;
  const seq = ++state.previewSeq;
  const html = await currentHtml();
  if (seq !== state.previewSeq) return;
  const { width, height } = state.template;
  $('preview-status').textContent = 'Rendering…';
  try {
    const check = await api.validate(html);
    if (seq !== state.previewSeq) return;
    showSyntaxErrors(check.errors || []);
    showLines($('discovered'), check.variables || []);
    showLines($('defined'), (state.template.variables || []).map((v) => `${v.name}: ${v.type}`));
    if (!check.valid) {
      $('preview-status').textContent = 'Not rendered: the template has errors';
      return;
    }
    const result = await api.renderHtml({ html, width, height, variables: state.sample,
      format: 'png' });
    if (seq !== state.previewSeq) return;
    $('preview').src = imagePath(result);
    $('preview').hidden = false;
    $('preview').dataset.renderId = result.id;
    showLines($('preview-warnings'), (result.warnings || []).map(
      (w) => `${w.outcome}: ${w.url} (${w.reason}) ${w.hint}`));
    $('preview-status').textContent = `Rendered ${result.width}×${result.height}${
      result.cached ? ' (cached)' : ''}`;
  } catch (err) {
    if (seq !== state.previewSeq) return;
    handleAuth(err);
    $('preview-status').textContent = `Not rendered: ${errorLines(err).join('; ')}`;
  }
}

// ---- wiring ------------------------------------------------------------------------

/** /editor#tpl_… opens that template. */
function openFromHash() {
  const id = window.location.hash.slice(1);
  if (!/^tpl_[0-9a-f]{24}$/.test(id) || !session.key()) return false;
  if (state.template && state.template.id === id) return true;
  openTemplate(id);
  return true;
}

function handleAuth(err) {
  if (err instanceof ApiError && err.status === 401) {
    session.clear();
    destroyEditor();
    view('sign-in');
    showLines($('sign-in-error'), err.lines());
  }
}

function selectTab(name) {
  document.querySelectorAll('.tabs button').forEach((b) => {
    b.setAttribute('aria-selected', String(b.dataset.tab === name));
  });
  document.querySelectorAll('.tab').forEach((p) => { p.hidden = p.dataset.panel !== name; });
}

function start() {
  $('sign-in-form').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', signOut);
  $('open-library').addEventListener('click', () => { destroyEditor(); openLibrary(); });
  $('new-form').addEventListener('submit', createTemplate);
  $('new-preset').addEventListener('change', () => {
    $('blank-size').hidden = $('new-preset').value !== 'blank';
  });
  $('more-templates').addEventListener('click', () => loadTemplatePage(state.nextPageToken));
  $('save').addEventListener('click', save);
  $('sample').addEventListener('input', onSampleInput);
  initCopilot({
    template: () => state.template,
    sample: () => state.sample,
    applied: (template) => load(template),
    failed: handleAuth,
  });
  document.querySelectorAll('.tabs button').forEach((b) => {
    b.addEventListener('click', () => selectTab(b.dataset.tab));
  });
  window.addEventListener('hashchange', openFromHash);
  if (session.key()) {
    if (!openFromHash()) openLibrary();
  } else {
    view('sign-in');
  }
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
else start();
