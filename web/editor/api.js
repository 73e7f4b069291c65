// The Litho API, as the editor uses it. The key lives in sessionStorage: it
// is the tab's, gone when the tab closes, never in localStorage or a cookie
// (so no other tab, no later visitor and no cross-site request carries it).

const KEY_ITEM = 'litho.apiKey';
const TIMEOUT_MS = 30000;

export class ApiError extends Error {
  /** @param {number} status @param {object} problem an RFC 9457 problem (or a stand-in) */
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }

  /** One line per problem: the detail, then each field's message. */
  lines() {
    const out = [this.message];
    for (const e of this.problem.errors || []) out.push(`${e.field}: ${e.message}`);
    return out;
  }
}

export const session = {
  key: () => sessionStorage.getItem(KEY_ITEM),
  set: (key) => sessionStorage.setItem(KEY_ITEM, key),
  clear: () => sessionStorage.removeItem(KEY_ITEM),
};

/** A JSON call to the API; throws ApiError for anything but 2xx. */
export async function call(method, path, body, key = session.key()) {
  const headers = { Accept: 'application/json, application/problem+json' };
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
  let response;
  try {
    response = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      signal: controller.signal, credentials: 'omit', cache: 'no-store',
    });
  } catch (err) {
    throw new ApiError(0, { title: controller.signal.aborted ? 'The server did not answer in time'
      : `The server cannot be reached (${err.message})` });
  } finally {
    clearTimeout(timer);
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const problem = data && typeof data === 'object' ? data
      : { title: `HTTP ${response.status}`, detail: text.slice(0, 300) };
    throw new ApiError(response.status, problem);
  }
  return data;
}

const tpl = (id) => `/v1/templates/${encodeURIComponent(id)}`;

export const api = {
  listTemplates: (pageToken) => call('GET', `/v1/templates?pageSize=100${
    pageToken ? `&pageToken=${encodeURIComponent(pageToken)}` : ''}`),
  getTemplate: (id) => call('GET', tpl(id)),
  createTemplate: (fields) => call('POST', '/v1/templates', fields),
  updateTemplate: (id, fields) => call('PUT', tpl(id), fields),
  versions: (id) => call('GET', `${tpl(id)}/versions?pageSize=100`),
  validate: (html) => call('POST', '/v1/expressions/validate', { template: html }),
  renderHtml: (req) => call('POST', '/v1/render', req),
  copilot: (id, prompt) => call('POST', `${tpl(id)}/copilot`, { prompt }),
  copilotPreview: (id, steps) => call('POST', `${tpl(id)}/copilot/preview`, { steps }),
  copilotApply: (id, steps) => call('POST', `${tpl(id)}/copilot/apply`, { steps }),
  check: (key) => call('GET', '/v1/templates?pageSize=1', undefined, key),
};
