// An execution: one cell per branch coloured by status, the counts and a progress bar, all live from
// /ws/executions; a branch's output and steps one click away; Cancel and Retry failed for operators.
//
// The snapshot (GET by serial) and the stream (since=0: every event of the execution) start together; events
// that come before the snapshot wait for it, and the board never moves a branch back from an end state, so
// the two can overlap in any order. Timings are left on the page element (data-*) for the browser test.
import { html, Component, useEffect, useRef, useState } from '../html.js';
import { ErrorBox, Loading, Status, Time, useTick } from '../components.js';
import { BranchBoard, TERMINAL } from '../board.js';
import { subscribe } from '../live.js';
import { navigate } from '../router.js';
import { formatDuration, elapsed } from '../format.js';
import { BranchPanel } from './branch.js';

/** The board's elements, rendered once: the board changes them directly after that. */
class BoardView extends Component {
  shouldComponentUpdate() {
    return false;
  }

  componentDidMount() {
    this.props.onMount(this.elements);
  }

  render() {
    this.elements = {};
    const keep = (name) => (el) => { if (el) this.elements[name] = el; };
    return html`<div class="board">
      <div class="counts" ref=${keep('counts')}></div>
      <div class="progress"><div class="bar" role="progressbar" aria-valuemin="0" ref=${keep('bar')}></div>
        <span class="bar-label" id="progress-label" ref=${keep('barLabel')}></span></div>
      <div class="cells" id="cells" ref=${keep('grid')}></div>
    </div>`;
  }
}

