// Errors a command handler throws to say what the user can do next. No
// `vscode` import: the helper session and other vscode-free modules throw them.

/** Thrown by a handler when the user backed out; never shown as an error. */
export class UserCancelled extends Error {
  constructor() {
    super('cancelled by the user');
    this.name = 'UserCancelled';
  }
}

/** An error that carries a follow-up the user can take from the notification. */
export class ActionableError extends Error {
  constructor(
    message: string,
    readonly action?: { title: string; command: string; args?: unknown[] },
  ) {
    super(message);
    this.name = 'ActionableError';
  }
}
