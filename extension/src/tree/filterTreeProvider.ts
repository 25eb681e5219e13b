// The Filter view: the link's state, mode, transport and session; what is
// held right now; then totals, each labelled for what it counts: the
// filter's since it started, the helper's since it started. A number that
// reads like "now" but is a total misled people (675 bytes "held" with
// nothing pending), so the two never share a label.
import * as vscode from 'vscode';
import type { Counters, WorkbenchModel } from '../model/workbenchModel';
import type { InterceptRule } from '../shared/helperProtocol';
import { describeRule } from '../intercept/interceptRules';
import { ModelTreeProvider } from './modelTreeView';
import { plural } from '../shared/plural';

export interface FilterNode {
  kind:
    | 'status'
    | 'mode'
    | 'capture'
    | 'transport'
    | 'session'
    | 'error'
    | 'stale'
    | 'now'
    | 'filterCounter'
    | 'counter'
    | 'group'
    | 'rules'
    | 'rule';
  label: string;
  value: string;
  tooltip?: string;
  children?: FilterNode[];
  /** kind 'rule': the intercept rule and its index in nke.interceptRules */
  rule?: InterceptRule;
  index?: number;
}

/** The helper's counters: totals since the helper process started. */
const counterLabels: [keyof Counters, string][] = [
  ['dataChunks', 'Data chunks seen'],
  ['heldForPerson', 'Held for you'],
  ['autoPassed', 'Passed by rules'],
  ['rewritten', 'Rewritten by rules'],
  ['rewriteMatchesMissed', 'Rewrite matches missed'],
  ['verdictsAllow', 'Allowed'],
  ['verdictsReplace', 'Allowed modified'],
  ['verdictsDrop', 'Dropped'],
  ['releasedByFilter', 'Released by the filter'],
  ['bytesIn', 'Bytes in'],
  ['bytesOut', 'Bytes out'],
  ['execs', 'Exec events'],
  ['execsIncomplete', 'Exec paths with gaps'],
  ['socketsAdopted', 'Sockets attached before the helper'],
  // What the helper saw but could not show or hold: never silent.
  ['pendingOverLimit', "Passed, helper's pending bytes full"],
  ['dataGaps', 'Data passed unreported'],
  ['malformedRecords', 'Malformed records skipped'],
];

export class FilterTreeProvider extends ModelTreeProvider<FilterNode> {
  constructor(model: WorkbenchModel) {
    super(model, ['filter', 'pending']);
  }

