use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::policy::*;

/// A scratch directory removed on drop, even when the test fails.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("netpol-policy-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> &Self {
        fs::write(self.0.join(name), text).unwrap();
        self
    }

    /// Shows paths the way errors print them.
    fn show(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/localplus-cidr")
}

#[test]
fn merges_policy_files_in_name_order_and_skips_the_rest() {
    let d = TempDir::new();
    d.write(
        "b.yaml",
        "rules:\n  - name: second\n    from: a\n    to: any\n",
    )
    .write(
        "a.yml",
        "groups:\n  a: [10.0.0.0/8]\nrules:\n  - name: first\n    within: [a]\n",
    )
    .write(".hidden.yaml", "this: is not policy\n")
    .write("notes.txt", "neither is this\n")
    .write("c.yaml.bak", "nor this\n");
    // A ConfigMap volume: visible names are symlinks through `..data`.
    fs::create_dir(d.0.join("..2024_01_01_00_00_00.1")).unwrap();
    fs::write(
        d.0.join("..2024_01_01_00_00_00.1/c.yaml"),
        "settings:\n  enforce-host: true\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("..2024_01_01_00_00_00.1", d.0.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/c.yaml", d.0.join("c.yaml")).unwrap();
    fs::create_dir(d.0.join("sub.yaml")).unwrap();

    let files: Vec<String> = policy_files(&d.0)
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["a.yml", "b.yaml", "c.yaml"]);

    let p = load_dir(&d.0, &ReadLimits::default()).unwrap();
    let names: Vec<&str> = p.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["first", "second"]);
    assert!(p.enforce_host, "set by the file behind the symlink");
    let origin = &p.rules[1].origin.as_ref().unwrap().rule;
    assert_eq!(origin.to_string(), format!("{}:2:5", d.show("b.yaml")));
}

#[test]
fn empty_directory_is_an_empty_policy() {
    let d = TempDir::new();
    assert_eq!(
        load_dir(&d.0, &ReadLimits::default()).unwrap(),
        Policy::default()
    );
}

#[test]
fn missing_directory() {
    let e = load_dir(Path::new("/nonexistent/netpol"), &ReadLimits::default()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/netpol: cannot read:"),
        "{e}"
    );
}

#[test]
fn names_are_unique_across_files() {
    let d = TempDir::new();
    d.write("a.yaml", "groups:\n  web: [10.0.0.0/8]\nrules:\n  - name: r\n    from: web\n    to: any\n")
        .write("b.yaml", "groups:\n  db: [10.1.0.0/16]\n  web: [10.2.0.0/16]\nrules:\n  - name: r\n    from: db\n    to: any\n");
    let e = load_dir(&d.0, &ReadLimits::default()).unwrap_err();
    let expected = [
        format!(
            "{}:3:3: groups.web: group \"web\" is already defined at {}:2:3",
            d.show("b.yaml"),
            d.show("a.yaml")
        ),
        format!(
            "{}:5:5: rules[0]: rule \"r\" is already defined at {}:4:5",
            d.show("b.yaml"),
            d.show("a.yaml")
        ),
    ];
    assert_eq!(e.to_string(), expected.join("\n"));
}

#[test]
fn unknown_groups_are_reported_where_used() {
    let d = TempDir::new();
    d.write("a.yaml", "groups:\n  svc-ledger: [10.0.1.0/24]\n")
        .write("b.yaml", "rules:\n  - name: r\n    from: [svc-ledger, svc-legder]\n    to: 10.0.1.300\n  - name: w\n    within: [nope]\n");
    let e = load_dir(&d.0, &ReadLimits::default()).unwrap_err();
    let b = d.show("b.yaml");
    let expected = [
        format!("{b}:3:24: rules[0].from[1]: unknown group \"svc-legder\"; did you mean \"svc-ledger\"?"),
        format!("{b}:4:9: rules[0].to: unknown group \"10.0.1.300\" (and not a valid IP address or CIDR)"),
        format!("{b}:6:14: rules[1].within[0]: unknown group \"nope\""),
    ];
    assert_eq!(e.to_string(), expected.join("\n"));
}

