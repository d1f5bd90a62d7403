//! The Vagrantfile and the tests/e2e scripts: syntax and what they set up.

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::{arr, assert_success, repo, ruby, run, rust_toolchain, s};

#[test]
fn vagrantfile_and_e2e_scripts_parse() {
    let Some(ruby) = ruby() else { return };
    let vagrantfile = repo().join("Vagrantfile");
    let out = run(Command::new(&ruby).arg("-c").arg(&vagrantfile));
    assert_success(&out, "ruby -c Vagrantfile");

    // What it configures, with Ruby's interpolation done.
    let out = run(Command::new(&ruby)
        .arg(repo().join("tests/e2e/vagrantfile_dump.rb"))
        .arg(&vagrantfile));
    assert_success(&out, "tests/e2e/vagrantfile_dump.rb Vagrantfile");
    let vm: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let box_name = s(&vm["box"], "box");
    assert_eq!(
        box_name, "debian/bookworm64",
        "Debian 12: what `cargo xtask setup` installs from"
    );
    let provs = arr(&vm["provisioners"], "provisioners");
    let prov = |name: &str| {
        provs
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no {name:?} provisioner"))
    };
    let script = |name: &str| s(&prov(name)["inline"], name).to_owned();
    // A kernel >= 6.6 first, booted before anything else runs.
    assert_eq!(provs[0]["name"], "kernel");
    assert_eq!(prov("kernel")["reboot"], true);
    assert!(script("kernel").contains("-t bookworm-backports linux-image-amd64"));
    assert!(script("setup").contains(&format!("--default-toolchain {}", rust_toolchain())));
    assert!(script("setup").contains("\ncargo xtask setup\n"));
    assert!(script("test").contains("\ncargo xtask test\n"));
    assert!(script("test").contains("CI=true"));
    assert_eq!(prov("kind")["run"], "never");
    assert!(script("kind").contains("\ntests/e2e/kind.sh\n"));
    for p in provs {
        let name = s(&p["name"], "name");
        let text = s(&p["inline"], name);
        assert!(text.starts_with("#!/bin/bash\n"), "{name}: bash script");
        let mut child = Command::new("bash")
            .arg("-n")
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bash");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_success(&out, &format!("bash -n on the {name:?} provisioner"));
    }

    let mut scripts = 0;
    for entry in std::fs::read_dir(repo().join("tests/e2e")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sh") {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert!(mode & 0o111 != 0, "{} is not executable", path.display());
            let out = run(Command::new("bash").arg("-n").arg(&path));
            assert_success(&out, &format!("bash -n {}", path.display()));
            scripts += 1;
        }
    }
    assert!(scripts >= 1, "tests/e2e/kind.sh exists");
}
