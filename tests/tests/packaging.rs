//! What operators install: the systemd unit passes `systemd-analyze verify` (with the built
//! binary in place of /usr/local/bin/hearth) and keeps its sandbox; the container image's
//! environment is a configuration the hearth accepts.

use std::process::Command;

use hearth_tests::hearth_binary;

fn unit() -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd/hearth.service"),
    )
    .unwrap()
}

#[test]
fn the_systemd_unit_verifies_and_is_sandboxed() {
    let text = unit();
    for line in [
        "ProtectSystem=strict",
        "User=hearth",
        "StateDirectory=hearth",
        "StateDirectoryMode=0700",
        "LimitNOFILE=65536",
        "NoNewPrivileges=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "CapabilityBoundingSet=",
    ] {
        assert!(text.lines().any(|l| l == line), "the unit lacks {line}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hearth.service");
    std::fs::write(
        &path,
        text.replace("/usr/local/bin/hearth", hearth_binary().to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd; .ci/run installs it)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(
        !said.contains("hearth.service"),
        "systemd-analyze has remarks: {said}"
    );
}

#[test]
fn the_container_environment_is_a_configuration_the_hearth_accepts() {
    let file = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/Containerfile"),
    )
    .unwrap();
    // The ENV instruction's variables, as the image sets them.
    let env: Vec<(String, String)> = file
        .split("ENV ")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| !l.starts_with("VOLUME"))
        .filter_map(|l| {
            let (k, v) = l.trim().trim_end_matches('\\').trim().split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect();
    assert!(
        env.iter().any(|(k, _)| k == "HEARTH_LOG__FORMAT"),
        "{env:?}"
    );
    let config = hearth_node::config::Config::load(None, env).unwrap();
    assert_eq!(config.log.format, hearth_node::config::LogFormat::Json);
    assert_eq!(config.client_api.listen.to_string(), "0.0.0.0:8008");
    assert_eq!(config.federation.listen.to_string(), "0.0.0.0:8448");
    assert_eq!(config.data_dir, std::path::PathBuf::from("/var/lib/hearth"));
}
