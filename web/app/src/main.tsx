import { render } from "preact";
import init from "../pkg/hearth_web.js";
import { App } from "./App";

// The wasm device first: the page cannot resume a session or encrypt without it.
init({ module_or_path: "/hearth_web_bg.wasm" }).then(
  () => render(<App />, document.getElementById("app")!),
  (e) => {
    document.getElementById("app")!.textContent =
      "This browser could not start the encrypted client (WebAssembly): " + String(e);
  },
);
