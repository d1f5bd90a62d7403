//! Kubernetes NetworkPolicy import: what each accepted form maps to (checked by
//! compiling and evaluating packets) and the error of each rejected form.

use std::net::IpAddr;

use crate::policy::*;

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;
const ICMP: u8 = 1;

fn ok(text: &str) -> Policy {
    let file = parse_str("np.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    merge(vec![file]).unwrap_or_else(|e| panic!("{e}"))
}

/// The errors of a file that must not load, one per line.
fn errors(text: &str) -> String {
    match parse_str("np.yaml", text).map(|f| merge(vec![f])) {
        Ok(Ok(p)) => panic!("loaded: {p:#?}"),
        Ok(Err(e)) | Err(e) => e.to_string(),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The name of the rule allowing the packet, if any.
fn verdict(p: &Policy, src: &str, dst: &str, proto: u8, port: u16) -> Option<String> {
    let c = compile(p, &CompileOptions::default()).unwrap();
    let id = evaluate(&c, ip(src), ip(dst), proto, port)?;
    Some(c.rule_names[id as usize].clone())
}

const WEB: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web
  namespace: shop
  annotations:
    netpol-agent/cidrs: "10.0.1.0/24, fd00:0:1::/64"
  labels: {team: shop}
spec:
  podSelector:
    matchLabels: {app: web}
  policyTypes: [Ingress, Egress]
  ingress:
    - from:
        - ipBlock:
            cidr: 10.0.4.0/26
        - ipBlock:
            cidr: 0.0.0.0/0
            except: [10.0.0.0/8, 192.168.0.0/16]
      ports:
        - port: 8080
        - protocol: TCP
          port: 30000
          endPort: 30100
        - protocol: UDP
    - ports:
        - protocol: SCTP
          port: 3868
  egress:
    - to:
        - ipBlock: {cidr: 10.1.0.0/24}
      ports:
        - protocol: TCP
          port: 5432
    - to: []
"#;

#[test]
fn maps_names_groups_and_rules() {
    let p = ok(WEB);
    let names: Vec<&str> = p.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["shop/web", "shop/web/ingress[0].from[1]"]);
    let pods = &p.groups[0];
    assert_eq!(
        pods.cidrs,
        [
            "10.0.1.0/24".parse().unwrap(),
            "fd00:0:1::/64".parse().unwrap()
        ]
    );
    assert!(!pods.anonymous);
    assert!(p.groups[1].anonymous);
    assert_eq!(p.groups[1].except.len(), 2);
    let rules: Vec<&str> = p.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        rules,
        [
            "shop/web/ingress[0]",
            "shop/web/ingress[1]",
            "shop/web/egress[0]",
            "shop/web/egress[1]"
        ]
    );
    let pods = Peer::Group("shop/web".into());
    let r = &p.rules[0];
    assert_eq!(
        r.from,
        [
            Peer::Cidr("10.0.4.0/26".parse().unwrap()),
            Peer::Group("shop/web/ingress[0].from[1]".into())
        ]
    );
    assert_eq!(r.to, std::slice::from_ref(&pods));
    assert_eq!(
        r.ports,
        [
            PortSpec::port(TCP, 8080),
            PortSpec::range(TCP, 30000, 30100),
            PortSpec::proto(UDP)
        ]
    );
    assert_eq!(p.rules[1].from, [Peer::Any]);
    assert_eq!(p.rules[1].ports, [PortSpec::port(SCTP, 3868)]);
    assert_eq!(p.rules[2].from, std::slice::from_ref(&pods));
    assert_eq!(p.rules[3].to, [Peer::Any]);
    assert!(
        p.rules[3].ports.is_empty(),
        "no ports: every protocol and port"
    );
    // Errors about the rule point into the file.
    let at = p.rules[0].origin.as_ref().unwrap();
    assert_eq!(at.rule.to_string(), "np.yaml:15:7");
    assert_eq!(at.rule.field, "spec.ingress[0]");
}

#[test]
fn mapped_rules_allow_what_kubernetes_would() {
    let p = ok(WEB);
    let v = |src, dst, proto, port| verdict(&p, src, dst, proto, port);
    let ing0 = Some("shop/web/ingress[0]".to_string());
    // From the gateway block, and from the internet (0/0 minus private ranges).
    assert_eq!(v("10.0.4.9", "10.0.1.5", TCP, 8080), ing0);
    assert_eq!(v("203.0.113.7", "10.0.1.5", TCP, 30050), ing0);
    assert_eq!(v("203.0.113.7", "10.0.1.5", UDP, 9), ing0);
    assert_eq!(v("203.0.113.7", "10.0.1.5", TCP, 30101), None);
    assert_eq!(v("10.9.0.1", "10.0.1.5", TCP, 8080), None, "excepted 10/8");
    assert_eq!(
        v("192.168.1.1", "10.0.1.5", UDP, 53),
        None,
        "excepted 192.168/16"
    );
    // Not to other pods.
    assert_eq!(v("10.0.4.9", "10.0.2.5", TCP, 8080), None);
    // SCTP from anywhere, IPv6 too.
    let ing1 = Some("shop/web/ingress[1]".to_string());
    assert_eq!(v("2001:db8::1", "fd00:0:1::5", SCTP, 3868), ing1);
    assert_eq!(v("2001:db8::1", "fd00:0:1::5", TCP, 8080), None);
    // Egress: postgres, then everything anywhere.
    let eg0 = Some("shop/web/egress[0]".to_string());
    assert_eq!(v("10.0.1.5", "10.1.0.3", TCP, 5432), eg0);
    let eg1 = Some("shop/web/egress[1]".to_string());
    assert_eq!(v("10.0.1.5", "8.8.8.8", ICMP, 0x0800), eg1);
    assert_eq!(
        v("10.0.3.5", "8.8.8.8", ICMP, 0x0800),
        None,
        "not a selected pod"
    );
}

#[test]
fn ip_blocks_do_not_change_world() {
    // 0.0.0.0/0 except 10/8 must not swallow `world` for native rules.
    let text = format!(
        "{WEB}---\nrules:\n  - name: world-to-web\n    from: world\n    to: shop/web\n    ports: [443/tcp]\n"
    );
    let p = ok(&text);
    assert_eq!(
        verdict(&p, "203.0.113.7", "10.0.1.5", TCP, 443),
        Some("world-to-web".into())
    );
    // The selected pods are a user group: no longer world.
    let c = compile(&p, &CompileOptions::default()).unwrap();
    let id = identity_of(&c, ip("10.0.1.5")).unwrap().id;
    assert_eq!(*c.identity(id).unwrap().groups, ["shop/web"]);
}

#[test]
fn deny_all_adds_the_group_and_no_rule() {
    let text = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-all
  annotations: {netpol-agent/cidrs: 10.0.1.0/24}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress: []
"#;
    let p = ok(text);
    assert_eq!(p.groups.len(), 1);
    assert_eq!(p.groups[0].name, "default/deny-all");
    assert!(p.rules.is_empty());
    assert_eq!(verdict(&p, "10.0.4.9", "10.0.1.5", TCP, 80), None);
    // And `run` would refuse it as it is.
    let c = compile(&p, &CompileOptions::default()).unwrap();
    assert_eq!(
        lockout_problems(&p, &c, &CompileOptions::default()).len(),
        1
    );
}

#[test]
fn policy_types_default_as_in_kubernetes() {
    let text = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: out
  annotations: {netpol-agent/cidrs: 10.0.1.0/24}
spec:
  podSelector: {}
  egress:
    - to: [{ipBlock: {cidr: 10.1.0.0/16}}]
"#;
    let p = ok(text);
    assert_eq!(p.rules.len(), 1);
    assert_eq!(p.rules[0].name, "default/out/egress[0]");
    assert_eq!(
        verdict(&p, "10.0.1.5", "10.1.2.3", UDP, 53),
        Some("default/out/egress[0]".into())
    );
}

#[test]
fn k8s_groups_are_named_in_native_rules_and_merge_across_files() {
    let a = parse_str("a.yaml", WEB).unwrap();
    let b = parse_str(
        "b.yaml",
        "groups:\n  gw: [10.0.4.0/26]\nrules:\n  - name: gw-to-web\n    from: gw\n    to: shop/web\n    ports: [9090/tcp]\n",
    )
    .unwrap();
    let p = merge(vec![a, b]).unwrap();
    assert_eq!(
        verdict(&p, "10.0.4.1", "10.0.1.5", TCP, 9090),
        Some("gw-to-web".into())
    );
    // The same NetworkPolicy twice is a duplicate group.
    let again = merge(vec![
        parse_str("a.yaml", WEB).unwrap(),
        parse_str("c.yaml", WEB).unwrap(),
    ]);
    let e = again.unwrap_err().to_string();
    assert!(e.starts_with("c.yaml:8:25: metadata.annotations.netpol-agent/cidrs: group \"shop/web\" is already defined at a.yaml:8:25"), "{e}");
}

/// A NetworkPolicy whose spec is `spec`, indented by two spaces.
fn with_spec(spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: np\n  annotations:\n    netpol-agent/cidrs: 10.0.1.0/24\nspec:\n  podSelector: {{}}\n{spec}"
    )
}

