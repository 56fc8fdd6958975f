import { useEffect, useState } from "preact/hooks";
import { Device } from "../pkg/hearth_web.js";
import { browserName, sentence } from "./format";

export function Login(props: { onDevice(d: Device): void; error: string }) {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [token, setToken] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(props.error);
  useEffect(() => setError(props.error), [props.error]);

  async function go(register: boolean, e?: Event) {
    e?.preventDefault();
    if (!username || !password) {
      setError("Enter a username and a password.");
      return;
    }
    setBusy(true);
    setError("");
    try {
      const name = browserName(navigator.userAgent);
      const device = register
        ? await Device.register(location.origin, username, password, token || undefined, name)
        : await Device.login(location.origin, username, password, name);
      props.onDevice(device);
    } catch (err) {
      setError(sentence(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <form class="login" onSubmit={(e) => go(false, e)}>
      <h1>Hearth</h1>
      <p class="muted">End-to-end encrypted chat on your organisation's own server.</p>
      <label>
        Username
        <input
          id="username"
          autocomplete="username"
          value={username}
          onInput={(e) => setUsername(e.currentTarget.value)}
        />
      </label>
      <label>
        Password
        <input
          id="password"
          type="password"
          autocomplete="current-password"
          value={password}
          onInput={(e) => setPassword(e.currentTarget.value)}
        />
      </label>
      <details>
        <summary>Registering with a token?</summary>
        <label>
          Registration token (from your hearth's administrator)
          <input
            id="registration-token"
            autocomplete="off"
            value={token}
            onInput={(e) => setToken(e.currentTarget.value)}
          />
        </label>
      </details>
      {error && <p class="error" role="alert">{error}</p>}
      <div class="row">
        <button id="login" type="submit" disabled={busy}>Log in</button>
        <button id="register" type="button" disabled={busy} onClick={() => go(true)}>
          Create account
        </button>
      </div>
    </form>
  );
}