function Facts({ e }) {
  const sel = e.targetSelector;
  const params = Object.entries(e.parameters ?? {});
  return html`<dl class="facts inline">
    <dt>Job</dt><dd><a href=${`#/jobs/${e.job.jobSerial}`}>${e.job.name}</a> <span class="muted">${e.job.jobSerial}</span></dd>
    <dt>Trigger</dt><dd>${e.trigger}</dd>
    <dt>Started</dt><dd><${Time} value=${e.startedAt} /></dd>
    <dt>Duration</dt><dd id="duration">${formatDuration(elapsed(e.startedAt, e.completedAt))}</dd>
    ${e.retryOf && html`<dt>Retry of</dt><dd><a class="serial" href=${`#/executions/${e.retryOf}`}>${e.retryOf}</a></dd>`}
    ${e.retries?.length > 0 && html`<dt>Retried by</dt><dd>${e.retries.map((r) => html`<a class="serial" href=${`#/executions/${r}`}>${r}</a> `)}</dd>`}
    ${(e.maxConcurrency || e.maxErrors) && html`<dt>Rollout</dt><dd>max concurrency ${e.maxConcurrency ?? '—'},
      max errors ${e.maxErrors ?? '—'}</dd>`}
    ${sel && html`<dt>Selector</dt><dd>${sel.tagsAll && html`every tag of <code>${sel.tagsAll.join(', ')}</code> `}
      ${sel.tagsAny && html`any tag of <code>${sel.tagsAny.join(', ')}</code> `}
      ${sel.name && html`name like <code>${sel.name}</code>`}</dd>`}
    ${params.length > 0 && html`<dt>Parameters</dt><dd>${params.map(([k, v]) => html`<code>${k}=${v}</code> `)}</dd>`}
  </dl>`;
}

export function ExecutionPage({ session, serial, route }) {
  const [execution, setExecution] = useState(null);
  const [error, setError] = useState(null);
  const [actionError, setActionError] = useState(null);
  const [busy, setBusy] = useState(null);
  const [confirming, setConfirming] = useState(false);
  const [selected, setSelected] = useState(route.query.branch ?? null);
  const [branchVersion, setBranchVersion] = useState(0);
  const [live, setLive] = useState('connecting');
  const [stopped, setStopped] = useState(null);
  const page = useRef(null);
  const board = useRef(null);
  const mounted = useRef(performance.now());
  useTick(execution && execution.status === 'running' ? 1000 : 60000);

  const onBoard = (elements) => {
    board.current = new BranchBoard({
      ...elements,
      onSelect: (b) => {
        setSelected(b.branchSerial);
        history.replaceState(null, '', `#/executions/${serial}?branch=${b.branchSerial}`);
      },
      onBranch: () => setBranchVersion((v) => v + 1),
    });
  };

  useEffect(() => {
    let loaded = false;
    let early = [];
    let sub = null;
    const el = page.current;
    const report = () => {
      const m = board.current.metrics;
      el.dataset.completedApplied = String(m.completedApplied);
      if (m.firstCompletedAt !== null) {
        el.dataset.burstMs = (m.lastCompletedApplied - m.firstCompletedAt).toFixed(1);
        el.dataset.arrivalMs = (m.lastCompletedArrival - m.firstCompletedAt).toFixed(1);
      }
      el.dataset.maxLagMs = m.maxLagMs.toFixed(1);
      el.dataset.maxFrameMs = m.maxFlushMs.toFixed(1);
      el.dataset.finished = String(board.current.finished);
    };
    const handle = (events) => {
      for (const event of board.current.apply(events)) {
        const d = event.data;
        if (event.type === 'execution_completed') {
          setExecution((e) => ({ ...e, status: d.status, completedAt: d.completedAt, stopReason: d.stopReason ?? e.stopReason }));
          sub?.close(); // nothing follows an execution's last event
          setLive('closed');
        } else if (event.type === 'rollout_stopped') {
          setStopped(d);
        }
      }
      report();
    };
    sub = subscribe(session, { executionSerial: serial, since: 0 }, (events) => {
      if (loaded) handle(events);
      else early.push(...events);
    }, (state) => setLive(state));
    session.client.executions.getBySerial(serial).then((e) => {
      const fetched = performance.now();
      board.current.load(e.branches);
      setExecution({ ...e, branches: undefined, branchCount: e.branches.length });
      loaded = true;
      if (TERMINAL.has(e.status)) { // finished: the snapshot is the whole story
        sub.close();
        setLive('closed');
      }
      if (early.length) handle(early);
      early = [];
      if (selected) board.current.selectSerial(selected);
      requestAnimationFrame(() => { // the frame the cells are painted in
        el.dataset.renderMs = (performance.now() - mounted.current).toFixed(1);
        el.dataset.fetchMs = (fetched - mounted.current).toFixed(1);
        el.dataset.buildMs = board.current.metrics.builtMs.toFixed(1);
        el.dataset.branches = String(e.branches.length);
        report();
      });
    }).catch((e) => {
      setError(e);
      sub.close();
    });
    return () => sub.close();
  }, [serial]);

  useEffect(() => { // the search box or a link named another branch of this execution
    const wanted = route.query.branch;
    if (wanted && wanted !== selected && board.current?.branches.length) board.current.selectSerial(wanted);
  }, [route.query.branch]);

  const act = async (name, call) => {
    setBusy(name);
    setActionError(null);
    try {
      return await call();
    } catch (e) {
      setActionError(e);
      return null;
    } finally {
      setBusy(null);
      setConfirming(false);
    }
  };
  const cancel = () => act('cancel', async () => {
    const e = await session.client.executions.cancel(serial);
    setExecution((x) => ({ ...x, status: e.status, completedAt: e.completedAt }));
  });
  const retry = () => act('retry', async () => {
    const e = await session.client.executions.retry(serial, { only: 'failed' });
    navigate(`#/executions/${e.executionSerial}`);
  });

  const running = execution?.status === 'running';
  const unfinishedBranches = execution && board.current
    ? board.current.branches.some((b) => b.status !== 'completed') : false;
  return html`<section class="page execution" id="execution" ref=${page} data-serial=${serial}
      data-status=${execution?.status ?? ''}>
    <div class="page-head"><h1>Execution <span class="serial">${serial}</span></h1>
      ${execution && html`<${Status} status=${execution.status} />`}
      <span class=${`live live-${live}`} id="live-state">${live === 'live' ? '● live' : live === 'closed' ? '' : live}</span>
      <span class="spacer"></span>
      ${session.canWrite && running && !confirming && html`<button type="button" class="danger" id="cancel"
        disabled=${busy !== null} onClick=${() => setConfirming(true)}>Cancel…</button>`}
      ${session.canWrite && running && confirming && html`<span class="confirm">Stop every queued and running branch?
        <button type="button" class="danger" id="confirm-cancel" disabled=${busy !== null} onClick=${cancel}>
          ${busy === 'cancel' ? 'Cancelling…' : 'Yes, cancel'}</button>
        <button type="button" onClick=${() => setConfirming(false)}>No</button></span>`}
      ${session.canWrite && execution && !running && unfinishedBranches && html`<button type="button" id="retry-failed"
        disabled=${busy !== null} onClick=${retry}>${busy === 'retry' ? 'Starting…' : 'Retry failed'}</button>`}
    </div>
    <${ErrorBox} error=${error} />
    <${ErrorBox} error=${actionError} onDismiss=${() => setActionError(null)} />
    ${!execution && !error && html`<${Loading} what=${`execution ${serial}`} />`}
    ${execution && html`<${Facts} e=${execution} />`}
    ${(stopped || execution?.stopReason) && html`<p class="notice" id="stop-reason">Rollout stopped:
      ${execution?.stopReason ?? `${stopped.errors} errors past max_errors ${stopped.maxErrors}; ${stopped.skipped} skipped`}</p>`}
    <div class=${`execution-body${selected ? ' with-branch' : ''}${error ? ' hidden' : ''}`}>
      <${BoardView} onMount=${onBoard} />
      ${selected && html`<${BranchPanel} key=${selected} session=${session} serial=${selected} executionSerial=${serial}
        version=${branchVersion} onClose=${() => {
          setSelected(null);
          history.replaceState(null, '', `#/executions/${serial}`);
        }} />`}
    </div>
  </section>`;
}
