// What every screen shares: the API, the latest status, and a way to
// report errors and to hear events.

import type { Api } from './api/client';
import type { EngineEvent, Status } from './api/types';

export interface Screen {
  /** The screen's root element. */
  el: HTMLElement;
  /** An event from the engine. */
  onEvent?(e: EngineEvent): void;
  /** Called when the screen is left. */
  close?(): void;
}

export interface App {
  api: Api;
  status: Status | null;
  /** Shows an error (or clears it with null). */
  notify(message: string | null, kind?: 'error' | 'info'): void;
  /** Goes to a screen. */
  go(name: string): void;
}

/** An accessible modal dialog: resolves with the chosen button's value
 * ("" when dismissed with Escape). */
export function ask(
  title: string,
  body: Node | string,
  buttons: { label: string; value: string; primary?: boolean; id?: string }[],
): Promise<string> {
  return new Promise((resolve) => {
    const dialog = document.createElement('dialog');
    dialog.setAttribute('aria-labelledby', 'dialog-title');
    const h = document.createElement('h2');
    h.id = 'dialog-title';
    h.textContent = title;
    const content = document.createElement('div');
    content.className = 'dialog-body';
    content.append(typeof body === 'string' ? document.createTextNode(body) : body);
    const row = document.createElement('div');
    row.className = 'dialog-buttons';
    for (const b of buttons) {
      const btn = document.createElement('button');
      btn.type = 'button';
      btn.textContent = b.label;
      if (b.id) btn.id = b.id;
      if (b.primary) btn.className = 'primary';
      btn.addEventListener('click', () => dialog.close(b.value));
      row.append(btn);
    }
    dialog.append(h, content, row);
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(dialog.returnValue);
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}
