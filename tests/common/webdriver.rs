//! A small W3C WebDriver client for the status page tests: starts Debian's
//! `chromedriver` on a loopback port, opens one headless Chromium session, and speaks
//! plain HTTP/1.1 JSON to it (no client crate, no runtime).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::DEADLINE;

/// The WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The browser and its driver, found on `PATH` (or at Debian's paths).
pub struct Tools {
    pub chromium: String,
    pub chromedriver: String,
}

fn find(names: &[&str]) -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in
            std::env::split_paths(&path).chain(["/usr/bin".into(), "/usr/lib/chromium".into()])
        {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate.display().to_string());
            }
        }
    }
    None
}

/// Chromium and chromedriver, or `None` with a message saying the test is skipped (a
/// failure when `GEOLB_REQUIRE_TOOLS=1`).
pub fn tools(test: &str) -> Option<Tools> {
    let chromium = find(&["chromium", "chromium-browser", "google-chrome"]);
    let chromedriver = find(&["chromedriver"]);
    match (chromium, chromedriver) {
        (Some(chromium), Some(chromedriver)) => Some(Tools {
            chromium,
            chromedriver,
        }),
        (chromium, chromedriver) => {
            let missing: Vec<&str> = [("chromium", chromium), ("chromedriver", chromedriver)]
                .into_iter()
                .filter(|(_, found)| found.is_none())
                .map(|(name, _)| name)
                .collect();
            let message = format!(
                "{test}: skipped: {} not found (apt-get install chromium chromium-driver)",
                missing.join(" and ")
            );
            if std::env::var("GEOLB_REQUIRE_TOOLS").as_deref() == Ok("1") {
                panic!("{message}, and GEOLB_REQUIRE_TOOLS=1");
            }
            eprintln!("{message}");
            None
        }
    }
}

/// One headless Chromium session through its own chromedriver.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
}

impl Browser {
    pub fn start(tools: &Tools) -> Browser {
        // A free port for the driver (it has no "port 0" mode that reports back).
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut driver = Command::new(&tools.chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chromedriver");
        // Drain its stderr so it never blocks on a full pipe.
        if let Some(stderr) = driver.stderr.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if std::env::var_os("GEOLB_WEBDRIVER_LOG").is_some() {
                        eprintln!("chromedriver: {line}");
                    }
                }
            });
        }
        // Owned by a Browser from here on, so a failure below still stops the driver.
        let mut browser = Browser {
            driver,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            session: String::new(),
        };
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok((200, status)) = request(browser.addr, "GET", "/status", None)
                && status["value"]["ready"] == true
            {
                break;
            }
            if let Ok(Some(exit)) = browser.driver.try_wait() {
                panic!("chromedriver exited early ({exit})");
            }
            assert!(Instant::now() < deadline, "chromedriver never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": tools.chromium,
                    // --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1400,1400",
                             "--no-first-run", "--no-default-browser-check"],
                },
            }},
        });
        let created = browser.call("POST", "/session", Some(capabilities));
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        browser
    }

    /// A WebDriver command; panics on an error answer.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = request(self.addr, method, path, body.as_ref())
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        assert_eq!(status, 200, "webdriver {method} {path}: {answer}");
        answer["value"].clone()
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body)
    }

    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub fn js(&self, script: &str, args: Value) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Polls `script` until it returns something other than `null`/`false`.
    pub fn wait_js(&self, what: &str, script: &str, args: Value) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let value = self.js(script, args.clone());
            if !value.is_null() && value != false {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the page says:\n{}",
                self.js(
                    "return document.body ? document.body.innerText : ''",
                    json!([])
                )
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The first element matching `css`, waiting for it to appear.
    pub fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let path = format!("/session/{}/element", self.session);
            let body = json!({ "using": "css selector", "value": css });
            if let Ok((200, found)) = request(self.addr, "POST", &path, Some(&body))
                && let Some(id) = found["value"][ELEMENT].as_str()
            {
                return id.to_string();
            }
            assert!(Instant::now() < deadline, "no element matches {css}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A command on the first element matching `css`. The page redraws its tables as it
    /// refreshes, so an element found may be replaced before the command reaches it:
    /// then it is found again (a stale element was not acted on).
    fn on_element(&self, css: &str, method: &str, command: &str, body: Option<Value>) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let id = self.find(css);
            let path = format!("/session/{}/element/{id}{command}", self.session);
            let (status, answer) = request(self.addr, method, &path, body.as_ref())
                .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
            if status == 200 {
                return answer["value"].clone();
            }
            assert!(
                answer["value"]["error"] == "stale element reference" && Instant::now() < deadline,
                "webdriver {method} {path}: {answer}"
            );
        }
    }

    /// Clicks the first element matching `css`, as a user would.
    pub fn click(&self, css: &str) {
        self.on_element(css, "POST", "/click", Some(json!({})));
    }

    /// Types `text` into the first element matching `css`, after clearing it.
    pub fn type_into(&self, css: &str, text: &str) {
        self.on_element(css, "POST", "/clear", Some(json!({})));
        self.on_element(css, "POST", "/value", Some(json!({ "text": text })));
    }

    /// The visible text of the first element matching `css`.
    pub fn text(&self, css: &str) -> String {
        self.on_element(css, "GET", "/text", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Sets the window's outer size.
    pub fn resize(&self, width: u32, height: u32) {
        self.session_call(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        );
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let encoded = self.session_call("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .expect("a base64 screenshot")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = request(self.addr, "DELETE", &path, None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One HTTP/1.1 request with `Connection: close`: the status and the JSON body.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    // chromedriver may keep the connection open: read the headers, then exactly the
    // body they announce.
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let payload = if head.contains("transfer-encoding: chunked") {
        let mut payload = Vec::new();
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                .map_err(std::io::Error::other)?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            payload.extend_from_slice(&chunk[..size]);
        }
        payload
    } else if let Some(length) = length {
        let mut payload = vec![0; length];
        reader.read_exact(&mut payload)?;
        payload
    } else {
        let mut payload = Vec::new();
        reader.read_to_end(&mut payload)?;
        payload
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
    Ok((status, value))
}
