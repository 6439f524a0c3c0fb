//! A real browser for the end-to-end tests: Debian's headless Chromium driven by Python
//! Playwright (`tests/browser/check_page.py`), loading one page and reporting every request,
//! failure, console error and WebSocket frame, the texts it waited for, and a screenshot.
//!
//! [`Browser::find`] gives `None` when Chromium or Playwright is missing: the test prints a
//! loud `SKIPPED` line and passes, unless `TUNNEL_REQUIRE_BROWSER=1` (as `.ci/run` sets it,
//! after installing both), in which case it fails.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// What a test wants the page to show: wait until the element `selector` contains `text`.
#[derive(Debug, Clone)]
pub struct Expect {
    /// A CSS selector.
    pub selector: String,
    /// Text the element must contain.
    pub text: String,
}

impl Expect {
    /// Waits for `selector` to contain `text`.
    pub fn text(selector: &str, text: &str) -> Self {
        Self {
            selector: selector.into(),
            text: text.into(),
        }
    }
}

/// What happened while the page loaded.
#[derive(Debug, Clone)]
pub struct PageReport {
    /// The whole report, as the script wrote it.
    pub raw: Value,
    /// Every request the page made.
    pub requests: Vec<String>,
    /// Requests that failed at the network level (`url: error`).
    pub failed_requests: Vec<String>,
    /// Responses with status 400 or more (`status url`).
    pub bad_responses: Vec<String>,
    /// Console errors and uncaught exceptions.
    pub errors: Vec<String>,
    /// The text of each expected element (`None`: no such element).
    pub texts: HashMap<String, Option<String>>,
    /// Expected elements that never showed their text.
    pub missing: Vec<String>,
    /// WebSocket frames the page received, by socket URL.
    pub websocket_frames: Vec<(String, Vec<String>)>,
    /// Where the screenshot is.
    pub screenshot: Option<PathBuf>,
}

impl PageReport {
    /// Nothing failed: no failed request, no response of 400 or more, no console error, every
    /// expected text shown, and the page loaded.
    pub fn is_clean(&self) -> bool {
        self.failed_requests.is_empty()
            && self.bad_responses.is_empty()
            && self.errors.is_empty()
            && self.missing.is_empty()
            && self.raw["loaded"] == true
    }
}

/// Chromium and Playwright, found on this machine.
#[derive(Debug, Clone)]
pub struct Browser {
    python: String,
    script: PathBuf,
}

fn require_browser() -> bool {
    std::env::var("TUNNEL_REQUIRE_BROWSER").is_ok_and(|v| v == "1")
}

impl Browser {
    /// The browser, or `None` (with a loud SKIPPED line) when Chromium or Playwright is
    /// missing. Panics instead when `TUNNEL_REQUIRE_BROWSER=1`.
    pub fn find(test: &str) -> Option<Self> {
        let chromium =
            std::env::var("TUNNEL_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/check_page.py");
        let has_playwright = std::process::Command::new(&python)
            .args(["-c", "import playwright.sync_api"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let missing = match (Path::new(&chromium).exists(), has_playwright) {
            (true, true) => return Some(Self { python, script }),
            (false, true) => format!("Chromium ({chromium})"),
            (true, false) => "Python Playwright".to_string(),
            (false, false) => format!("Chromium ({chromium}) and Python Playwright"),
        };
        let help = "apt-get install chromium; pip install playwright (see .ci/run)";
        if require_browser() {
            panic!("{test}: TUNNEL_REQUIRE_BROWSER=1 but {missing} is missing ({help})");
        }
        // Straight to the process's stderr: the test harness captures `eprintln!` of passing
        // tests, and this line must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED {test}: {missing} not installed ({help}) ***\n"
        );
        None
    }

    /// Loads `url`, waits for `expect`, takes a screenshot to `screenshot`, and reports.
    pub async fn check(&self, url: &str, expect: &[Expect], screenshot: &Path) -> PageReport {
        let spec = serde_json::json!({
            "url": url,
            "expect": expect
                .iter()
                .map(|e| serde_json::json!({ "selector": e.selector, "text": e.text }))
                .collect::<Vec<_>>(),
            "screenshot": screenshot,
            "timeout_ms": 40_000,
        });
        let raw = self.run(&self.script, &spec).await;
        Self::report(url, raw)
    }

    /// Runs another script of `tests/browser/` with `spec` on its stdin, the same way (one
    /// JSON object in, one out), for scenarios that drive a page through several steps.
    pub async fn run_script(&self, name: &str, spec: &Value) -> Value {
        let script = self.script.with_file_name(name);
        self.run(&script, spec).await
    }

    async fn run(&self, script: &Path, spec: &Value) -> Value {
        let mut child = tokio::process::Command::new(&self.python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 starts");
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(spec.to_string().as_bytes())
            .await
            .expect("spec written");
        drop(stdin);
        let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
            .await
            .expect("the browser finished within 180 s")
            .expect("the browser ran");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let raw: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "no report from the browser ({e}): status {:?}\nstdout: {stdout}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
        raw
    }

    fn report(url: &str, raw: Value) -> PageReport {
        let strings = |key: &str, f: &dyn Fn(&Value) -> String| -> Vec<String> {
            raw[key]
                .as_array()
                .map_or_else(Vec::new, |a| a.iter().map(f).collect())
        };
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let mut errors = strings("console_errors", &s);
        errors.extend(strings("page_errors", &s));
        if let Some(e) = raw["error"].as_str() {
            errors.push(e.to_string());
        }
        let report = PageReport {
            requests: strings("requests", &s),
            failed_requests: strings("failed_requests", &|v| {
                format!("{}: {}", s(&v["url"]), s(&v["error"]))
            }),
            bad_responses: strings("bad_responses", &|v| {
                format!("{} {}", v["status"], s(&v["url"]))
            }),
            errors,
            texts: raw["texts"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string)))
                        .collect()
                })
                .unwrap_or_default(),
            missing: strings("missing", &s),
            websocket_frames: raw["websockets"].as_array().map_or_else(Vec::new, |a| {
                a.iter()
                    .map(|w| {
                        let frames = w["received"]
                            .as_array()
                            .map_or_else(Vec::new, |f| f.iter().map(s).collect());
                        (s(&w["url"]), frames)
                    })
                    .collect()
            }),
            screenshot: raw["screenshot"].as_str().map(PathBuf::from),
            raw,
        };
        if let Some(shot) = &report.screenshot {
            // Uncaptured, so that the path is in the log of a passing run too.
            let _ = writeln!(std::io::stderr(), "screenshot of {url}: {}", shot.display());
        }
        report
    }
}
