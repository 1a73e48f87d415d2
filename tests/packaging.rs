//! What administrators install: `packaging/ivm.service` (checked by
//! systemd's own `systemd-analyze` where it is installed, and against the
//! system calls `ivm serve` really makes during a call) and the refusals of
//! `docker-compose.yml` (checked by `docker-compose config`, no engine needed).

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const UNIT: &str = include_str!("../packaging/ivm.service");
const EXEC_START: &str = "/usr/local/bin/ivm --config /etc/ivm/ivm.toml serve";

fn have(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The unit with ExecStart pointed at the binary `cargo test` built (verify
/// checks that the program exists), in its own directory.
fn unit_copy() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ivm.service");
    let unit = UNIT.replace(
        "/usr/local/bin/ivm ",
        &format!("{} ", env!("CARGO_BIN_EXE_ivm")),
    );
    assert_ne!(unit, UNIT, "ExecStart names /usr/local/bin/ivm");
    std::fs::write(&path, unit).unwrap();
    (dir, path)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The value of each `Key=` line of the unit, in order.
fn values<'a>(key: &str) -> Vec<&'a str> {
    UNIT.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn unit_runs_ivm_serve_on_the_etc_config_as_its_own_user() {
    assert_eq!(values("ExecStart"), [EXEC_START]);
    assert_eq!(values("User"), ["ivm"]);
    assert_eq!(values("KillSignal"), ["SIGTERM"]);
    assert_eq!(values("StateDirectory"), ["ivm"]);
    assert_eq!(values("ReadWritePaths"), ["/var/lib/ivm"]);
    assert_eq!(values("Environment"), ["IVM_DATA_DIR=/var/lib/ivm"]);
    // The command line itself is one ivm accepts: with the config missing it
    // fails on the config (exit 1), not on its arguments (exit 2).
    let args: Vec<&str> = EXEC_START.split(' ').skip(1).collect();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("ivm.toml");
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("/etc/ivm/ivm.toml", &missing.display().to_string()))
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_ivm"))
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&missing.display().to_string()),
        "{}",
        text(&out)
    );
}

