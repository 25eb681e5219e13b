// Typed access to the nke.* settings declared in package.json.
import * as vscode from 'vscode';
import type { ExecScope, FilterMode } from './model/workbenchModel';
import type { InterceptRule, RulesConfig } from './shared/helperProtocol';
import { DEFAULT_ACTION, type RuleActionName } from './shared/ruleFields';

export interface NkeSettings {
  mode: FilterMode;
  /** Folder holding nke-emud, nke-emu and libnkeshim.so; empty = the extension's own native/emu/build. */
  emulatorDir: string;
  /** The emulator's runtime directory (its sockets); empty = $NKE_EMU_DIR or the emulator's default. */
  emulatorRuntimeDir: string;
  holdTimeoutMs: number;
  /** How long in total a payload open in an editor is kept held (nke.editHoldMaxMs). */
  editHoldMaxMs: number;
  historyLimit: number;
  /** MiB of payload bytes the helper's capture history keeps (pcapng export, Wireshark); 0: none */
  captureHistoryMiB: number;
  /** nke.capture: what happens to data no intercept rule matches (RulesConfig.default; not the ABI's CaptureMode) */
  capture: RuleActionName;
  interceptRules: InterceptRule[];
  connectOnStartup: boolean;
  /** Folder with the kext's Makefile; empty = the extension's own kext/. */
  kextDir: string;
  /** The built bundle, relative to kextDir. */
  kextBundle: string;
  kextBundleId: string;
  /** Folder whose Makefile builds the emulator; empty = the extension's own native/emu. */
  emulatorSourceDir: string;
  /** Exec Events: the processes under the filter (and their descendants), or every exec on the machine. */
  execScope: ExecScope;
  /** Closed sockets are forgotten this long after they closed. */
  closedSocketsKeptSeconds: number;
}

export function readSettings(): NkeSettings {
  const c = vscode.workspace.getConfiguration('nke');
  return {
    mode: c.get<FilterMode>('mode', 'emulator'),
    emulatorDir: c.get<string>('emulatorDir', ''),
    emulatorRuntimeDir: c.get<string>('emulatorRuntimeDir', ''),
    holdTimeoutMs: c.get<number>('holdTimeoutMs', 5000),
    editHoldMaxMs: c.get<number>('editHoldMaxMs', 120000),
    historyLimit: c.get<number>('historyLimit', 1000),
    captureHistoryMiB: c.get<number>('captureHistoryMiB', 64),
    capture: c.get<RuleActionName>('capture', DEFAULT_ACTION),
    interceptRules: c.get<InterceptRule[]>('interceptRules', []),
    connectOnStartup: c.get<boolean>('connectOnStartup', false),
    kextDir: c.get<string>('kextDir', ''),
    kextBundle: c.get<string>('kextBundle', 'build/NKEFilter.kext'),
    kextBundleId: c.get<string>('kextBundleId', 'com.nkeworkbench.filter'),
    emulatorSourceDir: c.get<string>('emulatorSourceDir', ''),
    execScope: c.get<ExecScope>('execScope', 'underFilter') === 'machine' ? 'machine' : 'underFilter',
    closedSocketsKeptSeconds: c.get<number>('closedSocketsKeptSeconds', 300),
  };
}

/** The rules the helper gets from the settings (it validates them and names a bad field). */
export function rulesFromSettings(s: NkeSettings = readSettings()): RulesConfig {
  return { default: s.capture, intercept: s.interceptRules, rewrite: [], holdTimeoutMs: s.holdTimeoutMs };
}

/** Settings whose change must reach a running helper. */
export const rulesSettings = ['nke.capture', 'nke.interceptRules', 'nke.holdTimeoutMs'];

/**
 * Settings the helper process starts with: a change applies at the next
 * Connect (a new helper). Not nke.historyLimit: it counts the exec events
 * this window keeps and applies at once; the helper's event ring has its own
 * limit (--event-ring).
 */
export const helperLaunchSettings = ['nke.mode', 'nke.emulatorRuntimeDir'];