  getChildren(element?: FilterNode): FilterNode[] {
    const link = this.model.link;
    if (element?.kind === 'rules') {
      return (link.rules?.intercept ?? []).map((rule, index) => ({
        kind: 'rule',
        label: rule.name ?? describeRule(rule),
        value: rule.name ? `${rule.action} · ${describeRule(rule)}` : rule.action,
        rule,
        index,
      }));
    }
    if (element) return element.children ?? [];
    // Empty while never connected so the view shows its welcome content.
    if (link.status === 'disconnected' && !link.filter) return [];
    const nodes: FilterNode[] = [
      { kind: 'status', label: 'Status', value: link.status },
      { kind: 'mode', label: 'Mode', value: link.mode },
    ];
    if (link.rules) {
      const n = link.rules.intercept?.length ?? 0;
      nodes.push({
        kind: 'capture',
        label: 'Capture',
        value: `${link.rules.default ?? 'report'}${n ? ` + ${plural(n, 'intercept rule')}` : ''}`,
      });
    }
    const rules = link.rules?.intercept?.length ?? 0;
    if (rules) nodes.push({ kind: 'rules', label: 'Intercept rules', value: String(rules) });
    if (link.staleReason) nodes.push({ kind: 'stale', label: 'Stale', value: link.staleReason });
    const f = link.filter;
    if (f) {
      nodes.push({ kind: 'transport', label: 'Transport', value: f.transport });
      if (f.sessionId) nodes.push({ kind: 'session', label: 'Session', value: f.sessionId });
      if (f.error?.code === 'NKE_TAKEN_OVER') {
        nodes.push({
          kind: 'error',
          label: 'Taken over',
          value: f.error.message,
          tooltip: `${f.error.message}. This window stays off the filter until NKE: Take Over (Take Back) brings it here again.`,
        });
      } else if (f.error) {
        nodes.push({ kind: 'error', label: 'Error', value: `${f.error.code}: ${f.error.message}` });
      }
    }
    const pending = this.model.pending();
    nodes.push({
      kind: 'now',
      label: 'Held for you now',
      value: plural(pending.length, 'payload'),
      tooltip: 'Payloads held right now, waiting for your verdict (Pending Payloads)',
    });
    const now = f?.state?.now;
    if (now) {
      nodes.push({
        kind: 'now',
        label: 'Bytes kept by the filter now',
        value: String(now.bytesKept),
        tooltip:
          'Bytes the filter keeps right now: held chunks, data queued behind them, staged edits, bytes being re-injected',
      });
    }
    const total = f?.state?.sinceStart;
    if (total) {
      // The filter's own count of verdicts and releases it skipped because
      // their chunk was already released (deadline): answers that came too late.
      nodes.push({
        kind: 'filterCounter',
        label: 'Late answers skipped',
        value: String(total.staleEntries),
        tooltip: `Late answers skipped: ${total.staleEntries} since the filter started (stale entries: verdicts and releases the filter skipped, their chunk was already released at its deadline)`,
      });
      const filterTotals: [number, string][] = [
        [total.chunksHeld, 'Chunks held'],
        [total.bytesHeld, 'Bytes held'],
        [total.chunksReported, 'Chunks reported'],
        [total.chunksAutoReleased, 'Released by the filter'],
        [total.chunksPassedPoolFull, 'Passed, no buffer free'],
        [total.chunksPassedBudget, 'Passed, byte budget used up'],
        [total.chunksQueued, 'Queued behind held data'],
        [total.notificationsLost, 'Notifications lost'],
      ];
      nodes.push({
        kind: 'group',
        label: 'Filter totals',
        value: 'since the filter started',
        children: filterTotals.map(([v, label]) => ({
          kind: 'filterCounter',
          label,
          value: String(v),
          tooltip: `${label}: ${v} since the filter started (all its clients)`,
        })),
      });
    }
    const c = this.model.counters;
    nodes.push({
      kind: 'group',
      label: 'Helper totals',
      value: 'since the helper started',
      children: counterLabels.map(([key, label]) => ({
        kind: 'counter',
        label,
        value: String(c[key] ?? 0),
        tooltip: `${label}: ${c[key] ?? 0} since the helper started`,
      })),
    });
    return nodes;
  }

  getTreeItem(n: FilterNode): vscode.TreeItem {
    if (n.kind === 'rule' || n.kind === 'rules') {
      const item = new vscode.TreeItem(
        n.label,
        n.kind === 'rules' ? vscode.TreeItemCollapsibleState.Expanded : vscode.TreeItemCollapsibleState.None,
      );
      item.id = n.kind === 'rules' ? 'filter:rules' : `filter:rule:${n.index}:${JSON.stringify(n.rule)}`;
      item.description = n.value;
      item.tooltip =
        n.kind === 'rules'
          ? 'nke.interceptRules, first match wins (NKE: Edit Intercept Rules)'
          : `${JSON.stringify(n.rule)}\nRemove it with the trash button; NKE: Edit Intercept Rules edits them all.`;
      item.contextValue = n.kind === 'rules' ? 'filter.rules' : 'interceptRule';
      item.iconPath = new vscode.ThemeIcon(n.kind === 'rules' ? 'list-filter' : 'debug-breakpoint-data');
      return item;
    }
    // Totals start collapsed: what is held now stays in sight in a small pane.
    // The id keeps a group open or closed across the view's refreshes.
    const item = new vscode.TreeItem(
      n.label,
      n.children ? vscode.TreeItemCollapsibleState.Collapsed : vscode.TreeItemCollapsibleState.None,
    );
    if (n.children) item.id = `filter.group.${n.label}`;
    item.description = n.value;
    item.tooltip = n.tooltip ?? `${n.label}: ${n.value}`;
    item.contextValue = `filter.${n.kind}`;
    if (n.kind === 'status') {
      item.iconPath = new vscode.ThemeIcon(
        n.value === 'paused' ? 'debug-pause' : n.value === 'failed' ? 'error' : 'plug',
      );
    } else if (n.kind === 'stale' || n.kind === 'error') {
      item.iconPath = new vscode.ThemeIcon('warning');
    }
    return item;
  }
}
