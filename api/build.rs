//! The web app's JavaScript dependencies come from npm (`web/package.json`, pinned by
//! `web/package-lock.json`) and are embedded in the binary: when they are missing, `npm ci`
//! installs them once. Nothing is fetched at run time.

use std::path::Path;
use std::process::Command;

/// The npm files the binary embeds.
const VENDORED: [&str; 3] = [
    "node_modules/hls.js/dist/hls.min.js",
    "node_modules/tus-js-client/dist/tus.min.js",
    "node_modules/dashjs/dist/modern/umd/dash.mediaplayer.min.js",
];

fn main() {
    // Read when the script runs, not baked in when it is compiled: cargo reuses a compiled
    // build script for a checkout at another path that shares the target folder.
    let Some(manifest_dir) = std::env::var_os("CARGO_MANIFEST_DIR") else {
        panic!("cargo sets CARGO_MANIFEST_DIR for build scripts");
    };
    let web = Path::new(&manifest_dir).join("../web");
    println!("cargo:rerun-if-changed={}", web.join("package-lock.json").display());
    for file in VENDORED {
        println!("cargo:rerun-if-changed={}", web.join(file).display());
    }
    if VENDORED.iter().all(|file| web.join(file).is_file()) {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&web)
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => panic!(
            "`npm ci` in {} failed ({status}); the web app's JavaScript dependencies come from npm",
            web.display()
        ),
        Err(e) => panic!(
            "cannot run npm ({e}): install Node.js and npm (apt-get install nodejs npm) so that \
             `npm ci` in {} can fetch the web app's JavaScript dependencies",
            web.display()
        ),
    }
    for file in VENDORED {
        assert!(web.join(file).is_file(), "`npm ci` did not install {file}");
    }
}
