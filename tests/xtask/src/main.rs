//! `cargo xtask`: the one entry point developers and CI share.
//!
//! - `cargo xtask ci`: everything CI checks, in order, installing what is missing (the wasm
//!   target), each fuzz target for 20 s included. Exits non-zero on the first failure.
//! - `cargo xtask run`: the server with zero configuration (`meshwork-server serve`, release).
//! - `cargo xtask bench`: the criterion benchmarks whose numbers go in `docs/benchmarks.md`.
//! - `cargo xtask fuzz [--seconds N] [TARGET...]`: the coverage-guided fuzz targets of
//!   `tests/fuzz` (libFuzzer, instrumented with stable rustc flags), each for N seconds
//!   (default 60) from its corpus in the repository; a crash fails it and leaves the input in
//!   `<target dir>/fuzz/artifacts/`.
//!
//! Build output goes to `$CARGO_TARGET_DIR`, or, when that is unset, to a cache directory
//! outside the checkout (`$XDG_CACHE_HOME/meshwork/target`, else `~/.cache/meshwork/target`), so
//! fresh clones reuse earlier builds.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

/// Crates that must never appear in the normal dependency tree of the sans-IO core.
const IO_CRATES: &[&str] = &[
    "tokio",
    "mio",
    "quinn",
    "axum",
    "hyper",
    "webrtc",
    "sled",
    "redb",
    "socket2",
    "tracing-subscriber",
];
/// The sans-IO crates.
const CORE_CRATES: &[&str] = &["meshwork-protocol", "meshwork-session"];
const WASM_TARGET: &str = "wasm32-unknown-unknown";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench(&args[1..]),
        Some("fuzz") => fuzz_command(&args[1..]),
        // `cargo xtask run -- --flag` and `cargo xtask run --flag` both work.
        Some("run") => serve(args.get(1..).map_or(&[][..], |a| {
            a.strip_prefix(&["--".to_owned()][..]).unwrap_or(a)
        })),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci | run [serve flags] | bench [criterion args] | fuzz [--seconds N] [target...]>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    // tests/xtask → repo root. `cargo run` sets CARGO_MANIFEST_DIR at run time; the value baked
    // in at compile time may name another checkout (build output is shared between checkouts
    // through ~/.cache/meshwork/target).
    let manifest = env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn target_dir() -> PathBuf {
    if let Some(dir) = env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let cache = env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    cache.map_or_else(
        || workspace_root().join("target"),
        |c| c.join("meshwork").join("target"),
    )
}

fn cargo() -> Command {
    let mut c = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // No incremental state in CI builds: it only grows the cache (tens of GB over time) and a
    // from-scratch CI run does not benefit from it.
    c.current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target_dir())
        .env("CARGO_INCREMENTAL", "0");
    c
}

fn run(step: &str, cmd: &mut Command) -> Result<(), String> {
    eprintln!("\n==> {step}");
    let started = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("{step}: cannot start: {e}"))?;
    eprintln!(
        "<== {step}: {status} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    if status.success() {
        Ok(())
    } else {
        Err(format!("{step} failed ({status})"))
    }
}

fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn has_program(name: &str, arg: &str) -> bool {
    Command::new(name)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ensure_wasm_target() -> Result<(), String> {
    let installed = output(Command::new("rustup").current_dir(workspace_root()).args([
        "target",
        "list",
        "--installed",
    ]))?;
    if installed.lines().any(|l| l.trim() == WASM_TARGET) {
        return Ok(());
    }
    run(
        "install the wasm target",
        Command::new("rustup")
            .current_dir(workspace_root())
            .args(["target", "add", WASM_TARGET]),
    )
}

/// The sans-IO rule, checked on the dependency graph rather than by review.
fn check_sans_io() -> Result<(), String> {
    eprintln!("\n==> sans-IO dependency check");
    for krate in CORE_CRATES {
        let tree = output(cargo().args([
            "tree", "--locked", "-p", krate, "-e", "normal", "--prefix", "none", "--format", "{p}",
        ]))?;
        for line in tree.lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if IO_CRATES.contains(&name) {
                return Err(format!(
                    "{krate} depends on the I/O crate {name}; the core is sans-IO"
                ));
            }
        }
        eprintln!(
            "    {krate}: {} crates, none of {IO_CRATES:?}",
            tree.lines().count()
        );
    }
    Ok(())
}