#[test]
fn selectors_need_the_kubernetes_api() {
    let spec = "  ingress:\n    - from:\n        - ipBlock: {cidr: 10.0.0.0/8}\n        - podSelector:\n            matchLabels: {app: x}\n        - namespaceSelector: {}\n          podSelector: {}\n";
    assert_eq!(
        errors(&with_spec(spec)),
        "np.yaml:12:11: spec.ingress[0].from[1].podSelector: needs the Kubernetes API; use ipBlock\n\
         np.yaml:14:11: spec.ingress[0].from[2].namespaceSelector: needs the Kubernetes API; use ipBlock\n\
         np.yaml:15:11: spec.ingress[0].from[2].podSelector: needs the Kubernetes API; use ipBlock"
    );
    let spec = "  egress:\n    - to:\n        - namespaceSelector: {matchLabels: {ns: a}}\n";
    assert_eq!(
        errors(&with_spec(spec)),
        "np.yaml:11:11: spec.egress[0].to[0].namespaceSelector: needs the Kubernetes API; use ipBlock"
    );
}

#[test]
fn named_ports_need_the_kubernetes_api() {
    let spec = "  ingress:\n    - ports:\n        - port: http\n        - port: \"8080\"\n";
    assert_eq!(
        errors(&with_spec(spec)),
        "np.yaml:11:17: spec.ingress[0].ports[0].port: named port \"http\" needs the Kubernetes API (the pods' container ports); use the port number\n\
         np.yaml:12:17: spec.ingress[0].ports[1].port: named port \"8080\" needs the Kubernetes API (the pods' container ports); use the port number"
    );
}

