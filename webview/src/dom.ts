// Element construction for the webview. Text goes in as textContent only:
// payload bytes and process names are hostile, and nothing here parses HTML.

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  opts: { cls?: string; text?: string; attrs?: Record<string, string> } = {},
  ...children: Node[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (opts.cls) e.className = opts.cls;
  if (opts.text !== undefined) e.textContent = opts.text;
  for (const [k, v] of Object.entries(opts.attrs ?? {})) e.setAttribute(k, v);
  for (const c of children) e.appendChild(c);
  return e;
}

/** A toolbar button: a codicon and a label, its action on click (no inline handler). */
export function button(icon: string, label: string, title: string, onClick: () => void): HTMLButtonElement {
  const b = el(
    'button',
    { attrs: { type: 'button', title } },
    el('span', { cls: `codicon codicon-${icon}` }),
  );
  b.appendChild(el('span', { cls: 'label', text: label }));
  b.addEventListener('click', onClick);
  return b;
}

/** Sets a node's text only when it differs (a draw writes only what changed). */
export function setText(node: Node, text: string): void {
  if (node.textContent !== text) node.textContent = text;
}
