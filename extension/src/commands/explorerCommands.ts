// Commands of the event explorer: finding a process, the Exec Events scope,
// intercept rules made from the Sockets view (Hold This Socket's / This
// Process's Data, Hold Port), editing and removing them, and taking the
// filter over from another window. Registered with the others in
// registerCommands.ts; handlers take (node?, nodes?) like every command.
import * as vscode from 'vscode';
import type { HelperSession } from '../helperClient/helperSession';
import {
  describeRule,
  ruleForPort,
  ruleForProcess,
  ruleForSocket,
  withoutRule,
  withRuleFirst,
} from '../intercept/interceptRules';
import type { ExecView, SocketView, WorkbenchModel } from '../model/workbenchModel';
import { plural } from '../shared/plural';
import { readSettings, rulesFromSettings } from '../settings';
import type { InterceptRule } from '../shared/helperProtocol';
import { execName } from '../tree/execTreeProvider';
import type { FilterNode } from '../tree/filterTreeProvider';
import { formatEndpoint, type SocketNode, socketLabel } from '../tree/socketTreeProvider';
import { type CommandHandler, UserCancelled } from './commandWrapper';

export interface ExplorerViews {
  execEvents: vscode.TreeView<ExecView>;
  sockets: vscode.TreeView<SocketNode>;
  /** the Sockets view's own row of a process (rows are stable objects) */
  processRow?: (pid: number) => SocketNode;
}

export interface ExplorerCommandDeps {
  model: WorkbenchModel;
  session: HelperSession;
  log: vscode.LogOutputChannel;
  /** The views, once created (commands registered before them reveal nothing until then). */
  views: () => ExplorerViews | undefined;
}

/** Where nke.interceptRules is set (a workspace value wins over the user's): updates go there. */
function rulesTarget(): vscode.ConfigurationTarget {
  const i = vscode.workspace.getConfiguration('nke').inspect<InterceptRule[]>('interceptRules');
  if (i?.workspaceFolderValue !== undefined) return vscode.ConfigurationTarget.WorkspaceFolder;
  if (i?.workspaceValue !== undefined) return vscode.ConfigurationTarget.Workspace;
  return vscode.ConfigurationTarget.Global;
}

/** Writes nke.interceptRules and makes sure the helper has them when the command completes. */
async function saveRules(session: HelperSession, rules: InterceptRule[]): Promise<void> {
  await vscode.workspace.getConfiguration('nke').update('interceptRules', rules, rulesTarget());
  // The settings listener sends them too; sent here so they are in force now.
  await session.updateRules({ ...rulesFromSettings(), intercept: rules });
}

async function addRule(d: ExplorerCommandDeps, rule: InterceptRule): Promise<void> {
  await saveRules(d.session, withRuleFirst(readSettings().interceptRules, rule));
  const live = d.session.isConnected;
  d.log.info(`intercept rule added: ${JSON.stringify(rule)}`);
  void vscode.window.showInformationMessage(
    `NKE: holding ${rule.name ?? describeRule(rule)}: its next data waits in Pending Payloads${live ? '' : ' once connected'}.`,
  );
}

/**
 * The socket a command is for: its row, else the one selected, else the
 * person picks one. A row's command can come without its row: a busy
 * Sockets view redraws every ~100 ms and VS Code drops the row's handle
 * until the redraw is done, so a right-click then arrives here as if from
 * the palette.
 */
async function socketFor(d: ExplorerCommandDeps, title: string, node?: SocketNode): Promise<SocketView> {
  if (node?.kind === 'socket') return node.socket;
  const selected = d.views()?.sockets.selection.filter((n) => n.kind === 'socket');
  if (selected?.length === 1 && selected[0].kind === 'socket') return selected[0].socket;
  const live = d.model.sockets().filter((s) => s.state !== 'closed');
  if (!live.length) {
    throw new Error("no socket is open: Hold This Socket's Data needs a live socket in the Sockets view");
  }
  const picked = await vscode.window.showQuickPick(
    live.map((socket) => ({
      socket,
      label: socketLabel(socket),
      description: `${socket.process} (${socket.pid}) · ${socket.state}`,
      detail: `${formatEndpoint(socket.local) ?? '(unbound)'} · socket ${socket.id}`,
    })),
    { title: `NKE: ${title}: which socket?`, matchOnDescription: true, matchOnDetail: true },
  );
  if (!picked) throw new UserCancelled();
  return picked.socket;
}

/** The process a command is for: its row (a process, a socket or an exec), else the selection, else the person picks one. */
async function processFor(
  d: ExplorerCommandDeps,
  node?: SocketNode | ExecView,
): Promise<{ pid: number; name: string }> {
  if (node && 'kind' in node) {
    if (node.kind === 'process') return { pid: node.pid, name: node.name };
    if (node.kind === 'socket') return { pid: node.socket.pid, name: node.socket.process };
  } else if (node && 'path' in node) return { pid: node.pid, name: execName(node) };
  const selected = d.views()?.sockets.selection[0];
  if (selected && selected.kind !== 'closed') return processFor(d, selected);
  const pids = d.model.socketPids();
  if (!pids.length) {
    throw new Error("no process has a socket yet: Hold This Process's Data needs one in the Sockets view");
  }
  const picked = await vscode.window.showQuickPick(
    pids.map((pid) => {
      const sockets = d.model.socketsOf(pid);
      const open = sockets.filter((s) => s.state !== 'closed').length;
      return {
        pid,
        name: sockets[0].process,
        label: `${sockets[0].process} (${pid})`,
        description: plural(open, 'open socket'),
      };
    }),
    { title: "NKE: Hold This Process's Data: which process?", matchOnDescription: true },
  );
  if (!picked) throw new UserCancelled();
  return { pid: picked.pid, name: picked.name };
}

