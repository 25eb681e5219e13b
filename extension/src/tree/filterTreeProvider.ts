// The Filter view: connection state, mode, ABI version and the filter's counters.
import * as vscode from 'vscode';
import type { FilterCounters, WorkbenchModel } from '../model/workbenchModel';
import { ModelTreeProvider } from './modelTreeView';

export interface FilterNode {
  kind: 'status' | 'mode' | 'abi' | 'counter';
  label: string;
  value: string;
}

const counterLabels: Record<keyof FilterCounters, string> = {
  deferred: 'Deferred',
  passed: 'Passed',
  dropped: 'Dropped',
  injected: 'Re-injected',
  expired: 'Released on deadline',
  poolExhausted: 'Passed (buffer pool full)',
};

export class FilterTreeProvider extends ModelTreeProvider<FilterNode> {
  constructor(model: WorkbenchModel) {
    super(model, ['filter']);
  }

  getChildren(element?: FilterNode): FilterNode[] {
    // Empty while disconnected so the view shows its welcome content.
    if (element || this.model.filter.status === 'disconnected') return [];
    const f = this.model.filter;
    const nodes: FilterNode[] = [
      { kind: 'status', label: 'Status', value: f.status },
      { kind: 'mode', label: 'Mode', value: f.mode },
    ];
    if (f.abiVersion !== undefined) {
      nodes.push({ kind: 'abi', label: 'ABI version', value: String(f.abiVersion) });
    }
    for (const [key, label] of Object.entries(counterLabels) as [keyof FilterCounters, string][]) {
      nodes.push({ kind: 'counter', label, value: String(f.counters[key]) });
    }
    return nodes;
  }

  getTreeItem(n: FilterNode): vscode.TreeItem {
    const item = new vscode.TreeItem(n.label);
    item.description = n.value;
    item.contextValue = `filter.${n.kind}`;
    if (n.kind === 'status') {
      item.iconPath = new vscode.ThemeIcon(n.value === 'paused' ? 'debug-pause' : 'plug');
    }
    return item;
  }
}