#[test]
fn the_annotation_is_required_and_checked() {
    let text = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: np\nspec:\n  podSelector: {}\n";
    let e = errors(text);
    assert!(
        e.starts_with("np.yaml:4:3: metadata.annotations: missing annotation \"netpol-agent/cidrs\": without the Kubernetes API"),
        "{e}"
    );
    let text = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: np\n  annotations:\n    other: x\nspec:\n  podSelector: {}\n";
    assert!(
        errors(text).starts_with("np.yaml:5:3: metadata.annotations: missing annotation"),
        "{}",
        errors(text)
    );
    let text = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: np\n  annotations:\n    netpol-agent/cidrs: \"10.0.1.5/24 fd00::/64\"\nspec:\n  podSelector: {}\n";
    assert_eq!(
        errors(text),
        "np.yaml:6:25: metadata.annotations.netpol-agent/cidrs: \"10.0.1.5/24\": host bits set: the /24 containing 10.0.1.5 is 10.0.1.0/24; write that, or 10.0.1.5/32 for the one address"
    );
    let text = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: np\n  annotations:\n    netpol-agent/cidrs: \" , \"\nspec:\n  podSelector: {}\n";
    assert_eq!(
        errors(text),
        "np.yaml:6:25: metadata.annotations.netpol-agent/cidrs: names no addresses"
    );
}

#[test]
fn only_networking_v1_network_policies() {
    let e = errors("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n");
    assert_eq!(
        e,
        "np.yaml:2:7: kind: \"ConfigMap\" is not understood: policy files hold native policy or NetworkPolicy objects (networking.k8s.io/v1)"
    );
    let e = errors("apiVersion: extensions/v1beta1\nkind: NetworkPolicy\nmetadata: {name: x}\n");
    assert_eq!(
        e,
        "np.yaml:1:13: apiVersion: NetworkPolicy of apiVersion \"extensions/v1beta1\" is not understood: use networking.k8s.io/v1"
    );
    let e = errors("kind: NetworkPolicy\nspec: {}\n");
    assert!(
        e.starts_with("np.yaml:1:1: a Kubernetes object needs apiVersion and kind"),
        "{e}"
    );
}

