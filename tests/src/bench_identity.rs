//! Kubernetes objects at scale for the benchmarks, and canned frames between
//! their pods: namespaces labelled by tier, pods by app and role, and
//! NetworkPolicies that each isolate one app of a namespace for ingress from
//! one role of one tier (a third also limit egress to DNS-like UDP in their
//! tier), in the e2e suite's spirit.
use std::fmt::Write as _;

use crate::{
    bench_frames::{frame, handshake_to, Scenario},
    packet::{Packet, TCP_ACK, TCP_SYN},
};

/// The shape of one object set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    pub pods: usize,
    pub namespaces: usize,
    pub policies: usize,
}

impl std::str::FromStr for Scale {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<usize> = s
            .split(':')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| format!("{s}: expected PODS:NAMESPACES:POLICIES"))?;
        let [pods, namespaces, policies] = parts[..] else {
            return Err(format!("{s}: expected PODS:NAMESPACES:POLICIES"));
        };
        if pods == 0 || namespaces == 0 || policies == 0 {
            return Err(format!("{s}: every count must be above 0"));
        }
        Ok(Self {
            pods,
            namespaces,
            policies,
        })
    }
}

impl std::fmt::Display for Scale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.pods, self.namespaces, self.policies)
    }
}

/// Pod `j`'s IPv4 address (10.64.0.0/10, one per pod).
pub fn pod_ip4(j: usize) -> String {
    format!("10.{}.{}.{}", 64 + j / 65536, (j / 256) % 256, j % 256)
}

/// Pod `j`'s IPv6 address, for dual-stack object sets.
pub fn pod_ip6(j: usize) -> String {
    format!("fd00:64::{:x}:{:x}", j >> 16, j & 0xffff)
}

/// The objects (a `List` of Namespaces and Pods) and the NetworkPolicies.
/// The first `relabel` pods move to an app no policy selects; `dual_stack`
/// gives every pod an IPv6 address beside its IPv4 one.
pub fn objects(scale: Scale, relabel: usize, dual_stack: bool) -> (String, String) {
    let mut objects = String::from("apiVersion: v1\nkind: List\nitems:\n");
    let mut netpols = String::new();
    for (name, text) in object_texts(scale, relabel, dual_stack) {
        if name.starts_with("kubernetes:networkpolicies/") {
            netpols += "---\n";
            netpols += &text;
        } else {
            let _ = writeln!(objects, "- {text}");
        }
    }
    (objects, netpols)
}

/// The same objects, one text per object, named as the agent's API view
/// names them: a pod event changes one of them.
pub fn object_texts(scale: Scale, relabel: usize, dual_stack: bool) -> Vec<(String, String)> {
    let Scale {
        pods,
        namespaces,
        policies,
    } = scale;
    let mut out = Vec::with_capacity(namespaces + pods + policies);
    for n in 0..namespaces {
        out.push((
            format!("kubernetes:namespaces//ns{n}"),
            format!(
                "{{kind: Namespace, metadata: {{name: ns{n}, labels: {{tier: t{}}}}}}}",
                n % 5
            ),
        ));
    }
    for j in 0..pods {
        let app = if j < relabel {
            99
        } else {
            (j / namespaces) % 20
        };
        let ips = if dual_stack {
            format!(
                ", podIPs: [{{ip: {}}}, {{ip: \"{}\"}}]",
                pod_ip4(j),
                pod_ip6(j)
            )
        } else {
            String::new()
        };
        let ns = j % namespaces;
        out.push((
            format!("kubernetes:pods/ns{ns}/p{j}"),
            format!(
                "{{kind: Pod, metadata: {{name: p{j}, namespace: ns{ns}, labels: {{app: a{app}, role: r{}}}}}, status: {{podIP: {}{ips}}}}}",
                j % 7,
                pod_ip4(j),
            ),
        ));
    }
    for k in 0..policies {
        let ns = k % namespaces;
        let mut np = format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np{k}, namespace: ns{ns}}}\n\
             spec:\n  podSelector: {{matchLabels: {{app: a{}}}}}\n  ingress:\n  - from:\n    - namespaceSelector: {{matchLabels: {{tier: t{}}}}}\n      podSelector: {{matchLabels: {{role: r{}}}}}\n    ports: [{{port: {}}}]\n",
            (k / namespaces) % 20,
            k % 5,
            k % 7,
            8000 + k % 20
        );
        if k % 3 == 0 {
            let _ = write!(
                np,
                "  egress:\n  - to:\n    - namespaceSelector: {{matchLabels: {{tier: t{}}}}}\n    ports: [{{port: 53, protocol: UDP}}]\n",
                k % 5
            );
        }
        out.push((format!("kubernetes:networkpolicies/ns{ns}/np{k}"), np));
    }
    out
}

