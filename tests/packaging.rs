//! What administrators install: `packaging/ivm.service` (checked by
//! systemd's own `systemd-analyze` where it is installed) and the refusals of
//! `docker-compose.yml` (checked by `docker-compose config`, no engine needed).

use std::path::Path;
use std::process::{Command, Output};

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

const SECRETS: [(&str, &str); 4] = [
    ("IVM_AMI_SECRET", "s3cret-ami"),
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
    assert_eq!(required.len(), 4, "{required:?}");
    for name in required {
        let line = format!("\n{name}=\n");
        assert!(
            example.contains(&line),
            ".env.example must list {name} with no value"
        );
    }
}
