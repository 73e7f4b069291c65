// The editor's blocks. Every block is resizable and styled inline (the
// editor keeps styles on the elements, so a template stays one HTML file).

const font = 'font-family:system-ui, sans-serif';

export const BLOCKS = [
  {
    id: 'text',
    media: '<svg viewBox="0 0 24 24"><path fill="currentColor" d="M5 4v3h5.5v12h3V7H19V4z"/></svg>',
    label: 'Text',
    category: 'Basic',
    content: {
      type: 'text',
      tagName: 'div',
      resizable: true,
      components: [{ type: 'textnode', content: 'Your text' }],
      style: { 'font-size': '56px', 'font-weight': '700', color: '#111827', padding: '8px',
        'font-family': 'system-ui, sans-serif' },
    },
  },
  {
    id: 'image',
    media: '<svg viewBox="0 0 24 24"><path fill="currentColor" d="M21 19V5a2 2 0 0 0-2-2H5a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h14a2 2 0 0 0 2-2zM8.5 13.5l2.5 3 3.5-4.5 4.5 6H5z"/></svg>',
    label: 'Image',
    category: 'Basic',
    activate: true,
    // Bound to a variable; the asset manager (or the src trait) sets a fixed URL.
    content: {
      type: 'image',
      attributes: { src: '{{ image }}', alt: '' },
      resizable: true,
      style: { width: '320px', height: '200px', 'object-fit': 'cover' },
    },
  },
  {
    id: 'shape',
    media: '<svg viewBox="0 0 24 24"><rect x="4" y="4" width="16" height="16" rx="3" fill="currentColor"/></svg>',
    label: 'Shape',
    category: 'Basic',
    content: {
      tagName: 'div',
      resizable: true,
      style: { width: '200px', height: '200px', background: '#4f46e5', 'border-radius': '16px' },
    },
  },
  {
    id: 'qr',
    media: '<svg viewBox="0 0 24 24"><path fill="currentColor" d="M3 3h8v8H3zm2 2v4h4V5zm8-2h8v8h-8zm2 2v4h4V5zM3 13h8v8H3zm2 2v4h4v-4zm8-2h2v2h-2zm2 2h2v2h-2zm-2 2h2v2h-2zm4 0h2v4h-4v-2h2zm0-4h2v2h-2z"/></svg>',
    label: 'QR code',
    category: 'Template',
    // The template language draws the code at render time from a variable.
    content: `<img src="{{ qr(url, 240) }}" width="240" height="240" alt="QR code"
      data-gjs-resizable="true">`,
  },
  {
    id: 'badge',
    media: '<svg viewBox="0 0 24 24"><rect x="2" y="7" width="20" height="10" rx="5" fill="currentColor"/></svg>',
    label: 'Badge',
    category: 'Template',
    content: {
      type: 'text',
      tagName: 'span',
      resizable: true,
      components: [{ type: 'textnode', content: 'New' }],
      style: { display: 'inline-block', padding: '6px 16px', 'border-radius': '999px',
        background: '#db2777', color: '#ffffff', 'font-size': '24px', 'font-weight': '600',
        'font-family': 'system-ui, sans-serif' },
    },
  },
];

/** The first version of a new template: a full document the size of its canvas. */
export function starterHtml(width, height) {
  return '<!doctype html>\n<html><head><meta charset="utf-8"></head>'
    + `<body style="margin:0;width:${width}px;height:${height}px;overflow:hidden;`
    + `background:#ffffff;${font}"></body></html>\n`;
}
