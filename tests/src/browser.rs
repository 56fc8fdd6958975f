//! A real browser for the web app's tests: Debian's chromium, headless, driven over WebDriver by
//! its chromedriver (both installed by `.ci/run`; browser downloads are not possible here).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

/// How long a page may take to show what a step waits for (a bound for failure, not a pace).
pub const PAGE_WAIT: Duration = Duration::from_secs(60);

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One headless chromium with its own profile, behind its own chromedriver.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a browser with a fresh profile and a window of `width`×`height`.
    pub async fn start(width: u32, height: u32) -> anyhow::Result<Self> {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            anyhow::ensure!(
                Path::new(tool).exists(),
                "{tool} is missing: install Debian's chromium and chromium-driver (.ci/run does)"
            );
        }
        let port = crate::free_port();
        // Its own process group, so that dropping the browser ends chromium too.
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let profile = tempfile::tempdir()?;
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                // Root in a sandboxed container, no GPU, and no calls home (this machine's
                // network is closed, and refused connections slow every start).
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
                // Notifications allowed, as a person would allow them at the prompt (headless
                // chromium has no prompt to click).
                "prefs": { "profile.default_content_setting_values.notifications": 1 },
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("an object literal")
        };
        let url = format!("http://127.0.0.1:{port}");
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(capabilities);
        // chromedriver takes a moment to listen: retry until it answers (or the bound passes).
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        let client = loop {
            match builder.connect(&url).await {
                Ok(client) => break client,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => anyhow::bail!("chromedriver did not start a browser: {e}"),
            }
        };
        Ok(Self {
            client,
            driver,
            _profile: profile,
        })
    }

    /// Waits until an element matching `css` contains `text`; its full text.
    pub async fn wait_text(&self, css: &str, text: &str) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        loop {
            let mut seen = Vec::new();
            for element in self.client.find_all(Locator::Css(css)).await? {
                if let Ok(t) = element.text().await {
                    if t.contains(text) {
                        return Ok(t);
                    }
                    seen.push(t);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let page = self
                    .client
                    .execute("return document.body.innerText", vec![])
                    .await?;
                anyhow::bail!("no {css} contains {text:?}; seen {seen:?}; the page says {page}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for an element matching `css`.
    pub async fn element(&self, css: &str) -> anyhow::Result<fantoccini::elements::Element> {
        Ok(self
            .client
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::Css(css))
            .await?)
    }

    /// Waits for an element matching `css`, then types `text` into it.
    pub async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        Ok(self.element(css).await?.send_keys(text).await?)
    }

    /// Waits for an element matching `css`, then clicks it.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        Ok(self.element(css).await?.click().await?)
    }

    /// Waits until an element matching `css` contains `text`, then clicks it.
    pub async fn click_text(&self, css: &str, text: &str) -> anyhow::Result<()> {
        self.wait_text(css, text).await?;
        for element in self.client.find_all(Locator::Css(css)).await? {
            if element.text().await?.contains(text) {
                return Ok(element.click().await?);
            }
        }
        anyhow::bail!("the {css} with {text:?} went away")
    }

    /// Opens the web app of the hearth at `url` and creates the account `name` (or, with
    /// `existing`, logs in to it as a new device); returns once the app shows the user.
    pub async fn sign_in(&self, url: &str, name: &str, existing: bool) -> anyhow::Result<()> {
        self.client.goto(url).await?;
        self.type_into("#username", name).await?;
        self.type_into("#password", "correct horse battery").await?;
        self.click(if existing { "#login" } else { "#register" })
            .await?;
        self.wait_text("aside header strong", &format!("@{name}:"))
            .await?;
        Ok(())
    }

    /// Types `text` into the open room's composer and sends it; returns once it shows.
    pub async fn send(&self, text: &str) -> anyhow::Result<()> {
        self.type_into("#composer", text).await?;
        self.click("#send").await?;
        self.wait_text(".line.own .text", text).await?;
        Ok(())
    }

    /// Saves a screenshot of the page as `target/screenshots/<name>.png`; its path.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, self.client.screenshot().await?)?;
        Ok(path)
    }
}

