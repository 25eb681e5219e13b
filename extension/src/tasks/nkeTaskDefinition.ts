// The `nke` task type: one definition shape, mirrored in package.json
// `contributes.taskDefinitions`. No `vscode` import (the command lines are
// built and tested without VS Code).

/** Every task the `nke` provider offers, in the order "Tasks: Run Task" lists them. */
export const nkeTaskNames = [
  'kext-build',
  'kext-load',
  'kext-unload',
  'kext-diagnose',
  'kext-log',
  'emulator-build',
  'emulator-start',
  'addon-build',
] as const;

export type NkeTaskName = (typeof nkeTaskNames)[number];

/** A task of type `nke` as tasks.json writes it: `{"type": "nke", "task": "kext-build"}`. */
export interface NkeTaskDefinition {
  type: 'nke';
  task: NkeTaskName;
}

export function isNkeTaskName(s: unknown): s is NkeTaskName {
  return typeof s === 'string' && (nkeTaskNames as readonly string[]).includes(s);
}

/** The label "Tasks: Run Task" shows (after the "nke: " source prefix). */
export const nkeTaskLabels: Record<NkeTaskName, string> = {
  'kext-build': 'kext build',
  'kext-load': 'kext load',
  'kext-unload': 'kext unload',
  'kext-diagnose': 'kext diagnose',
  'kext-log': 'kext log',
  'emulator-build': 'emulator build',
  'emulator-start': 'emulator start',
  'addon-build': 'addon build (macOS)',
};

/** The tasks that exist only on a Mac (on Linux they say so and exit non-zero). */
export function needsMacOs(task: NkeTaskName): boolean {
  return task.startsWith('kext-') || task === 'addon-build';
}
