//! Policy changes reach the kernel without a restart: a Kubernetes-style
//! ConfigMap update (a `..data` symlink swapped by rename) reloads the policy,
//! established flows the new policy no longer allows are cut in both
//! directions, and flows it still allows carry on.
use std::{
    io::{Read, Write},
    net::TcpStream,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use netpol_tests::{
    check, connect_from, require_root, serve, AgentProcess, Edge, Family::V4, Lab, Proto::Tcp,
    ALLOWED_TIMEOUT, DENIED_TIMEOUT,
};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/localplus-cidr");

/// Lays out `files` the way the kubelet mounts a ConfigMap: the data in a
/// hidden versioned directory, `..data` pointing at it, and each visible
/// name a symlink through `..data`.
fn configmap_dir(root: &Path, version: &str, files: &[(String, String)]) {
    let data = root.join(version);
    std::fs::create_dir_all(&data).unwrap();
    for (name, text) in files {
        std::fs::write(data.join(name), text).unwrap();
    }
    let tmp = root.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(version, &tmp).unwrap();
    // The atomic step: rename over the old `..data`.
    std::fs::rename(&tmp, root.join("..data")).unwrap();
    for (name, _) in files {
        let link = root.join(name);
        if link.symlink_metadata().is_err() {
            symlink(Path::new("..data").join(name), &link).unwrap();
        }
    }
}

fn example_files() -> Vec<(String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(EXAMPLE)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// One request/response on a long-lived connection.
fn ping_pong(stream: &mut TcpStream, n: u32) -> std::io::Result<()> {
    let msg = format!("ping {n}\n");
    stream.write_all(msg.as_bytes())?;
    let mut got = vec![0u8; msg.len()];
    stream.read_exact(&mut got)?;
    assert_eq!(got, msg.as_bytes());
    Ok(())
}

fn wait_for_log(agent: &AgentProcess, needle: &str, within: Duration) {
    let start = Instant::now();
    while !agent.log().contains(needle) {
        assert!(
            start.elapsed() < within,
            "agent did not log {needle:?} within {within:?}:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn configmap_swap_reloads_and_revokes() {
    if !require_root() {
        return;
    }
    let root = std::env::temp_dir().join(format!("netpol-cm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(root.clone());

    let v1 = example_files();
    configmap_dir(&root, "..v1", &v1);
    let lab = Lab::localplus();
    let agent = AgentProcess::spawn(&lab, &root, &[]);

    let edges = [
        Edge::allow("gateway", "ledger-a", V4, Tcp, 8080),
        Edge::allow("gateway", "ledger-a", V4, Tcp, 50051),
        Edge::allow("ledger-a", "wallet", V4, Tcp, 50051),
    ];
    let _servers = serve(&lab, &edges);
    let open = |from: &str, to: &str, port: u16| {
        let (f, t) = (lab.ep(from), lab.ep(to));
        let (src, dst) = (f.ip(V4), t.sock(V4, port));
        let s =
            f.ns.run_in(move || connect_from(src, dst, ALLOWED_TIMEOUT))
                .unwrap_or_else(|e| panic!("{from} -> {to}:{port}: {e}\n{}", agent.log()));
        s.set_read_timeout(Some(DENIED_TIMEOUT)).unwrap();
        s
    };
    let mut gateway_http = open("gateway", "ledger-a", 8080);
    let mut ledger_grpc = open("ledger-a", "wallet", 50051);
    ping_pong(&mut gateway_http, 0).unwrap();
    ping_pong(&mut ledger_grpc, 0).unwrap();

    // v2: the gateway may only use gRPC; everything else unchanged.
    let v2: Vec<_> = v1
        .iter()
        .map(|(name, text)| {
            let text = text.replace("ports: [8080/tcp, 50051/tcp]", "ports: [50051/tcp]");
            (name.clone(), text)
        })
        .collect();
    assert_ne!(v1, v2, "the example policy changed shape; update this test");
    configmap_dir(&root, "..v2", &v2);
    wait_for_log(
        &agent,
        "policy generation 2 enforced",
        Duration::from_secs(10),
    );

    let cut = ping_pong(&mut gateway_http, 1);
    assert!(
        cut.is_err(),
        "an established flow whose rule was removed must be cut\n{}",
        agent.log()
    );
    ping_pong(&mut ledger_grpc, 1).unwrap_or_else(|e| {
        panic!(
            "a flow the new policy still allows was disturbed: {e}\n{}",
            agent.log()
        )
    });
    let denied = check(&lab, &edges[0], DENIED_TIMEOUT);
    assert!(
        denied.as_ref().is_err_and(|e| e.is_timeout()),
        "new gateway -> ledger-a:8080 must get no answer, got {denied:?}"
    );
    check(&lab, &edges[1], ALLOWED_TIMEOUT)
        .unwrap_or_else(|e| panic!("gateway -> ledger-a:50051 must still work: {e}"));

    let stats = netpol_tests::observe::cli_json(&agent, &["stats", "--json"]).to_string();
    assert!(
        stats.contains("\"revoked\""),
        "the cut flow must be counted as revoked:\n{stats}"
    );
}
