//! The Kubernetes e2e netpol suite's cases with real sockets: nine pods in
//! namespaces x, y and z plugged into the lab's node, the agent run with the
//! pod objects (`--kube-objects`) and one case's NetworkPolicies at a time,
//! and every pod pair checked over TCP and UDP on ports 80 and 81 against the
//! case's truth table. Then a pod relabel and a namespace label change move
//! pods in and out of a policy's peers without restarting the agent.
//!
//! SCTP: this kernel has no SCTP sockets, so SCTP is checked frame by frame
//! in the kernel test (`prog_test_run::workloads`).
use netpol_tests::e2e_netpol::{self, ip, ip6};
use netpol_tests::files::{write_atomically, TempDir};
use netpol_tests::packet::{PROTO_TCP, PROTO_UDP};
use netpol_tests::Family::V4;
use netpol_tests::Proto::{Tcp, Udp};
use netpol_tests::{assert_enforced, require_root, serve, AgentProcess, Edge, Lab, NODE_NAME};

/// (namespace, pod, lab endpoint, host interface).
const E2E_PODS: [(&str, &str, &str, &str); 9] = [
    ("x", "a", "x/a", "lxcxa"),
    ("x", "b", "x/b", "lxcxb"),
    ("x", "c", "x/c", "lxcxc"),
    ("y", "a", "y/a", "lxcya"),
    ("y", "b", "y/b", "lxcyb"),
    ("y", "c", "y/c", "lxcyc"),
    ("z", "a", "z/a", "lxcza"),
    ("z", "b", "z/b", "lxczb"),
    ("z", "c", "z/c", "lxczc"),
];

/// Every pod pair, TCP and UDP on 80 and 81, judged by `truth`.
fn edges(truth: e2e_netpol::Truth) -> Vec<Edge> {
    let mut out = Vec::new();
    for s in E2E_PODS {
        for d in E2E_PODS {
            if s == d {
                continue;
            }
            for (proto, p) in [(Tcp, PROTO_TCP), (Udp, PROTO_UDP)] {
                for port in [80, 81] {
                    let allowed = truth((s.0, s.1), (d.0, d.1), p, port);
                    out.push(if allowed {
                        Edge::allow(s.2, d.2, V4, proto, port)
                    } else {
                        Edge::deny(s.2, d.2, V4, proto, port)
                    });
                }
            }
        }
    }
    out
}

#[test]
fn e2e_cases_with_real_sockets() {
    if !require_root() {
        return;
    }
    let mut lab = Lab::localplus();
    for (ns, pod, name, host_if) in E2E_PODS {
        lab.add_pod(name, host_if, &ip(ns, pod), &ip6(ns, pod), None);
    }
    let root = TempDir::new("lab-kube-e2e");
    let (policy_dir, objects_dir) = (root.join("policy"), root.join("objects"));
    std::fs::create_dir_all(&policy_dir).unwrap();
    std::fs::create_dir_all(&objects_dir).unwrap();
    let objects = e2e_netpol::objects(Some(NODE_NAME));
    write_atomically(&objects_dir, "objects.yaml", &objects);

    let cases = e2e_netpol::cases();
    let all = edges(|_, _, _, _| true);
    let _servers = serve(&lab, &all);
    write_atomically(&objects_dir, "np.yaml", &cases[0].1);
    let objects_arg = objects_dir.to_str().unwrap();
    let agent = AgentProcess::spawn_custom(
        &lab,
        &policy_dir,
        &["lxcx*", "lxcy*", "lxcz*"],
        None,
        &["--kube-objects", objects_arg, "--node-name", NODE_NAME],
    );
    let mut checked = 0;
    for (i, (case, yaml, truth)) in cases.iter().enumerate() {
        if i > 0 {
            agent.after_new_generation(case, || {
                write_atomically(&objects_dir, "np.yaml", yaml);
            });
        }
        let edges = edges(*truth);
        assert_enforced(&lab, &edges, &agent, case);
        checked += edges.len();
    }
    assert_eq!(checked, cases.len() * 72 * 4);

    // x/a admits y/b only (namespace and pod selector in one peer).
    let and_case = cases
        .iter()
        .find(|c| c.0.starts_with("both in one peer"))
        .expect("the AND case");
    agent.after_new_generation("the AND case", || {
        write_atomically(&objects_dir, "np.yaml", &and_case.1);
    });
    let into_xa = |allowed: &[&str]| -> Vec<Edge> {
        E2E_PODS
            .iter()
            .filter(|p| p.2 != "x/a")
            .map(|p| {
                if allowed.contains(&p.2) {
                    Edge::allow(p.2, "x/a", V4, Tcp, 80)
                } else {
                    Edge::deny(p.2, "x/a", V4, Tcp, 80)
                }
            })
            .collect()
    };
    assert_enforced(&lab, &into_xa(&["y/b"]), &agent, "before the relabel");

    // y/c relabelled `pod: b`: now a peer. Namespace z labelled `ns: y`: its
    // pod b is one too.
    let relabelled = objects.replace(
        "{name: c, namespace: y, labels: {pod: c}}",
        "{name: c, namespace: y, labels: {pod: b}}",
    );
    assert_ne!(relabelled, objects);
    agent.after_new_generation("a pod relabel", || {
        write_atomically(&objects_dir, "objects.yaml", &relabelled);
    });
    assert_enforced(
        &lab,
        &into_xa(&["y/b", "y/c"]),
        &agent,
        "after y/c was relabelled pod=b",
    );
    let z_as_y = relabelled.replace("{name: z, labels: {ns: z}}", "{name: z, labels: {ns: y}}");
    assert_ne!(z_as_y, relabelled);
    agent.after_new_generation("a namespace label change", || {
        write_atomically(&objects_dir, "objects.yaml", &z_as_y);
    });
    assert_enforced(
        &lab,
        &into_xa(&["y/b", "y/c", "z/b"]),
        &agent,
        "after namespace z was labelled ns=y",
    );
    // And back: rights go with the labels.
    agent.after_new_generation("the labels restored", || {
        write_atomically(&objects_dir, "objects.yaml", &objects);
    });
    assert_enforced(
        &lab,
        &into_xa(&["y/b"]),
        &agent,
        "after the labels were restored",
    );
}