/// The pods the frames travel between, for `objects(scale, 0, true)`.
///
/// `server` is an app-a0 pod of ns0, isolated by policy np0, which admits
/// role r0 of tier-t0 namespaces on 8000/tcp. `client` is such a pod (ns0,
/// role r0) of app a7, which no egress policy selects. `stranger` is in ns1
/// (tier t1): a pod the policies know as a source elsewhere, refused here.
pub struct Pods {
    pub server: usize,
    pub client: usize,
    pub stranger: usize,
}

pub const SERVER_PORT: u16 = 8000;

pub fn pods(scale: Scale) -> Pods {
    let ns = scale.namespaces;
    // Pod j lives in ns(j % ns) with app a((j / ns) % 20) and role r(j % 7).
    let server = if 20 * ns < scale.pods { 20 * ns } else { 0 };
    Pods {
        server,
        client: 7 * ns,
        stranger: 1,
    }
}

/// The verdict scenarios of the plain microbenchmark, between the pods of a
/// workload-identity policy. Names match `bench_frames::scenarios` where the
/// path through the datapath is the same, so the two can be compared.
pub fn scenarios(scale: Scale) -> Vec<Scenario> {
    let p = pods(scale);
    let (client, server, stranger) = (pod_ip4(p.client), pod_ip4(p.server), pod_ip4(p.stranger));
    let (client6, server6) = (pod_ip6(p.client), pod_ip6(p.server));
    let port = SERVER_PORT;
    vec![
        Scenario {
            name: "established TCP ACK (IPv4)",
            setup: handshake_to(&client, &server, 40000, port),
            frame: frame(Packet::ip(&client, &server).tcp(40000, port, TCP_ACK)),
            pass: true,
        },
        Scenario {
            name: "denied SYN, pod to pod",
            setup: vec![],
            frame: frame(Packet::ip(&stranger, &server).tcp(40000, port, TCP_SYN)),
            pass: false,
        },
        Scenario {
            name: "denied SYN from world (IPv4)",
            setup: vec![],
            frame: frame(Packet::ip("203.0.113.10", &server).tcp(40000, port, TCP_SYN)),
            pass: false,
        },
        Scenario {
            name: "allowed SYN: policy + ct write (IPv4)",
            setup: vec![],
            frame: frame(Packet::ip(&client, &server).tcp(40002, port, TCP_SYN)),
            pass: true,
        },
        Scenario {
            name: "established TCP ACK (IPv6)",
            setup: handshake_to(&client6, &server6, 40000, port),
            frame: frame(Packet::ip(&client6, &server6).tcp(40000, port, TCP_ACK)),
            pass: true,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_parses() {
        assert_eq!(
            "10000:100:1000".parse::<Scale>(),
            Ok(Scale {
                pods: 10000,
                namespaces: 100,
                policies: 1000
            })
        );
        assert!("10:0:1".parse::<Scale>().is_err());
        assert!("10:1".parse::<Scale>().is_err());
    }

    #[test]
    fn chosen_pods_have_the_labels_the_policies_need() {
        let scale: Scale = "10000:100:1000".parse().unwrap();
        let p = pods(scale);
        let ns = scale.namespaces;
        assert_eq!((p.server % ns, (p.server / ns) % 20), (0, 0));
        assert_eq!((p.client % ns % 5, p.client % 7), (0, 0));
        assert_ne!(p.stranger % ns % 5, 0);
        assert!(p.server < scale.pods && p.client < scale.pods);
    }
}
