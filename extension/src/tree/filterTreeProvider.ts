// The Filter view: the link's state, mode, transport and session, the
// filter's own counters and the helper's counters.
import * as vscode from 'vscode';
import type { Counters, WorkbenchModel } from '../model/workbenchModel';
import type { InterceptRule } from '../shared/helperProtocol';
import { describeRule } from '../intercept/interceptRules';
import { ModelTreeProvider } from './modelTreeView';

export interface FilterNode {
  kind:
    | 'status'
    | 'mode'
    | 'capture'
    | 'transport'
    | 'session'
    | 'error'
    | 'stale'
    | 'filterCounter'
    | 'counter'
    | 'rules'
    | 'rule';
  label: string;
  value: string;
  /** kind 'rule': the intercept rule and its index in nke.interceptRules */
  rule?: InterceptRule;
  index?: number;
}

const counterLabels: [keyof Counters, string][] = [
  ['dataChunks', 'Data chunks seen'],
  ['heldForPerson', 'Held for you'],
  ['autoPassed', 'Passed by rules'],
  ['rewritten', 'Rewritten by rules'],
  ['verdictsAllow', 'Allowed'],
  ['verdictsReplace', 'Allowed modified'],
  ['verdictsDrop', 'Dropped'],
  ['releasedByFilter', 'Released on deadline'],
  ['bytesIn', 'Bytes in'],
  ['bytesOut', 'Bytes out'],
  ['execs', 'Exec events'],
];

export class FilterTreeProvider extends ModelTreeProvider<FilterNode> {
  constructor(model: WorkbenchModel) {
    super(model, ['filter']);
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
    // Empty while never connected so the view shows its welcome content.
    if (element || (link.status === 'disconnected' && !link.filter)) return [];
    const nodes: FilterNode[] = [
      { kind: 'status', label: 'Status', value: link.status },
      { kind: 'mode', label: 'Mode', value: link.mode },
    ];
    if (link.rules) {
      const n = link.rules.intercept?.length ?? 0;
      nodes.push({
        kind: 'capture',
        label: 'Capture',
        value: `${link.rules.default ?? 'report'}${n ? ` + ${n} intercept rule${n > 1 ? 's' : ''}` : ''}`,
      });
    }
    const rules = link.rules?.intercept?.length ?? 0;
    if (rules) nodes.push({ kind: 'rules', label: 'Intercept rules', value: String(rules) });
    if (link.staleReason) nodes.push({ kind: 'stale', label: 'Stale', value: link.staleReason });
    const f = link.filter;
    if (f) {
      nodes.push({ kind: 'transport', label: 'Transport', value: f.transport });
      if (f.sessionId) nodes.push({ kind: 'session', label: 'Session', value: f.sessionId });
      if (f.error) {
        nodes.push({ kind: 'error', label: 'Error', value: `${f.error.code}: ${f.error.message}` });
      }
      // The filter's own count of verdicts and releases it skipped because
      // their chunk was already released (deadline): answers that came too late.
      const stale = f.state?.staleEntries;
      if (stale !== undefined) {
        nodes.push({ kind: 'filterCounter', label: 'Late answers skipped', value: String(stale) });
      }
    }
    const c = this.model.counters;
    for (const [key, label] of counterLabels) nodes.push({ kind: 'counter', label, value: String(c[key]) });
    return nodes;
  }

  getTreeItem(n: FilterNode): vscode.TreeItem {
    const item = new vscode.TreeItem(
      n.label,
      n.kind === 'rules' ? vscode.TreeItemCollapsibleState.Expanded : vscode.TreeItemCollapsibleState.None,
    );
    if (n.kind === 'rule' || n.kind === 'rules') {
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
    item.description = n.value;
    item.tooltip =
      n.kind === 'filterCounter'
        ? `${n.label}: ${n.value} (stale entries: verdicts and releases the filter skipped, their chunk was already released at its deadline)`
        : `${n.label}: ${n.value}`;
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
