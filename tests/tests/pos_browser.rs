//! The point-of-sale page in a real browser (issue 7): headless Chromium from Debian, driven by
//! ChromeDriver over the W3C WebDriver HTTP API, at a phone-sized viewport. The cashier opens
//! `/pos/shop` with a cashier token, types an amount on the keypad, charges, sees the QR code; the
//! customer's node pays the invoice the page shows, and the page turns to "Paid" by itself, with
//! no reload. Screenshots of both moments are saved in the target directory (paths printed).
//!
//! Needs `chromium` and `chromium-driver` (.ci/install-deps installs them); the test fails, saying
//! so, when they are missing.

use base64::Engine;
use ldk_node::lightning_invoice::Bolt11Invoice;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};
use till_tests::ldk::WAIT;
use till_tests::shop::{STORE, Shop};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A ChromeDriver process; killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Driver {
    for path in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            std::path::Path::new(path).exists(),
            "{path} is missing: install Debian's chromium and chromium-driver (.ci/install-deps)"
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting chromedriver");
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// A WebDriver session.
struct Browser {
    http: reqwest::Client,
    session: String,
}

impl Browser {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.session);
        let request = match method {
            "POST" => self.http.post(url).json(&body.unwrap_or(json!({}))),
            "DELETE" => self.http.delete(url),
            _ => self.http.get(url),
        };
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        if let Some(error) = answer["value"].get("error") {
            panic!(
                "WebDriver {method} {path}: {error}: {}",
                answer["value"]["message"]
            );
        }
        answer["value"].clone()
    }

    /// The element matching `css`, waiting up to [`WAIT`] for it to appear.
    async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let url = format!("{}/element", self.session);
            let answer: Value = self
                .http
                .post(url)
                .json(&json!({ "using": "css selector", "value": css }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if let Some(id) = answer["value"]
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(Value::as_str)
                && answer["value"].get("error").is_none()
            {
                return id.to_owned();
            }
            assert!(Instant::now() < deadline, "no element {css:?} appeared");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.call("POST", &format!("/element/{element}/click"), None)
            .await;
    }

    async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        self.call("GET", &format!("/element/{element}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn script(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.call("GET", "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let exe = std::env::current_exe().unwrap();
        let target = exe.ancestors().nth(3).unwrap().to_path_buf();
        let path = target.join(name);
        std::fs::write(&path, bytes).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }
}

async fn open_browser(driver: &Driver, profile: &std::path::Path) -> Browser {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http
        .get(format!("{}/status", driver.url))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "chromedriver never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let capabilities = json!({
        "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    format!("--user-data-dir={}", profile.display()),
                ],
                // A phone: 390 x 844 CSS pixels at 3x, with touch.
                "mobileEmulation": { "deviceMetrics": { "width": 390, "height": 844, "pixelRatio": 3.0, "touch": true } },
            },
        }},
    });
    let answer: Value = http
        .post(format!("{}/session", driver.url))
        .json(&capabilities)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = answer["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
        .to_owned();
    Browser {
        session: format!("{}/session/{session}", driver.url),
        http,
    }
}

#[test]
fn the_pos_page_takes_a_payment_and_shows_paid_without_a_reload() {
    let started = Instant::now();
    let shop = Shop::start(&[]);
    eprintln!("shop ready after {:?}", started.elapsed());
    let driver = start_driver();
    let profile = tempfile::tempdir().unwrap();
    let page = format!("{}/pos/{STORE}#token={}", shop.server.url(), shop.cashier);

    shop.runtime.block_on(async {
        let browser = open_browser(&driver, profile.path()).await;
        browser
            .call("POST", "/url", Some(json!({ "url": page })))
            .await;
        // The token left the address bar once stored.
        let url = browser.call("GET", "/url", None).await;
        assert!(!url.as_str().unwrap().contains("token"), "{url}");

        for key in ["2", "5", "0", "0"] {
            browser.click(&format!("#keypad button[data-key=\"{key}\"]")).await;
        }
        assert_eq!(browser.text("#amount-value").await, "2,500");
        let description = browser.find("#description").await;
        browser
            .call(
                "POST",
                &format!("/element/{description}/value"),
                Some(json!({ "text": "croissant" })),
            )
            .await;
        // A marker that a reload would wipe.
        browser.script("window.tillMarker = 'same page'; return null;").await;
        browser.click("#charge").await;

        browser.find("#qr svg").await;
        let qr_size = browser
            .script("const r = document.querySelector('#qr svg').getBoundingClientRect(); return [r.width, r.height];")
            .await;
        assert!(qr_size[0].as_f64().unwrap() >= 200.0, "the QR code is big enough to scan: {qr_size}");
        assert_eq!(browser.text("#status").await, "Waiting for payment");
        let bolt11 = browser
            .script("return document.getElementById('bolt11').value;")
            .await;
        let invoice = Bolt11Invoice::from_str(bolt11.as_str().unwrap()).expect("the page shows a BOLT11 invoice");
        assert_eq!(invoice.amount_milli_satoshis(), Some(2_500_000));
        browser.screenshot("pos-invoice.png").await;

        // The customer pays what the page shows; the page turns to Paid by itself.
        shop.customer.bolt11_payment().send(&invoice, None).unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if browser.text("#status").await == "Paid" {
                break;
            }
            assert!(Instant::now() < deadline, "the page never showed Paid");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let marker = browser.script("return window.tillMarker || null;").await;
        assert_eq!(marker, "same page", "the page was not reloaded");
        browser.screenshot("pos-paid.png").await;
        browser.call("DELETE", "", None).await;
    });
    eprintln!("done after {:?}", started.elapsed());
}
