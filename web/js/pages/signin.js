import { html, useState } from '../html.js';
import { ErrorBox } from '../components.js';

export function SignIn({ session }) {
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await session.signIn(username.trim(), password);
    } catch (e) {
      // a refused login is not an ended session: say what the server said ("Invalid username or password")
      setError(e?.status === 401 ? new Error(e.message) : e);
      setBusy(false);
    }
  };
  return html`<section class="signin">
    <form id="sign-in" onSubmit=${submit}>
      <h1>OpsConductor</h1>
      <p class="muted">Sign in to watch and run jobs.</p>
      ${session.endedBecause && html`<p class="notice" id="session-ended">${session.endedBecause}</p>`}
      <label>Username <input id="username" name="username" autocomplete="username" required
        value=${username} onInput=${(e) => setUsername(e.target.value)} /></label>
      <label>Password <input id="password" name="password" type="password" autocomplete="current-password" required
        value=${password} onInput=${(e) => setPassword(e.target.value)} /></label>
      <${ErrorBox} error=${error} />
      <button type="submit" class="primary" disabled=${busy}>${busy ? 'Signing in…' : 'Sign in'}</button>
    </form>
  </section>`;
}