#[test]
fn every_file_with_errors_is_reported() {
    let d = TempDir::new();
    d.write(
        "a.yaml",
        "rules:\n  - name: a\n    from: any\n    to: any\n    ports: [80]\n",
    )
    .write("b.yaml", "groups:\n  x: [10.0.0.1/8]\n")
    .write("c.yaml", "groups: [\n");
    let e = load_dir(&d.0, &ReadLimits::default()).unwrap_err();
    assert_eq!(e.len(), 3, "{e}");
    assert_eq!(e.0[0].file, d.show("a.yaml"));
    assert_eq!(e.0[1].file, d.show("b.yaml"));
    assert_eq!(e.0[2].file, d.show("c.yaml"));
    assert!(e.0[2].message.starts_with("invalid YAML"), "{e}");
}

#[test]
fn errors_in_files_and_across_them_come_in_one_pass() {
    let d = TempDir::new();
    // a.yaml: a bad port (the rule is left out) and a bad CIDR (the group is
    // kept by name, so naming it is not an error).
    d.write(
        "a.yaml",
        "groups:\n  db: [10.1.0.1/16]\nrules:\n  - name: a\n    from: any\n    to: db\n    ports: [80]\n",
    )
    .write(
        "b.yaml",
        "rules:\n  - name: b\n    from: [db, dbb]\n    to: any\n  - name: c\n    from: frontend\n    to: any\n",
    )
    .write("c.yaml", "groups:\n  db: [10.2.0.0/16]\n");
    let e = load_dir(&d.0, &ReadLimits::default()).unwrap_err();
    let (a, b, c) = (d.show("a.yaml"), d.show("b.yaml"), d.show("c.yaml"));
    let lines: Vec<String> = e.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 5, "{e}");
    assert!(
        lines[0].starts_with(&format!("{a}:2:8: groups.db[0]: ")),
        "{e}"
    );
    assert_eq!(
        lines[1],
        format!("{a}:7:13: rules[0].ports[0]: 80: a port needs its protocol: write 80/tcp")
    );
    assert_eq!(
        lines[2],
        format!("{c}:2:3: groups.db: group \"db\" is already defined at {a}:2:3")
    );
    assert_eq!(
        lines[3],
        format!("{b}:3:16: rules[0].from[1]: unknown group \"dbb\"; did you mean \"db\"?")
    );
    assert_eq!(
        lines[4],
        format!("{b}:6:11: rules[1].from: unknown group \"frontend\"")
    );
}

#[test]
fn a_file_that_is_not_yaml_may_define_any_group() {
    let d = TempDir::new();
    d.write("a.yaml", "groups: [\n")
        .write("b.yaml", "groups:\n  x: [10.0.0.0/8]\n  x: [10.1.0.0/16]\nrules:\n  - name: b\n    from: web\n    to: any\n");
    let e = load_dir(&d.0, &ReadLimits::default()).unwrap_err();
    let lines: Vec<String> = e.iter().map(ToString::to_string).collect();
    // The YAML error and b.yaml's own error, but no "unknown group web":
    // a.yaml, unreadable as YAML, might be where web is defined.
    assert_eq!(lines.len(), 2, "{e}");
    assert!(
        lines[0].starts_with(&format!("{}:", d.show("a.yaml"))),
        "{e}"
    );
    assert!(lines[0].contains("invalid YAML"), "{e}");
    assert!(lines[1].contains("\"x\" appears twice"), "{e}");
}