impl Browser {
    /// Hands `data` to the service worker registered for `origin` as a push message, the way
    /// chromium's own DevTools do (`ServiceWorker.deliverPushMessage`). The browser's vendor
    /// push service, which would carry it, cannot be reached from this machine.
    pub async fn deliver_push(&self, origin: &str, data: &str) -> anyhow::Result<()> {
        use anyhow::Context as _;
        use futures_util::{SinkExt as _, StreamExt as _};
        use tokio_tungstenite::tungstenite::Message;

        let address = self
            .client
            .capabilities()
            .and_then(|c| {
                c.get("goog:chromeOptions")?
                    .get("debuggerAddress")?
                    .as_str()
            })
            .context("chromedriver names no DevTools address")?
            .to_owned();
        let targets: serde_json::Value = reqwest::get(format!("http://{address}/json/list"))
            .await?
            .json()
            .await?;
        let page = targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .context("the browser has no page to talk to")?;
        let (mut devtools, _) = tokio_tungstenite::connect_async(page).await?;
        let mut call = async |id: u64, method: &str, params: serde_json::Value| {
            let request = serde_json::json!({"id": id, "method": method, "params": params});
            devtools
                .send(Message::text(request.to_string()))
                .await
                .context("DevTools went away")?;
            let mut events = Vec::new();
            loop {
                let message = tokio::time::timeout(PAGE_WAIT, devtools.next())
                    .await
                    .context("DevTools did not answer")?
                    .context("DevTools closed")??;
                let Message::Text(text) = message else {
                    continue;
                };
                let value: serde_json::Value = serde_json::from_str(&text)?;
                if value["id"] == id {
                    anyhow::ensure!(value.get("error").is_none(), "{method}: {value}");
                    return anyhow::Ok(events);
                }
                events.push(value);
            }
        };
        // Enabling the domain reports the registrations that exist; the one for `origin` is
        // among the events that come before the answer or right after it.
        let mut events = call(1, "ServiceWorker.enable", serde_json::json!({})).await?;
        events.extend(call(2, "ServiceWorker.stopAllWorkers", serde_json::json!({})).await?);
        let registration = events
            .iter()
            .rev()
            .filter(|e| e["method"] == "ServiceWorker.workerRegistrationUpdated")
            .flat_map(|e| {
                e["params"]["registrations"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter(|r| {
                r["isDeleted"] == false
                    && r["scopeURL"]
                        .as_str()
                        .is_some_and(|s| s.starts_with(origin))
            })
            .filter_map(|r| r["registrationId"].as_str().map(str::to_owned))
            .next()
            .with_context(|| format!("no service worker is registered for {origin}: {events:?}"))?;
        call(
            3,
            "ServiceWorker.deliverPushMessage",
            serde_json::json!({"origin": origin, "registrationId": registration, "data": data}),
        )
        .await?;
        Ok(())
    }

    /// The notifications the app's service worker shows, as `[title, body, tag]` (the page must
    /// be on the app's origin).
    pub async fn notifications(&self) -> anyhow::Result<Vec<[String; 3]>> {
        let shown = self
            .client
            .execute(
                "return navigator.serviceWorker.getRegistration()
                   .then(r => r ? r.getNotifications() : [])
                   .then(ns => ns.map(n => [n.title, n.body, n.tag]))",
                vec![],
            )
            .await?;
        Ok(serde_json::from_value(shown)?)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The browser goes with its driver's process group (drop cannot await a polite close).
        #[allow(unsafe_code)]
        // SAFETY: kill(2) on the group this browser started; no memory is touched.
        unsafe {
            libc::kill(-(self.driver.id() as i32), libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}