#[test]
fn ports_and_blocks_are_validated() {
    let spec = "  ingress:\n    - ports:\n        - protocol: tcp\n          port: 80\n        - endPort: 90\n        - port: 90\n          endPort: 80\n        - port: 0\n        - port: 70000\n        - protocol: ICMP\n";
    assert_eq!(
        errors(&with_spec(spec)),
        "np.yaml:11:21: spec.ingress[0].ports[0].protocol: \"tcp\": expected TCP, UDP or SCTP (Kubernetes writes it TCP)\n\
         np.yaml:13:11: spec.ingress[0].ports[1].endPort: endPort needs port\n\
         np.yaml:15:20: spec.ingress[0].ports[2].endPort: endPort 80 is below port 90\n\
         np.yaml:16:17: spec.ingress[0].ports[3].port: 0: port must be 1-65535\n\
         np.yaml:17:17: spec.ingress[0].ports[4].port: 70000: port must be 1-65535\n\
         np.yaml:18:21: spec.ingress[0].ports[5].protocol: \"ICMP\": expected TCP, UDP or SCTP"
    );
    let spec = "  ingress:\n    - from:\n        - ipBlock:\n            cidr: 10.0.0.0/8\n            except: [10.0.0.0/8, 11.0.0.0/16]\n        - {}\n        - ipBlock: {cidr: 10.0.0.1/8}\n        - ipBlock: {cird: 10.0.0.0/8}\n";
    assert_eq!(
        errors(&with_spec(spec)),
        "np.yaml:13:22: spec.ingress[0].from[0].ipBlock.except[0]: 10.0.0.0/8 is not strictly inside cidr 10.0.0.0/8\n\
         np.yaml:13:34: spec.ingress[0].from[0].ipBlock.except[1]: 11.0.0.0/16 is not strictly inside cidr 10.0.0.0/8\n\
         np.yaml:14:11: spec.ingress[0].from[1]: a peer needs ipBlock\n\
         np.yaml:15:27: spec.ingress[0].from[2].ipBlock.cidr: \"10.0.0.1/8\": host bits set: the /8 containing 10.0.0.1 is 10.0.0.0/8; write that, or 10.0.0.1/32 for the one address\n\
         np.yaml:16:21: spec.ingress[0].from[3].ipBlock.cird: unknown key \"cird\"; did you mean \"cidr\"? (expected cidr, except)\n\
         np.yaml:16:20: spec.ingress[0].from[3].ipBlock: missing \"cidr\""
    );
}

#[test]
fn rules_outside_policy_types_and_unknown_keys_are_errors() {
    let spec = "  policyTypes: [Ingress]\n  egress:\n    - to: [{ipBlock: {cidr: 10.0.0.0/8}}]\n";
    assert_eq!(
        errors(&with_spec(spec)),
        "np.yaml:10:3: spec.egress: policyTypes does not list Egress, so Kubernetes would ignore these rules; add Egress or remove them"
    );
    let spec = "  policyTypes: [Ingres]\n  ingress:\n    - from: [{ipBlock: {cidr: 10.0.0.0/8}}]\n      to: []\n";
    let e = errors(&with_spec(spec));
    assert!(
        e.contains("np.yaml:9:17: spec.policyTypes[0]: \"Ingres\": expected Ingress or Egress"),
        "{e}"
    );
    assert!(
        e.contains("np.yaml:12:7: spec.ingress[0].to: unknown key \"to\""),
        "{e}"
    );
    let e = errors("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: Bad_Name\n  annotations: {netpol-agent/cidrs: 10.0.0.0/8}\nspec:\n  podSelector: {}\n  ingres: []\n");
    assert!(
        e.contains("np.yaml:4:9: metadata.name: \"Bad_Name\" is not a valid Kubernetes name"),
        "{e}"
    );
    assert!(
        e.contains("np.yaml:8:3: spec.ingres: unknown key \"ingres\"; did you mean \"ingress\"?"),
        "{e}"
    );
}

#[test]
fn directory_loading_and_check_accept_network_policies() {
    let dir = std::env::temp_dir().join(format!("netpol-k8s-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("web.yaml"), WEB).unwrap();
    std::fs::write(
        dir.join("native.yaml"),
        "rules:\n  - name: ping\n    from: any\n    to: any\n    ports: [icmp/8]\n",
    )
    .unwrap();
    let p = load_dir(&dir, &ReadLimits::default());
    let _ = std::fs::remove_dir_all(&dir);
    let p = p.unwrap();
    assert_eq!(p.rules.len(), 5);
    assert_eq!(p.rules[0].name, "ping", "files in name order");
}
