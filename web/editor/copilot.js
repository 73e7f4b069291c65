// The copilot panel: a prompt, the planned steps to accept or reject, a
// preview of the accepted ones (rendered by the real renderer) and apply.
// A gateway without the copilot answers 404, which the panel says plainly.

import { api, ApiError } from './api.js';
import { $, el, errorLines, imagePath } from './dom.js';

let steps = [];
let host = null; // {template(), sample(), applied(template), failed(err)}

function copilotMessage(err) {
  if (err instanceof ApiError && err.status === 404) {
    return 'The copilot is not available on this server yet.';
  }
  if (err instanceof ApiError && err.status === 409) {
    return 'The template changed since this plan: ask again.';
  }
  return errorLines(err).join('; ');
}

export function resetCopilot() {
  steps = [];
  $('copilot-status').textContent = '';
  $('copilot-steps').replaceChildren();
  $('copilot-apply').hidden = true;
  $('copilot-preview').hidden = true;
  $('copilot-image').hidden = true;
  $('copilot-image').removeAttribute('src');
}

async function askCopilot(event) {
  event.preventDefault();
  const prompt = $('copilot-prompt').value.trim();
  if (!prompt || !host.template()) return;
  resetCopilot();
  $('copilot-status').textContent = 'Thinking…';
  try {
    const plan = await api.copilot(host.template().id, prompt);
    steps = Array.isArray(plan.steps) ? plan.steps : [];
    for (const step of steps) {
      // A step without an operation only explains; an error step is never applied.
      const usable = !step.error && step.operation && typeof step.operation === 'object';
      const box = el('input', { type: 'checkbox', checked: usable, disabled: !usable,
        value: String(step.id) });
      const op = usable ? String(step.operation.op || '') : '';
      const label = el('label', {}, box,
        el('span', { text: `${step.description || ''}${op ? ` (${op})` : ''}` }));
      const item = el('li', {}, label);
      if (step.error) item.append(el('span', { className: 'step-error', text: step.error }));
      $('copilot-steps').append(item);
    }
    const any = steps.some((s) => !s.error && s.operation);
    $('copilot-status').textContent = any
      ? 'Accept or reject each step, then preview or apply.' : 'The copilot has no steps for that.';
    $('copilot-apply').hidden = !any;
    $('copilot-preview').hidden = !any;
  } catch (err) {
    host.failed(err);
    $('copilot-status').textContent = copilotMessage(err);
  }
}

function acceptedSteps() {
  return [...$('copilot-steps').querySelectorAll('input[type=checkbox]:checked')]
    .map((box) => steps.find((s) => String(s.id) === box.value)?.id)
    .filter((id) => id !== undefined);
}

async function previewCopilot() {
  const ids = acceptedSteps();
  if (!ids.length) {
    $('copilot-status').textContent = 'No step accepted.';
    return;
  }
  $('copilot-status').textContent = 'Rendering the accepted steps…';
  try {
    const drafts = await api.copilotPreview(host.template().id, ids);
    const draft = drafts.template;
    const result = await api.renderHtml({ html: draft.html, width: draft.width,
      height: draft.height, variables: host.sample(), format: 'png' });
    $('copilot-image').src = imagePath(result);
    $('copilot-image').hidden = false;
    const more = (drafts.created || []).map((d) => d.name);
    $('copilot-status').textContent = `Preview ${draft.width}×${draft.height}${
      more.length ? `; applying also creates: ${more.join(', ')}` : ''}.`;
  } catch (err) {
    host.failed(err);
    $('copilot-status').textContent = copilotMessage(err);
  }
}

async function applyCopilot() {
  const ids = acceptedSteps();
  if (!ids.length) {
    $('copilot-status').textContent = 'No step accepted.';
    return;
  }
  try {
    const applied = await api.copilotApply(host.template().id, ids);
    const t = applied.template || await api.getTemplate(host.template().id);
    host.applied(t);
    const created = (applied.created || []).map((c) => c.name);
    $('copilot-status').textContent = `Applied as version ${t.version}.${
      created.length ? ` New templates: ${created.join(', ')}.` : ''}`;
  } catch (err) {
    host.failed(err);
    $('copilot-status').textContent = copilotMessage(err);
  }
}

export function initCopilot(hooks) {
  host = hooks;
  $('copilot-form').addEventListener('submit', askCopilot);
  $('copilot-preview').addEventListener('click', previewCopilot);
  $('copilot-apply').addEventListener('click', applyCopilot);
}
