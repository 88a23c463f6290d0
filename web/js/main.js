// The monitor: sign-in, then the pages, all through the project's JS SDK (served at /sdk/).
import { html, render, useEffect, useState } from './html.js';
import { Session } from './session.js';
import { useRoute, navigate } from './router.js';
import { routeFor } from './serials.js';
import { SignIn } from './pages/signin.js';
import { Dashboard } from './pages/dashboard.js';
import { JobsPage } from './pages/jobs.js';
import { JobPage } from './pages/job.js';
import { NewJobPage } from './pages/newjob.js';
import { ExecutionPage } from './pages/execution.js';
import { TargetsPage, TargetPage } from './pages/targets.js';
import { SearchPage } from './pages/search.js';

function SearchBox() {
  const [text, setText] = useState('');
  const submit = (event) => {
    event.preventDefault();
    if (!text.trim()) return;
    navigate(routeFor(text));
    setText('');
  };
  return html`<form class="search" role="search" onSubmit=${submit}>
    <input id="serial-search" type="search" value=${text} onInput=${(e) => setText(e.target.value)}
      placeholder="Serial (J20260001.0001.0003, T20260001) or name" aria-label="Search by serial or name" />
  </form>`;
}

function Page({ session, route }) {
  const [first, second] = route.parts;
  const props = { session, route };
  switch (first) {
    case undefined: return html`<${Dashboard} ...${props} />`;
    case 'jobs':
      if (second === 'new') return html`<${NewJobPage} ...${props} />`;
      return second ? html`<${JobPage} key=${second} serial=${second} ...${props} />` : html`<${JobsPage} ...${props} />`;
    case 'executions':
      return html`<${ExecutionPage} key=${second} serial=${second} ...${props} />`;
    case 'targets':
      return second ? html`<${TargetPage} key=${second} targetRef=${second} ...${props} />` : html`<${TargetsPage} ...${props} />`;
    case 'search': return html`<${SearchPage} key=${route.query.q} ...${props} />`;
    default: return html`<section class="page"><h1>Not found</h1><p>No page at ${route.path}.</p>
      <p><a href="#/">Go to the dashboard</a></p></section>`;
  }
}

function App({ session }) {
  const route = useRoute();
  const [, setVersion] = useState(0);
  useEffect(() => {
    const changed = () => setVersion((v) => v + 1);
    session.addEventListener('change', changed);
    const visible = () => document.visibilityState === 'visible' && session.wake();
    document.addEventListener('visibilitychange', visible);
    return () => {
      session.removeEventListener('change', changed);
      document.removeEventListener('visibilitychange', visible);
    };
  }, []);
  if (!session.signedIn) return html`<${SignIn} session=${session} />`;
  const user = session.user;
  const here = route.parts[0] ?? '';
  const nav = (name, label) => html`<a href=${`#/${name}`} class=${here === name ? 'active' : ''}>${label}</a>`;
  return html`<header class="top">
      <a class="brand" href="#/">OpsConductor</a>
      <nav>${nav('', 'Dashboard')}${nav('jobs', 'Jobs')}${nav('targets', 'Targets')}</nav>
      <${SearchBox} />
      <span class="user" id="current-user">${user.username} <span class=${`role role-${user.role}`}>${user.role}</span></span>
      <button type="button" id="sign-out" class="link" onClick=${() => session.signOut()}>Sign out</button>
    </header>
    <main><${Page} session=${session} route=${route} /></main>`;
}

async function start() {
  const session = new Session();
  await session.restore();
  const root = document.getElementById('app');
  root.replaceChildren();
  render(html`<${App} session=${session} />`, root);
}

start();
