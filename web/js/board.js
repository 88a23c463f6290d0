// The execution page's branch board: one cell per branch coloured by status, the counts and the progress bar.
// Plain DOM, no virtual DOM: a thousand cells are built in one fragment, and events change only the cells they
// name, once per animation frame (live.js hands events over in per-frame batches).
export const TERMINAL = new Set(['completed', 'failed', 'timed_out', 'cancelled', 'skipped']);
export const ORDER = ['queued', 'running', 'completed', 'failed', 'timed_out', 'cancelled', 'skipped'];
const LABELLED_UP_TO = 200; // above this many branches cells are small squares without their number

export class BranchBoard {
  /** grid, counts, bar: elements the board owns. onSelect(branch), onBranch(branch): a branch changed. */
  constructor({ grid, counts, bar, barLabel, onSelect = () => {}, onBranch = () => {} }) {
    Object.assign(this, { grid, counts, bar, barLabel, onSelect, onBranch });
    this.branches = [];
    this.cells = [];
    this.index = new Map();
    this.tally = {};
    this.selected = -1;
    this.metrics = { builtMs: 0, completedApplied: 0, firstCompletedAt: null, lastCompletedApplied: null,
      maxFlushMs: 0, maxLagMs: 0, flushes: 0, lastCompletedArrival: null };
    grid.addEventListener('click', (event) => {
      const cell = event.target.closest('.cell');
      if (cell) this.select(Number(cell.dataset.i));
    });
    grid.addEventListener('mouseover', (event) => { // titles on demand: none are built for cells never pointed at
      const cell = event.target.closest('.cell');
      if (cell && !cell.title) {
        const b = this.branches[Number(cell.dataset.i)];
        cell.title = `${b.branchSerial} · ${b.targetSerialRef} · ${b.status.replace('_', ' ')}`
          + `${b.exitCode !== null && b.exitCode !== undefined ? ` · exit ${b.exitCode}` : ''}`;
      }
    });
  }

  /** Build every cell from the execution's branches (a snapshot). */
  load(branches) {
    const started = performance.now();
    this.branches = branches.map((b) => ({ ...b }));
    this.index = new Map(this.branches.map((b, i) => [b.branchSerial, i]));
    this.tally = Object.fromEntries(ORDER.map((s) => [s, 0]));
    const labelled = branches.length <= LABELLED_UP_TO;
    const fragment = document.createDocumentFragment();
    this.cells = this.branches.map((b, i) => {
      this.tally[b.status] = (this.tally[b.status] ?? 0) + 1;
      const cell = document.createElement('button');
      cell.type = 'button';
      cell.className = `cell s-${b.status}`;
      cell.dataset.i = String(i);
      cell.dataset.serial = b.branchSerial;
      cell.setAttribute('aria-label', `${b.branchSerial} ${b.status}`);
      if (labelled) cell.textContent = b.branchId;
      fragment.append(cell);
      return cell;
    });
    this.grid.classList.toggle('dense', !labelled);
    this.grid.replaceChildren(fragment);
    this._buildCounts();
    this._summary();
    this.metrics.builtMs = performance.now() - started;
  }

  /** Apply a batch of events (one animation frame's worth): returns the execution-level events among them. */
  apply(events) {
    const started = performance.now();
    const dirty = new Set();
    const executionEvents = [];
    let completed = 0;
    let oldest = Infinity;
    let newest = -Infinity;
    for (const event of events) {
      const d = event.data ?? {};
      if (event.type === 'branch_started' || event.type === 'branch_completed') {
        if (event.type === 'branch_completed') {
          completed += 1;
          if (this.metrics.firstCompletedAt === null) this.metrics.firstCompletedAt = event.receivedAt ?? started;
          oldest = Math.min(oldest, event.receivedAt ?? started);
          newest = Math.max(newest, event.receivedAt ?? started);
        }
        const i = this.index.get(d.branchSerial);
        if (i === undefined) continue;
        const b = this.branches[i];
        // a start replayed after the branch ended never takes it back; a completion always stands
        if (TERMINAL.has(b.status) && event.type === 'branch_started') continue;
        if (d.status && d.status !== b.status) {
          this.tally[b.status] -= 1;
          this.tally[d.status] = (this.tally[d.status] ?? 0) + 1;
        }
        Object.assign(b, pick(d));
        dirty.add(i);
      } else if (event.type !== 'branch_output') {
        executionEvents.push(event);
      }
    }
    for (const i of dirty) {
      const cell = this.cells[i];
      const b = this.branches[i];
      cell.className = `cell s-${b.status}${i === this.selected ? ' selected' : ''}`;
      cell.setAttribute('aria-label', `${b.branchSerial} ${b.status}`);
      cell.title = '';
    }
    if (dirty.size) {
      this._summary();
      if (this.selected >= 0 && dirty.has(this.selected)) this.onBranch(this.branches[this.selected]);
    }
    const done = performance.now();
    const m = this.metrics;
    m.flushes += 1;
    m.maxFlushMs = Math.max(m.maxFlushMs, done - started);
    if (completed) {
      m.completedApplied += completed;
      m.lastCompletedApplied = done;
      m.maxLagMs = Math.max(m.maxLagMs, done - oldest);
      m.lastCompletedArrival = Math.max(m.lastCompletedArrival ?? newest, newest);
    }
    return executionEvents;
  }

  select(i) {
    if (!(i >= 0 && i < this.cells.length)) return;
    if (this.selected >= 0) this.cells[this.selected]?.classList.remove('selected');
    this.selected = i;
    this.cells[i].classList.add('selected');
    this.onSelect(this.branches[i]);
  }

  selectSerial(serial) {
    const i = this.index.get(serial);
    if (i !== undefined) this.select(i);
    return i !== undefined;
  }

  _buildCounts() {
    this.countEls = {};
    const items = ORDER.map((status) => {
      const item = document.createElement('span');
      item.className = `count s-${status}`;
      item.dataset.status = status;
      const number = document.createElement('b');
      item.append(number, ` ${status.replace('_', ' ')}`);
      this.countEls[status] = { item, number };
      return item;
    });
    this.counts.replaceChildren(...items);
    this.segments = {};
    const parts = ORDER.filter((s) => s !== 'queued').map((status) => {
      const seg = document.createElement('span');
      seg.className = `seg s-${status}`;
      this.segments[status] = seg;
      return seg;
    });
    this.bar.replaceChildren(...parts);
  }

  _summary() {
    const total = this.branches.length || 1;
    let finished = 0;
    for (const status of ORDER) {
      const n = this.tally[status] ?? 0;
      const { item, number } = this.countEls[status];
      number.textContent = String(n);
      item.classList.toggle('zero', n === 0);
      if (TERMINAL.has(status)) finished += n;
      if (this.segments[status]) this.segments[status].style.width = `${(n / total) * 100}%`;
    }
    this.finished = finished;
    this.barLabel.textContent = `${finished} of ${this.branches.length} finished`;
    this.bar.setAttribute('aria-valuenow', String(finished));
    this.bar.setAttribute('aria-valuemax', String(this.branches.length));
  }
}

function pick(d) {
  const out = {};
  for (const key of ['status', 'exitCode', 'errorType', 'startedAt', 'completedAt', 'duration']) {
    if (d[key] !== undefined) out[key] = d[key];
  }
  return out;
}