#[test]
fn load_file_is_one_file_as_a_policy() {
    let d = TempDir::new();
    d.write(
        "a.yaml",
        "rules:\n  - name: r\n    from: web\n    to: any\n",
    );
    let e = load_file(&d.0.join("a.yaml"), &ReadLimits::default()).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("rules[0].from: unknown group \"web\""),
        "{e}"
    );
    let f = read_file(&d.0.join("a.yaml"), &ReadLimits::default()).unwrap();
    assert_eq!(f.rules.len(), 1);
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The LOCAL-PLUS example: valid, and every edge of docs/design.md holds both ways
/// round (allowed where listed, denied elsewhere), in IPv4 and IPv6.
#[test]
fn localplus_example() {
    let p = load_dir(&example_dir(), &ReadLimits::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.groups.len(), 14);
    assert_eq!(p.rules.len(), 12);
    let c = compile(&p, &CompileOptions::default()).unwrap();
    let allow = |src: &str, dst: &str, proto: u8, port: u16| -> Option<&str> {
        evaluate(&c, ip(src), ip(dst), proto, port).map(|id| c.rule_names[id as usize].as_str())
    };
    let (tcp, udp) = (6, 17);
    let ledger = ["10.0.1.10", "fd00:0:1::10"];
    let wallet = ["10.0.2.10", "fd00:0:2::10"];
    let merchant = ["10.0.3.10", "fd00:0:3::10"];
    let gateway = ["10.0.4.10", "fd00:0:4::10"];
    let prometheus = ["10.0.4.70", "fd00:0:4::170"];
    let otel = ["10.0.4.85", "fd00:0:4::285"];
    let dns = ["10.0.4.100", "fd00:0:4::310"];
    let tempo = ["10.0.5.5", "fd00:0:5::5"];
    let loki = ["10.0.5.20", "fd00:0:5::120"];
    let vpce = ["10.0.16.7", "fd00:0:16::7"];
    let pg = ["10.1.0.5", "fd00:1::5"];
    let kafka = ["10.1.1.5", "fd00:1:1::5"];
    let valkey = ["10.1.2.5", "fd00:1:2::5"];
    let aiven_other = ["10.1.9.5", "fd00:1:9::5"];
    let outside = ["203.0.113.9", "2001:db8::9"];
    for f in 0..2 {
        for svc in [ledger, wallet, merchant] {
            assert_eq!(
                allow(gateway[f], svc[f], tcp, 8080),
                Some("gateway-to-services")
            );
            assert_eq!(
                allow(gateway[f], svc[f], tcp, 50051),
                Some("gateway-to-services")
            );
            assert_eq!(allow(gateway[f], svc[f], tcp, 8081), None);
            assert_eq!(allow(gateway[f], svc[f], udp, 8080), None);
            assert_eq!(
                allow(prometheus[f], svc[f], tcp, 8080),
                Some("prometheus-scrape")
            );
            assert_eq!(allow(prometheus[f], svc[f], tcp, 50051), None);
            assert_eq!(
                allow(svc[f], pg[f], tcp, 5432),
                Some("services-to-postgres")
            );
            assert_eq!(
                allow(svc[f], kafka[f], tcp, 9092),
                Some("services-to-kafka")
            );
            assert_eq!(
                allow(svc[f], valkey[f], tcp, 6379),
                Some("services-to-valkey")
            );
            assert_eq!(
                allow(svc[f], pg[f], tcp, 9092),
                None,
                "kafka's port on postgres"
            );
            assert_eq!(allow(svc[f], aiven_other[f], tcp, 5432), None);
            assert_eq!(
                allow(svc[f], vpce[f], tcp, 443),
                Some("services-to-vpc-endpoints")
            );
            assert_eq!(allow(svc[f], dns[f], udp, 53), Some("services-to-dns"));
            assert_eq!(allow(svc[f], dns[f], tcp, 53), Some("services-to-dns"));
            assert_eq!(allow(svc[f], outside[f], tcp, 443), None);
            assert_eq!(allow(outside[f], svc[f], tcp, 8080), None);
            assert_eq!(
                allow(svc[f], gateway[f], tcp, 8080),
                None,
                "no reverse edge"
            );
        }
        assert_eq!(
            allow(ledger[f], wallet[f], tcp, 50051),
            Some("ledger-to-wallet")
        );
        assert_eq!(allow(wallet[f], ledger[f], tcp, 50051), None);
        assert_eq!(allow(merchant[f], wallet[f], tcp, 50051), None);
        assert_eq!(
            allow(ledger[f], ledger[f], udp, 9999),
            Some("intra-namespace")
        );
        assert_eq!(
            allow(ledger[f], merchant[f], tcp, 8080),
            None,
            "within is not across"
        );
        assert_eq!(allow(otel[f], tempo[f], tcp, 4317), Some("otel-to-tempo"));
        assert_eq!(allow(otel[f], loki[f], tcp, 3100), Some("otel-to-loki"));
        assert_eq!(allow(otel[f], loki[f], tcp, 4317), None);
        assert_eq!(allow(gateway[f], tempo[f], tcp, 4317), None);
    }
    let icmp = |a: &str, b: &str, ty: u16, code: u16| allow(a, b, 1, ty << 8 | code);
    let icmp6 = |a: &str, b: &str, ty: u16, code: u16| allow(a, b, 58, ty << 8 | code);
    // Errors need no rule: the datapath passes those of tracked flows.
    assert_eq!(icmp(outside[0], ledger[0], 3, 4), None);
    assert_eq!(icmp(ledger[0], outside[0], 8, 0), Some("ping"));
    assert_eq!(icmp(ledger[0], outside[0], 13, 0), None);
    assert_eq!(icmp6(outside[1], ledger[1], 2, 0), None);
    assert_eq!(icmp6(ledger[1], outside[1], 128, 0), Some("ping"));
    assert_eq!(icmp6(ledger[1], outside[1], 129, 0), None);
}
