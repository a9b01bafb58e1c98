//! The browser tests' harness: `vodsource serve` on a fresh data folder, headless Chromium
//! (Debian's, through playwright-core) driving a script of `web/e2e`, and what the scripts
//! print.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{serve_on_any_port, until, BIN, LOG_WITH_ADDRESS};

pub const SECRET: &str = "browser-test-secret-0123456789-0123456789";

pub struct Server {
    pub child: Child,
    pub data: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

pub fn vodsource(data: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("--data-dir")
        .arg(data)
        .env("VODSOURCE_JWT_SECRET", SECRET)
        .env("VODSOURCE_LAKE_FLUSH_SECS", "1")
        .env("VODSOURCE_LOG", "warn");
    command
}

/// `vodsource serve`, with authentication or without (loopback only), on a port of its own
/// choosing: the child and its base URL.
pub fn serve(data: &Path, auth: bool) -> (Child, String) {
    let mut command = vodsource(data);
    if !auth {
        command.env_remove("VODSOURCE_JWT_SECRET");
    }
    command
        .env("VODSOURCE_LOG", LOG_WITH_ADDRESS)
        .args(["--log-json", "serve", "--listen", "127.0.0.1:0"]);
    serve_on_any_port(command)
}

pub fn token(data: &Path, sub: &str, role: &str) -> String {
    let output = vodsource(data)
        .args(["token", "--sub", sub, "--role", role])
        .output()
        .expect("token");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

pub fn sql(data: &Path, query: &str) -> String {
    let output = vodsource(data)
        .args(["qoe", "query", "--format", "csv", query])
        .output()
        .expect("qoe query runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `command` to its end, killing it after `within`.
pub fn output_within(mut command: Command, within: Duration) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs (install Node.js)");
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap_or_default();
            panic!(
                "the browser run took over {within:?}: {}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// What each browser run needs: Chromium, playwright-core, and a `vodsource serve` answering.
pub struct Setup {
    pub server: Server,
    pub base: String,
    pub chromium: String,
    pub web: PathBuf,
    pub client: reqwest::Client,
}

pub async fn start(auth: bool) -> Setup {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "no Chromium at {chromium}: install it with `scripts/services.sh start browser`"
    );
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
    assert!(
        web.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run `npm ci` in {} (scripts/services.sh start browser does)",
        web.display()
    );
    let data = std::env::temp_dir().join(format!("vodsource-web-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&data).expect("data dir");
    let (child, base) = serve(&data, auth);
    let server = Server { child, data };
    let client = reqwest::Client::new();
    until("the server answers", Duration::from_secs(30), async || {
        let r = client.get(format!("{base}/v1/health/live")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    Setup {
        server,
        base,
        chromium,
        web,
        client,
    }
}

/// Runs `web/e2e/<script>` with `env` to its end: the JSON line it printed last, which must
/// say it succeeded.
pub fn drive(setup: &Setup, script: &str, env: &[(&str, &std::ffi::OsStr)]) -> Value {
    let mut driver = Command::new("node");
    driver
        .arg(setup.web.join("e2e").join(script))
        .env("BASE", &setup.base)
        .env("CHROMIUM", &setup.chromium);
    for (name, value) in env {
        driver.env(name, value);
    }
    let output = output_within(driver, Duration::from_secs(400));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let seen: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no result from the browser run: {stdout}\n{stderr}"));
    assert!(
        output.status.success() && seen["error"].is_null(),
        "the browser run failed: {seen:#}\n{stderr}"
    );
    eprintln!("what the browser saw: {seen}");
    seen
}
