//! A real browser for the dashboard tests: headless Chromium driven
//! through WebDriver (chromedriver, Debian `chromium-driver`), inside a
//! lab's steering namespace where the agent serves on loopback.
use std::{
    path::PathBuf,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{ClientBuilder, Locator};

use crate::{lab::Lab, wait_for};

pub const DRIVER_PORT: u16 = 9515;

/// chromedriver, killed when the test ends (its browser dies with it, and
/// the namespace's deletion kills whatever is left).
pub struct Driver(Child);

impl Driver {
    /// chromedriver in the lab's steering namespace, logging to the lab.
    pub fn start(lab: &Lab) -> Self {
        let child = lab
            .lb
            .command("chromedriver")
            .arg(format!("--port={DRIVER_PORT}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(lab.path("chromedriver.log")).unwrap(),
            ))
            .spawn()
            .expect("chromedriver (Debian chromium-driver; `cargo xtask setup` installs it)");
        Self(child)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How the browser looks at the page.
#[derive(Clone, Copy, Debug)]
pub struct View {
    pub width: u32,
    pub height: u32,
    /// The system asks for dark colours (`prefers-color-scheme: dark`).
    pub dark: bool,
}

/// A desktop window in light colours.
pub const DESKTOP: View = View {
    width: 1400,
    height: 1100,
    dark: false,
};

/// A phone's width (an iPhone 12 to 15 is 390 CSS px).
pub const PHONE: View = View {
    width: 390,
    height: 844,
    dark: false,
};

/// A headless Chromium session through the chromedriver on DRIVER_PORT.
pub async fn session(profile: PathBuf) -> anyhow::Result<fantoccini::Client> {
    session_with(profile, DESKTOP).await
}

pub async fn session_with(profile: PathBuf, view: View) -> anyhow::Result<fantoccini::Client> {
    std::fs::create_dir_all(&profile)?;
    // chromedriver needs a moment to listen.
    let ready = wait_for(Duration::from_secs(15), || {
        std::net::TcpStream::connect(("127.0.0.1", DRIVER_PORT))
            .ok()
            .map(|_| ())
    });
    anyhow::ensure!(
        ready.is_some(),
        "chromedriver did not listen on {DRIVER_PORT}"
    );
    let mut args = vec![
        "--headless".to_owned(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--hide-scrollbars".into(),
        format!("--window-size={},{}", view.width, view.height),
        format!("--user-data-dir={}", profile.display()),
    ];
    if view.dark {
        // What an operator's dark system setting gives web pages.
        args.push("--blink-settings=preferredColorScheme=0".into());
        args.push("--force-dark-mode".into());
    }
    let mut options = serde_json::json!({ "binary": "/usr/bin/chromium", "args": args });
    if view.width < 500 {
        // A headless window is at least 500 px wide: narrower is a
        // device's metrics, as Chrome's device toolbar gives them.
        options["mobileEmulation"] = serde_json::json!({
            "deviceMetrics": { "width": view.width, "height": view.height, "pixelRatio": 1.0 },
        });
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), options);
    Ok(
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{DRIVER_PORT}"))
            .await?,
    )
}

pub async fn text(c: &fantoccini::Client, css: &str) -> anyhow::Result<String> {
    Ok(fresh(|| async { c.find(Locator::Css(css)).await?.text().await }).await?)
}

/// The attribute `name` of the element at `css`.
pub async fn attr(c: &fantoccini::Client, css: &str, name: &str) -> anyhow::Result<Option<String>> {
    Ok(fresh(|| async { c.find(Locator::Css(css)).await?.attr(name).await }).await?)
}

/// Runs `read` (a find, then a read of what it found) again when the
/// element went stale in between: the dashboard re-renders live, so an
/// element found can be replaced before it is read. A few times at most;
/// any other error is returned at once.
async fn fresh<T, F, Fut>(mut read: F) -> Result<T, fantoccini::error::CmdError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, fantoccini::error::CmdError>>,
{
    let mut attempt = 1;
    loop {
        match read().await {
            Err(e) if attempt < 5 && e.to_string().contains("stale element") => attempt += 1,
            other => return other,
        }
    }
}

/// Polls `f` every 200 ms until it gives Some or `limit` passes.
pub async fn until<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// `found`, or an error with what the page shows at `css`.
pub async fn or_page<T>(
    found: Option<T>,
    c: &fantoccini::Client,
    css: &str,
    what: &str,
) -> anyhow::Result<T> {
    match found {
        Some(v) => Ok(v),
        None => anyhow::bail!("{what}: {:?}", text(c, css).await),
    }
}

/// Clicks `button` and accepts the confirmation, first giving `token` if
/// the page asks for it. Returns the confirmation's question.
pub async fn click_confirmed(
    c: &fantoccini::Client,
    button: &str,
    token: &str,
) -> anyhow::Result<String> {
    c.find(Locator::Css(button)).await?.click().await?;
    let mut asked = c.get_alert_text().await?;
    if asked.contains("token") {
        c.send_alert_text(token).await?;
        c.accept_alert().await?;
        asked = c.get_alert_text().await?;
    }
    c.accept_alert().await?;
    Ok(asked)
}

/// Runs `drive` in the lab's steering namespace on a fresh runtime, and
/// panics with chromedriver's log if it fails.
pub fn in_lab<F, Fut>(lab: &Lab, drive: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let result = lab.lb.enter(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(drive())
    });
    result.expect("enter namespace").unwrap_or_else(|e| {
        panic!(
            "{e:#}\nchromedriver log:\n{}",
            std::fs::read_to_string(lab.path("chromedriver.log")).unwrap_or_default()
        )
    });
}