#[test]
fn systemd_analyze_verify_accepts_the_unit_without_a_warning() {
    if !have("systemd-analyze", "--version") {
        eprintln!("SKIPPED: systemd-analyze is not installed (Debian package `systemd`)");
        return;
    }
    let (_dir, path) = unit_copy();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // Unknown or misspelt keys are only warnings ("ignoring"): none allowed.
    assert_eq!(text(&out).trim(), "", "verify said something");

    // The same check fails on a broken copy, so the one above means something.
    let broken = path.with_file_name("broken.service");
    std::fs::write(
        &broken,
        UNIT.replace(
            "/usr/local/bin/ivm ",
            &format!("{}/nowhere/ivm ", path.parent().unwrap().display()),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
}

#[test]
fn systemd_rates_the_sandbox_well_exposed_at_most_2_of_10() {
    if !have("systemd-analyze", "--version") {
        eprintln!("SKIPPED: systemd-analyze is not installed (Debian package `systemd`)");
        return;
    }
    let (_dir, path) = unit_copy();
    let out = Command::new("systemd-analyze")
        .args(["security", "--no-pager", "--offline=true"])
        .arg(&path)
        .output()
        .unwrap();
    let report = text(&out);
    if report.contains("Unknown option") || report.contains("unrecognized option") {
        eprintln!("SKIPPED: this systemd-analyze has no `security --offline` (systemd < 250)");
        return;
    }
    let level = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for ivm.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    eprintln!("systemd-analyze security: exposure {level} of 10");
    assert!(level <= 2.0, "exposure {level}:\n{report}");
}

/// `docker-compose config` with only these variables set (no .env file).
fn compose_config(vars: &[(&str, &str)]) -> Option<Output> {
    static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*INSTALLED.get_or_init(|| have("docker-compose", "version")) {
        eprintln!("SKIPPED: docker-compose is not installed");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("empty.env");
    std::fs::write(&env_file, "").unwrap();
    let mut cmd = Command::new("docker-compose");
    cmd.current_dir(REPO)
        .arg("--env-file")
        .arg(&env_file)
        .arg("config");
    for key in [
        "IVM_AMI_SECRET",
        "PHONE_1001_PASSWORD",
        "PHONE_1002_PASSWORD",
        "PHONE_1003_PASSWORD",
    ] {
        cmd.env_remove(key);
    }
    for (key, value) in vars {
        cmd.env(key, value);
    }
    Some(cmd.output().unwrap())
}

const SECRETS: [(&str, &str); 5] = [
    ("IVM_AMI_SECRET", "s3cret-ami"),
    ("IVM_AGI_SECRET", "s3cret-agi-0123456789"),
    ("PHONE_1001_PASSWORD", "s3cret-1001"),
    ("PHONE_1002_PASSWORD", "s3cret-1002"),
    ("PHONE_1003_PASSWORD", "s3cret-1003"),
];

#[test]
fn compose_refuses_to_start_without_each_secret() {
    // Each secret missing, each secret empty (as in the shipped .env.example),
    // and all of them set; in parallel, docker-compose takes seconds to start.
    let mut cases: Vec<(String, Vec<(&str, &str)>)> = Vec::new();
    for i in 0..SECRETS.len() {
        let mut vars = SECRETS.to_vec();
        let (name, _) = vars.remove(i);
        cases.push((format!("without {name}"), vars.clone()));
        vars.push((name, ""));
        cases.push((format!("with an empty {name}"), vars));
    }
    cases.push(("with every secret".into(), SECRETS.to_vec()));
    let outputs: Vec<Option<Output>> = std::thread::scope(|scope| {
        let running: Vec<_> = cases
            .iter()
            .map(|(_, vars)| scope.spawn(move || compose_config(vars)))
            .collect();
        running.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let Some(all_set) = outputs.last().cloned().flatten() else {
        return;
    };
    for ((case, _), out) in cases.iter().zip(&outputs).take(cases.len() - 1) {
        let out = out.as_ref().unwrap();
        let name = case.split(' ').next_back().unwrap();
        assert!(!out.status.success(), "started {case}");
        assert!(
            text(out).contains(&format!("set {name} in .env")),
            "{case}: {}",
            text(out)
        );
    }
    assert!(all_set.status.success(), "{}", text(&all_set));
    let config = String::from_utf8_lossy(&all_set.stdout);
    for (_, value) in SECRETS {
        assert!(config.contains(value), "{config}");
    }
    assert!(config.contains("condition: service_healthy"), "{config}");
    assert_eq!(config.matches("network_mode: host").count(), 2, "{config}");
}

#[test]
fn env_example_names_every_required_variable_and_holds_no_secret() {
    let example = std::fs::read_to_string(Path::new(REPO).join(".env.example")).unwrap();
    let compose = std::fs::read_to_string(Path::new(REPO).join("docker-compose.yml")).unwrap();
    let required: Vec<&str> = compose
        .split("${")
        .skip(1)
        .filter_map(|s| s.split_once(":?").map(|(name, _)| name))
        .filter(|name| {
            name.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    assert_eq!(required.len(), SECRETS.len(), "{required:?}");
    for name in required {
        let line = format!("\n{name}=\n");
        assert!(
            example.contains(&line),
            ".env.example must list {name} with no value"
        );
    }
}

/// The system calls of a `systemd-analyze syscall-filter` group, nested
/// groups resolved.
fn syscall_group(name: &str) -> BTreeSet<String> {
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{name}: {}", text(&out));
    let mut calls = BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
        let item = line.trim();
        if item.is_empty() || item.starts_with('#') {
            continue;
        }
        if item.starts_with('@') {
            calls.extend(syscall_group(item));
        } else {
            calls.insert(item.to_owned());
        }
    }
    calls
}

/// What the unit's `SystemCallFilter=` lines allow: the allow lists, minus
/// the `~` deny lists.
fn unit_allowed_syscalls() -> BTreeSet<String> {
    let (mut allowed, mut denied) = (BTreeSet::new(), BTreeSet::new());
    for value in values("SystemCallFilter") {
        let (deny, list) = match value.strip_prefix('~') {
            Some(list) => (true, list),
            None => (false, value),
        };
        for item in list.split_whitespace() {
            let calls = if item.starts_with('@') {
                syscall_group(item)
            } else {
                BTreeSet::from([item.to_owned()])
            };
            if deny { &mut denied } else { &mut allowed }.extend(calls);
        }
    }
    assert!(!allowed.is_empty(), "the unit has an allow list");
    allowed.difference(&denied).cloned().collect()
}

/// `ivm serve` under strace, as an unprivileged user like the unit's, for a
/// real `*77` message on the testbed Asterisk: every system call it makes
/// must pass the unit's `SystemCallFilter=`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_makes_only_system_calls_the_unit_allows() {
    for (program, arg) in [
        ("systemd-analyze", "--version"),
        ("strace", "-V"),
        ("setpriv", "--version"),
    ] {
        if !have(program, arg) {
            eprintln!("SKIPPED: {program} is not installed");
            return;
        }
    }
    // SAFETY: geteuid(2) only reads the process's credentials.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: switching to an unprivileged user (setpriv) needs root");
        return;
    }
    let allowed = unit_allowed_syscalls();
    let (asterisk, agi_port) = common::asterisk();
    let dir = tempfile::tempdir().unwrap();
    // The unprivileged user (nobody) must reach its config and data dir.
    let open = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    };
    open(dir.path());
    let config = dir.path().join("ivm.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[asterisk]\nagi_listen = \"127.0.0.1:{agi_port}\"\nami_address = \"{}\"\n\
             ami_user = \"{}\"\nami_secret = \"{}\"\nagi_secret = \"{}\"\n",
            dir.path().join("data").display(),
            asterisk.ami_address(),
            ivm_testbed::AMI_USER,
            ivm_testbed::AMI_SECRET,
            ivm_testbed::AGI_SECRET,
        ),
    )
    .unwrap();
    let trace = dir.path().join("strace.out");
    let as_nobody = |cmd: &mut Command| {
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
    };
    let mut strace = Command::new("strace");
    strace.args(["-f", "-qq", "-o"]).arg(&trace).arg("setpriv");
    as_nobody(&mut strace);
    let mut serve = strace
        .arg(env!("CARGO_BIN_EXE_ivm"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(serve.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("ivm: serving"), "{line:?}");

    let speech = dir.path().join("alice.wav");
    let said: Vec<i16> = [common::tone(700.0, 2_000), common::silence(30_000)].concat();
    ivm_testbed::write_wav(&speech, &said).unwrap();
    let mut alice = ivm_testbed::Phone::start(&asterisk, "1001", Some(&speech))
        .await
        .unwrap();
    let mut bob = ivm_testbed::Phone::start(&asterisk, "1002", None)
        .await
        .unwrap();
    let wait = Duration::from_secs(15);
    alice.dial("*771002", &asterisk).await.unwrap();
    alice.wait_call("CALL_ESTABLISHED", wait).await.unwrap();
    bob.wait_call("CALL_ESTABLISHED", wait).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    alice.hangup().await.unwrap();
    bob.wait_call("CALL_CLOSED", Duration::from_secs(30))
        .await
        .expect("the message and its menu end");
    let list = tokio::task::block_in_place(|| {
        let mut cli = Command::new("setpriv");
        as_nobody(&mut cli);
        let out = cli
            .arg(env!("CARGO_BIN_EXE_ivm"))
            .arg("--config")
            .arg(&config)
            .args(["message", "list", "--json"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    });
    assert!(
        list.contains("\"heard\""),
        "the call went through ivm: {list}"
    );
    // SIGTERM, as systemd stops it, so that shutdown is traced too; to ivm
    // itself (strace blocks fatal signals when it runs a program with -o).
    let children = format!("/proc/{0}/task/{0}/children", serve.id());
    let ivm_pid: i32 = std::fs::read_to_string(&children)
        .unwrap()
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("ivm runs under strace");
    // SAFETY: kill(2) on the pid of the ivm we started; no memory is touched.
    unsafe {
        libc::kill(ivm_pid, libc::SIGTERM);
    }
    let _ = tokio::task::block_in_place(|| serve.wait());

    let trace = std::fs::read_to_string(&trace).unwrap();
    // Before setpriv's execve of ivm, the calls are strace's and setpriv's.
    let ivm_start = trace
        .lines()
        .position(|l| l.contains(&format!("execve(\"{}\"", env!("CARGO_BIN_EXE_ivm"))))
        .expect("ivm was executed under strace");
    let made: BTreeSet<&str> = trace
        .lines()
        .skip(ivm_start + 1)
        .filter_map(|l| {
            let call = l.split_whitespace().nth(1)?;
            let name = call.split('(').next()?;
            (!name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .then_some(name)
        })
        .collect();
    eprintln!("ivm serve made {} distinct system calls", made.len());
    assert!(made.len() > 20, "a real trace: {made:?}");
    let refused: Vec<&str> = made
        .iter()
        .copied()
        .filter(|c| !allowed.contains(*c))
        .collect();
    assert!(
        refused.is_empty(),
        "SystemCallFilter= would refuse {refused:?} (made: {made:?})"
    );
}