async function findProcess(d: ExplorerCommandDeps): Promise<void> {
  const tree = d.model.execTree();
  if (!tree.all.length) {
    const { hidden } = d.model.execCounts();
    void vscode.window.showInformationMessage(
      d.model.execScope === 'underFilter' && hidden
        ? `NKE: no process under the filter has exec'd yet (${hidden} other execs hidden: NKE: Show All Execs)`
        : 'NKE: no exec events yet',
    );
    return;
  }
  type Item = vscode.QuickPickItem & { exec: ExecView };
  const items: Item[] = [...tree.all].reverse().map((exec) => ({
    exec,
    label: execName(exec),
    description: `pid ${exec.pid} · ppid ${exec.ppid} · uid ${exec.uid}`,
    detail: exec.path,
  }));
  const picked = await vscode.window.showQuickPick(items, {
    title: `NKE: Find Process (${d.model.execScope === 'machine' ? 'every exec on the machine' : 'under the filter'})`,
    placeHolder: 'name, path, pid or uid',
    matchOnDescription: true,
    matchOnDetail: true,
  });
  if (!picked) throw new UserCancelled();
  const view = d.views()?.execEvents;
  if (!view) throw new Error('the Exec Events view is not open yet');
  await view.reveal(picked.exec, { select: true, focus: true, expand: true });
}

async function setExecScope(scope: 'underFilter' | 'machine'): Promise<void> {
  await vscode.workspace
    .getConfiguration('nke')
    .update('execScope', scope, vscode.ConfigurationTarget.Global);
}

async function holdPort(d: ExplorerCommandDeps, node?: SocketNode): Promise<void> {
  const s = node?.kind === 'socket' ? node.socket : undefined;
  const suggested = s
    ? s.incoming || s.state === 'listening' || !s.remote
      ? `local:${s.local?.port ?? ''}`
      : String(s.remote.port)
    : '';
  const spec = await vscode.window.showInputBox({
    title: 'NKE: Hold Port',
    prompt:
      'Hold the data of connections to this remote port (8080), of those on this local port (local:8080), or a range (8000-8100)',
    value: suggested,
    validateInput: (v) => {
      try {
        ruleForPort(v);
        return undefined;
      } catch (e) {
        return (e as Error).message;
      }
    },
  });
  if (spec === undefined) throw new UserCancelled();
  await addRule(d, ruleForPort(spec));
}

async function removeRule(d: ExplorerCommandDeps, node?: FilterNode): Promise<void> {
  let rule = node?.kind === 'rule' ? node.rule : undefined;
  let index = node?.index;
  if (!rule) {
    // From the palette (or a row the view redrew meanwhile): ask which.
    const rules = readSettings().interceptRules;
    if (!rules.length) {
      void vscode.window.showInformationMessage(
        'NKE: there are no intercept rules (nke.interceptRules is empty)',
      );
      return;
    }
    const picked = await vscode.window.showQuickPick(
      rules.map((r, i) => ({ label: r.name ?? describeRule(r), description: r.action, rule: r, index: i })),
      { title: 'NKE: Remove Intercept Rule' },
    );
    if (!picked) throw new UserCancelled();
    ({ rule, index } = picked);
  }
  await saveRules(d.session, withoutRule(readSettings().interceptRules, rule, index));
  d.log.info(`intercept rule removed: ${JSON.stringify(rule)}`);
}

/** The handlers, merged into registerCommands' table. */
export function explorerCommandHandlers(d: ExplorerCommandDeps): Record<string, CommandHandler> {
  return {
    'nke.findProcess': () => findProcess(d),
    'nke.showAllExecs': () => setExecScope('machine'),
    'nke.showExecsUnderFilter': () => setExecScope('underFilter'),
    'nke.holdSocket': async (node?: SocketNode) => {
      const s = await socketFor(d, "Hold This Socket's Data", node);
      if (s.attachedEarlier && !s.local && !s.remote) {
        throw new Error(
          `socket ${s.id} was opened before this window connected: its process and ports are not known here, so no rule can name it; Hold Port… holds a port's data`,
        );
      }
      return addRule(d, ruleForSocket(s));
    },
    'nke.holdProcess': async (node?: SocketNode | ExecView) => {
      const p = await processFor(d, node);
      return addRule(d, ruleForProcess(p.pid, p.name));
    },
    'nke.holdPort': (node?: SocketNode) => holdPort(d, node),
    'nke.removeInterceptRule': (node?: FilterNode) => removeRule(d, node),
    'nke.editInterceptRules': () =>
      vscode.commands.executeCommand('workbench.action.openSettingsJson', {
        revealSetting: { key: 'nke.interceptRules', edit: true },
      }),
    'nke.takeOver': async () => {
      await d.session.takeOver();
      void vscode.window.showInformationMessage(
        'NKE: this window holds the filter now; the views are live here.',
      );
    },
  };
}

/**
 * Selecting a process in Exec Events reveals its sockets in the Sockets
 * view (when it has any); the views stay otherwise independent.
 */
export function linkExecsToSockets(views: ExplorerViews, model: WorkbenchModel): vscode.Disposable {
  return views.execEvents.onDidChangeSelection((e) => {
    const exec = e.selection[0];
    if (!exec || !model.socketsOf(exec.pid).length || !views.sockets.visible) return;
    const name = model.socketsOf(exec.pid)[0].process;
    void views.sockets.reveal(views.processRow?.(exec.pid) ?? { kind: 'process', pid: exec.pid, name }, {
      expand: true,
      select: true,
      focus: false,
    });
  });
}