/// Debian packages the tests drive for real.
fn ensure_debian_packages() -> Result<(), String> {
    let missing: Vec<&str> = [
        ("prometheus", "/usr/bin/prometheus"),
        ("prometheus", "/usr/bin/promtool"),
        ("coturn", "/usr/bin/turnserver"),
        ("chromium", "/usr/bin/chromium"),
        // wgpu on the CPU (lavapipe) for the headset simulator's tests.
        (
            "mesa-vulkan-drivers",
            "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json",
        ),
        ("libvulkan1", "/usr/lib/x86_64-linux-gnu/libvulkan.so.1"),
        // The Android check: ring's C compiled by clang against aarch64 libc headers (no NDK).
        ("clang", "/usr/bin/clang"),
        ("llvm", "/usr/bin/llvm-ar"),
        (
            "libc6-dev-arm64-cross",
            "/usr/aarch64-linux-gnu/include/stdint.h",
        ),
    ]
    .iter()
    .filter(|(_, path)| !Path::new(path).exists())
    .map(|(pkg, _)| *pkg)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    run(
        "apt-get update",
        Command::new("apt-get").args(["update", "-qq"]),
    )?;
    run(
        "install Debian packages for the tests",
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn ci() -> Result<(), String> {
    let started = Instant::now();
    eprintln!("target dir: {}", target_dir().display());
    ensure_wasm_target()?;
    ensure_debian_packages()?;
    run("rustfmt", cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(
        "clippy",
        cargo().args([
            "clippy",
            "--locked",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    run(
        "protocol builds for wasm32",
        cargo().args([
            "check",
            "--locked",
            "-p",
            "meshwork-protocol",
            "--target",
            WASM_TARGET,
        ]),
    )?;
    check_sans_io()?;
    android_check()?;
    wasm_package_test()?;
    browser_test()?;
    container_test()?;
    // Every fuzz target for a short fixed budget (`cargo xtask fuzz --seconds 600` is the
    // stress run; its figures are in docs/security.md).
    fuzz(FUZZ_TARGETS, 20)?;
    run(
        "doc tests",
        cargo().args(["test", "--locked", "--workspace", "--doc"]),
    )?;
    // Each benchmark once, in test mode: benches that no longer run fail CI, not the next
    // person who measures.
    run(
        "benchmarks run once",
        cargo().args(["test", "--locked", "--workspace", "--benches"]),
    )?;
    // The test run goes last so that its summary is the last thing CI prints.
    if has_program("cargo-nextest", "--version") {
        let args = [
            "nextest",
            "run",
            "--locked",
            "--workspace",
            "--no-fail-fast",
        ];
        run("tests (nextest)", cargo().args(args))?;
    } else {
        let args = [
            "test",
            "--locked",
            "--workspace",
            "--lib",
            "--tests",
            "--no-fail-fast",
        ];
        run("tests", cargo().args(args))?;
    }
    eprintln!(
        "\nci: all checks passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The Quest client compiles for the headset's target. No NDK exists here, so ring's C code is
/// compiled by Debian's clang against Debian's aarch64 libc headers: enough for `cargo check`
/// (nothing is linked); the APK build uses the NDK (`docs/quest.md`).
fn android_check() -> Result<(), String> {
    const ANDROID: &str = "aarch64-linux-android";
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if !installed.lines().any(|l| l.trim() == ANDROID) {
        run(
            "rustup target add aarch64-linux-android",
            Command::new("rustup").args(["target", "add", ANDROID]),
        )?;
    }
    run(
        "Quest client checks for aarch64-linux-android",
        cargo()
            .args([
                "check",
                "--locked",
                "--target",
                ANDROID,
                "-p",
                "meshwork-quest",
            ])
            .env("CC_aarch64_linux_android", "clang")
            .env(
                "CFLAGS_aarch64_linux_android",
                "--target=aarch64-linux-android -isystem /usr/aarch64-linux-gnu/include",
            )
            .env("AR_aarch64_linux_android", "llvm-ar"),
    )
}

/// The wasm-bindgen CLI version; must equal the `wasm-bindgen` crate in Cargo.lock.
const WASM_BINDGEN: &str = "0.2.130";

/// Builds the browser package of the protocol (`client-web/wasm` through wasm-bindgen: a
/// `web` build into `client-web/pkg` for the editor, a `nodejs` build for tests); returns the
/// Node build's directory.
fn wasm_package() -> Result<PathBuf, String> {
    ensure_wasm_target()?;
    run(
        "wasm package (cargo)",
        cargo().args([
            "build",
            "--locked",
            "--release",
            "-p",
            "meshwork-wasm",
            "--target",
            WASM_TARGET,
        ]),
    )?;
    let tools = target_dir().with_file_name("tools");
    let cli = tools.join("bin").join("wasm-bindgen");
    let current = Command::new(&cli)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if !current.as_deref().is_some_and(|v| v.contains(WASM_BINDGEN)) {
        // Not --locked: the CLI's own lockfile pins a crate version the registry here lacks.
        run(
            "install wasm-bindgen-cli",
            Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args([
                    "install",
                    "wasm-bindgen-cli",
                    "--version",
                    &format!("={WASM_BINDGEN}"),
                ])
                .arg("--root")
                .arg(&tools),
        )?;
    }
    let wasm = target_dir()
        .join(WASM_TARGET)
        .join("release")
        .join("meshwork_wasm.wasm");
    let node_pkg = target_dir().join("wasm-pkg").join("node");
    for (target, out) in [
        ("web", workspace_root().join("client-web").join("pkg")),
        ("nodejs", node_pkg.clone()),
    ] {
        run(
            &format!("wasm-bindgen --target {target}"),
            Command::new(&cli)
                .args(["--target", target, "--out-dir"])
                .arg(&out)
                .arg(&wasm),
        )?;
    }
    Ok(node_pkg)
}

/// npm packages of `client-web` (`npm ci`: exactly the lockfile), when missing or older than
/// the lockfile. Never Playwright's browser download: tests drive Debian's Chromium.
fn ensure_npm_packages() -> Result<(), String> {
    let web = workspace_root().join("client-web");
    let stamp = web.join("node_modules").join(".package-lock.json");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let fresh = match (modified(&stamp), modified(&web.join("package-lock.json"))) {
        (Some(installed), Some(lock)) => installed >= lock,
        _ => false,
    };
    if fresh {
        return Ok(());
    }
    run(
        "npm ci (client-web)",
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&web)
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1"),
    )
}

/// The browser editor: type check and bundle into `client-web/dist` (needs the wasm package).
fn web_bundle() -> Result<(), String> {
    ensure_npm_packages()?;
    run(
        "web editor bundle (tsc + vite build)",
        Command::new("npm")
            .args(["run", "build"])
            .current_dir(workspace_root().join("client-web")),
    )
}

/// The wasm package, its Node tests (end to end over WebSocket; replaying a mesh-edit log to
/// the native hash), the editor bundle and its unit tests, and the Khronos glTF-Validator (an
/// npm package) on the server's glTF exports.
fn wasm_package_test() -> Result<(), String> {
    let node_pkg = wasm_package()?;
    web_bundle()?;
    run(
        "web editor unit tests (vitest)",
        Command::new("npm")
            .args(["test"])
            .current_dir(workspace_root().join("client-web")),
    )?;
    run(
        "wasm package end to end (Node over WebSocket)",
        cargo()
            .args([
                "test",
                "--locked",
                "-p",
                "meshwork-server",
                "--test",
                "wasm_node",
                "--",
                "--ignored",
            ])
            .env("MESHWORK_WASM_PKG", &node_pkg),
    )?;
    run(
        "wasm replica refuses a hostile server's forgeries (Node)",
        cargo()
            .args([
                "test",
                "--locked",
                "-p",
                "meshwork-server",
                "--test",
                "hostile_server",
                "--",
                "--ignored",
            ])
            .env("MESHWORK_WASM_PKG", &node_pkg),
    )?;
    run(
        "wasm replica replays a random mesh-edit log to the native hash (Node)",
        cargo()
            .args([
                "test",
                "--locked",
                "-p",
                "meshwork-session",
                "--test",
                "mesh_props",
                "--",
                "--ignored",
                "--exact",
                "the_wasm_replica_replays_the_log_to_the_native_hash",
            ])
            .env("MESHWORK_WASM_PKG", &node_pkg),
    )?;
    run(
        "glTF exports pass the Khronos glTF-Validator (Node)",
        cargo().args([
            "test",
            "--locked",
            "-p",
            "meshwork-server",
            "--test",
            "gltf_export",
            "--",
            "--ignored",
        ]),
    )
}

/// Headless Chromium: npm packages for the browser tests (Playwright's core, never its browser
/// download: the tests drive Debian's `/usr/bin/chromium`), then the WebRTC page test and the
/// editor end-to-end test inside a loopback-only network namespace, so nothing leaves the
/// machine. Screenshots land in `<target dir>/tmp/browser-artifacts/`.
fn browser_test() -> Result<(), String> {
    ensure_npm_packages()?;
    // Built outside the namespace (cargo may need the registry); run inside it.
    let tests = [
        "--test",
        "browser_webrtc",
        "--test",
        "browser_editor",
        "--test",
        "browser_reconnect",
        "--test",
        "browser_membership",
    ];
    run(
        "browser tests (build)",
        cargo()
            .args(["test", "--locked", "--no-run", "-p", "meshwork-server"])
            .args(tests),
    )?;
    let cargo_bin = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(
        "browser tests (Chromium: WebRTC page, the editor; loopback-only network namespace)",
        Command::new("unshare")
            .args(["-n", "sh", "-c", "ip link set lo up && exec \"$@\"", "sh"])
            .arg(cargo_bin)
            .args(["test", "--locked", "--offline", "-p", "meshwork-server"])
            .args(tests)
            .args(["--", "--ignored"])
            .current_dir(workspace_root())
            .env("CARGO_TARGET_DIR", target_dir())
            .env("CARGO_INCREMENTAL", "0"),
    )
}

/// A private Docker engine for the container test; stopped when dropped.
struct Dockerd {
    child: std::process::Child,
    dir: PathBuf,
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now()
            .checked_add(std::time::Duration::from_secs(20))
            .unwrap_or_else(Instant::now);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.dir.join("root"))
            .status();
        // dockerd leaves its network namespace mounted here; with it mounted, removing the dir
        // stopped at it and left the image store (≈ 230 MB) behind after every run.
        let _ = Command::new("umount")
            .arg(self.dir.join("exec").join("netns").join("default"))
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The image test: docker.io if missing, a static server binary, a private `dockerd` in a temp
/// dir (no bridge, no iptables), then `tests/tests/container.rs` against it.
fn container_test() -> Result<(), String> {
    if !Path::new("/usr/sbin/dockerd").exists() {
        run(
            "apt-get update",
            Command::new("apt-get").args(["update", "-qq"]),
        )?;
        run(
            "install docker.io",
            Command::new("apt-get")
                .args([
                    "install",
                    "-y",
                    "-qq",
                    "--no-install-recommends",
                    "docker.io",
                ])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    let triple = "x86_64-unknown-linux-gnu";
    run(
        "static server binary for the image",
        cargo()
            .args([
                "build",
                "--locked",
                "--release",
                "-p",
                "meshwork-server",
                "--target",
                triple,
            ])
            .env("RUSTFLAGS", "-C target-feature=+crt-static"),
    )?;
    let binary = target_dir()
        .join(triple)
        .join("release")
        .join("meshwork-server");
    let dir = env::temp_dir().join(format!("meshwork-dockerd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let sock = dir.join("docker.sock");
    let log = std::fs::File::create(dir.join("dockerd.log")).map_err(|e| e.to_string())?;
    eprintln!("\n==> private dockerd in {}", dir.display());
    let child = Command::new("/usr/sbin/dockerd")
        .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
        .arg(format!("--data-root={}", dir.join("root").display()))
        .arg(format!("--exec-root={}", dir.join("exec").display()))
        .arg(format!("--pidfile={}", dir.join("docker.pid").display()))
        .arg(format!("-H=unix://{}", sock.display()))
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("dockerd: {e}"))?;
    let daemon = Dockerd {
        child,
        dir: dir.clone(),
    };
    let host = format!("unix://{}", sock.display());
    let deadline = Instant::now()
        .checked_add(std::time::Duration::from_secs(60))
        .unwrap_or_else(Instant::now);
    while !Command::new("docker")
        .env("DOCKER_HOST", &host)
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default();
            return Err(format!("dockerd did not come up:\n{log}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let result = run(
        "container test (real Docker engine)",
        cargo()
            .args([
                "test",
                "--locked",
                "-p",
                "meshwork-testkit",
                "--test",
                "container",
                "--",
                "--ignored",
            ])
            .env("MESHWORK_DOCKER_HOST", &host)
            .env("MESHWORK_STATIC_BINARY", &binary),
    );
    drop(daemon);
    result
}

/// The fuzz targets of `tests/fuzz`, each with a seed corpus in `tests/fuzz/corpus/<target>`.
const FUZZ_TARGETS: &[&str] = &["frames", "replica", "session", "scene", "ticket", "sdp"];

/// `cargo xtask fuzz [--seconds N] [target...]`.
fn fuzz_command(args: &[String]) -> Result<(), String> {
    let mut seconds = 60_u64;
    let mut targets = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--seconds" {
            seconds = it
                .next()
                .and_then(|v| v.parse().ok())
                .ok_or("--seconds takes a number")?;
        } else if FUZZ_TARGETS.contains(&a.as_str()) {
            targets.push(a.as_str());
        } else {
            return Err(format!("unknown fuzz target {a} (one of {FUZZ_TARGETS:?})"));
        }
    }
    if targets.is_empty() {
        targets = FUZZ_TARGETS.to_vec();
    }
    fuzz(&targets, seconds)
}

/// Builds the fuzz targets with libFuzzer's coverage instrumentation (the flags `cargo fuzz`
/// uses with `--sanitizer none`, all stable), then runs each for `seconds` from a copy of its
/// corpus (what it finds stays in `<target dir>/fuzz/corpus/`, not in the repository).
fn fuzz(targets: &[&str], seconds: u64) -> Result<(), String> {
    let root = workspace_root();
    let manifest = root.join("tests/fuzz/Cargo.toml");
    let dir = target_dir().join("fuzz");
    let flags = [
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
        "--cfg=fuzzing",
        "-Cdebug-assertions",
        "-Coverflow-checks",
    ]
    .join(" ");
    // With an explicit target, RUSTFLAGS reach only what runs under the fuzzer, not build
    // scripts and proc macros (which have no libFuzzer runtime to link).
    let host = output(Command::new("rustc").arg("-vV"))?
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .ok_or("rustc -vV names no host")?;
    run(
        "fuzz targets (build, instrumented)",
        cargo()
            .args([
                "build",
                "--locked",
                "--release",
                "--bins",
                "--target",
                &host,
            ])
            .arg("--manifest-path")
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", &dir)
            .env("RUSTFLAGS", flags),
    )?;
    for target in targets {
        let corpus = dir.join("corpus").join(target);
        let artifacts = dir.join("artifacts").join(target);
        std::fs::create_dir_all(&corpus).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&artifacts).map_err(|e| e.to_string())?;
        let mut prefix = artifacts.into_os_string();
        prefix.push("/");
        let mut prefix_arg = std::ffi::OsString::from("-artifact_prefix=");
        prefix_arg.push(prefix);
        run(
            &format!("fuzz {target} for {seconds} s"),
            Command::new(dir.join(&host).join("release").join(target))
                .arg(format!("-max_total_time={seconds}"))
                .arg("-timeout=10")
                .arg("-rss_limit_mb=2048")
                .arg("-print_final_stats=1")
                .arg(prefix_arg)
                .arg(&corpus)
                .arg(root.join("tests/fuzz/corpus").join(target)),
        )?;
    }
    Ok(())
}

/// `cargo xtask run`: the server with its zero-configuration defaults (extra flags pass through).
/// Builds the wasm package and the editor bundle, then runs the server serving it.
fn serve(extra: &[String]) -> Result<(), String> {
    wasm_package()?;
    web_bundle()?;
    let dist = workspace_root().join("client-web").join("dist");
    run(
        "meshwork-server serve",
        cargo()
            .args([
                "run",
                "--locked",
                "--release",
                "-p",
                "meshwork-server",
                "--",
                "serve",
                "--web-dir",
            ])
            .arg(&dist)
            .args(extra),
    )
}

fn bench(extra: &[String]) -> Result<(), String> {
    for (krate, name) in [
        ("meshwork-protocol", "protocol"),
        ("meshwork-protocol", "scene"),
        ("meshwork-protocol", "mesh"),
        ("meshwork-session", "log"),
    ] {
        run(
            &format!("bench {krate}/{name}"),
            cargo()
                .args(["bench", "--locked", "-p", krate, "--bench", name, "--"])
                .args(extra),
        )?;
    }
    Ok(())
}
