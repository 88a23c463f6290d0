// A new job: its actions (commands or scripts), its targets, and optionally a cron schedule.
import { html, useState } from '../html.js';
import { ErrorBox } from '../components.js';
import { TargetPicker } from '../targetpicker.js';
import { navigate } from '../router.js';

const blank = () => ({ actionType: 'command', actionName: '', text: '', timeout: '', continueOnError: false });

export function NewJobPage({ session }) {
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [actions, setActions] = useState([blank()]);
  const [targetIds, setTargetIds] = useState([]);
  const [cron, setCron] = useState('');
  const [timezone, setTimezone] = useState('UTC');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  if (!session.canWrite) {
    return html`<section class="page"><h1>New job</h1><p>Your role (${session.user.role}) can read jobs but not create them.</p></section>`;
  }
  const change = (i, key, value) => setActions(actions.map((a, j) => (j === i ? { ...a, [key]: value } : a)));
  const submit = async (event) => {
    event.preventDefault();
    const body = {
      name: name.trim(),
      jobType: actions.every((a) => a.actionType === 'script') ? 'script' : 'command',
      actions: actions.map((a, i) => {
        const action = {
          actionType: a.actionType,
          actionName: a.actionName.trim() || `step-${i + 1}`,
          actionParameters: a.actionType === 'command' ? { command: a.text } : { script: a.text },
          continueOnError: a.continueOnError,
        };
        if (a.timeout.trim()) action.timeoutSeconds = Number(a.timeout);
        return action;
      }),
      targetIds,
    };
    if (description.trim()) body.description = description.trim();
    if (cron.trim()) body.schedule = { cron: cron.trim(), timezone: timezone.trim() || 'UTC' };
    setBusy(true);
    setError(null);
    try {
      const job = await session.client.jobs.create(body);
      navigate(`#/jobs/${job.jobSerial}`);
    } catch (e) {
      setError(e);
      setBusy(false);
    }
  };
  return html`<section class="page" id="new-job-page"><h1>New job</h1>
    <form class="panel" id="job-form" onSubmit=${submit}>
      <div class="grid-form">
        <label>Name <input id="job-name" required maxlength="255" value=${name} onInput=${(e) => setName(e.target.value)} /></label>
        <label>Description <input id="job-description" value=${description}
          onInput=${(e) => setDescription(e.target.value)} /></label>
      </div>
      <fieldset><legend>Actions, in order</legend>
        ${actions.map((a, i) => html`<div class="action-edit" key=${i}>
          <div class="grid-form">
            <label>Type <select name="action-type" value=${a.actionType} onChange=${(e) => change(i, 'actionType', e.target.value)}>
              <option value="command">command</option><option value="script">script</option></select></label>
            <label>Name <input name="action-name" placeholder=${`step-${i + 1}`} value=${a.actionName}
              onInput=${(e) => change(i, 'actionName', e.target.value)} /></label>
            <label>Timeout (s) <input name="action-timeout" inputmode="decimal" placeholder="server default" value=${a.timeout}
              onInput=${(e) => change(i, 'timeout', e.target.value)} /></label>
            <label class="radio"><input type="checkbox" checked=${a.continueOnError}
              onChange=${(e) => change(i, 'continueOnError', e.target.checked)} /> continue on error</label>
          </div>
          <label>${a.actionType === 'command' ? 'Command' : 'Script'}
            <textarea name="action-text" required rows=${a.actionType === 'command' ? 2 : 6} spellcheck="false"
              placeholder=${a.actionType === 'command' ? 'uptime' : '#!/bin/sh\nset -e\n…'} value=${a.text}
              onInput=${(e) => change(i, 'text', e.target.value)}></textarea></label>
          ${actions.length > 1 && html`<button type="button" class="link" onClick=${() => setActions(actions.filter((_, j) => j !== i))}>
            Remove this action</button>`}
        </div>`)}
        <button type="button" id="add-action" onClick=${() => setActions([...actions, blank()])}>Add an action</button>
      </fieldset>
      <fieldset><legend>Targets</legend>
        <${TargetPicker} session=${session} selected=${targetIds} onChange=${setTargetIds} /></fieldset>
      <fieldset><legend>Schedule (optional)</legend><div class="grid-form">
        <label>Cron <input id="job-cron" placeholder="*/5 * * * *" value=${cron} onInput=${(e) => setCron(e.target.value)} /></label>
        <label>Time zone <input id="job-timezone" value=${timezone} onInput=${(e) => setTimezone(e.target.value)} /></label>
      </div></fieldset>
      <${ErrorBox} error=${error} />
      <div class="actions"><button type="submit" class="primary" id="create-job" disabled=${busy}>
        ${busy ? 'Creating…' : 'Create job'}</button> <a href="#/jobs">Cancel</a></div>
    </form></section>`;
}
