//! Which source addresses may enter through which interface: the `SOURCES`
//! map the XDP program consults before anything else (anti-spoofing). One
//! hash keyed by (ifindex, address) holds both the addresses each pod
//! interface owns and, under the all-zero address, the interface's role, so a
//! legitimate packet on a pod interface costs one lookup.

/// `SOURCES` key: the interface the packet entered on and its source
/// address, both as the kernel compares them (big-endian bytes). IPv4
/// addresses are stored IPv4-mapped (`::ffff:a.b.c.d`), so one key type and
/// one map serve both families. The all-zero address is the interface's own
/// entry (its role, `SRC_IFACE_*`). Aligned to 4 (20 bytes: no padding) so
/// the datapath builds it with word stores.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey {
    pub ifindex: [u8; 4],
    pub addr: [u8; 16],
}

impl SourceKey {
    /// The entry of address `addr` (16 bytes, IPv4-mapped for IPv4) on `ifindex`.
    #[inline(always)]
    pub const fn new(ifindex: u32, addr: [u8; 16]) -> Self {
        Self {
            ifindex: ifindex.to_be_bytes(),
            addr,
        }
    }

    /// The interface's own entry, saying what role it has.
    #[inline(always)]
    pub const fn iface(ifindex: u32) -> Self {
        Self::new(ifindex, [0; 16])
    }

    /// `::ffff:a.b.c.d`, the form IPv4 addresses take in keys.
    #[inline(always)]
    pub const fn mapped_v4(a: [u8; 4]) -> [u8; 16] {
        [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
        ]
    }

    pub const fn ifindex(&self) -> u32 {
        u32::from_be_bytes(self.ifindex)
    }

    pub const fn is_iface(&self) -> bool {
        u128::from_be_bytes(self.addr) == 0
    }
}

/// `SourceValue::kind` of an address entry: the address is routed to this
/// pod interface, so packets from it may enter here.
pub const SRC_OWNED: u32 = 1;
/// Address entry on an uplink: the address belongs to a pod of this node, so
/// a packet from it arriving from outside is forged.
pub const SRC_LOCAL_POD: u32 = 2;
/// Interface entry: a pod interface with known addresses; any other source
/// is forged.
pub const SRC_IFACE_POD: u32 = 3;
/// Interface entry: a pod interface with no address learned yet; every IP
/// packet is dropped (`unknown-endpoint`) until one is.
pub const SRC_IFACE_UNKNOWN: u32 = 4;
/// Interface entry: an uplink; only `SRC_LOCAL_POD` sources are refused.
pub const SRC_IFACE_UPLINK: u32 = 5;
/// Interface entry: a pod interface with no address learned yet, left
/// unchecked (`run --allow-unknown-endpoints`). The check lets everything
/// through; the entry says the interface is a pod's, for the counters.
pub const SRC_IFACE_POD_UNCHECKED: u32 = 6;

/// Whether an interface entry of kind `kind` is a pod interface: its
/// traffic is counted from the pod's side (see `traffic_of`).
#[inline(always)]
pub const fn is_pod_iface(kind: u32) -> bool {
    matches!(
        kind,
        SRC_IFACE_POD | SRC_IFACE_UNKNOWN | SRC_IFACE_POD_UNCHECKED
    )
}

/// Interfaces whose role `IFACE_ROLES` holds (ifindex below this): an array
/// read the verifier inlines, where the `SOURCES` lookup of the role is a hash
/// call. Every packet asks it, to count from the workload's side; an ifindex
/// at or above it is looked up in `SOURCES`.
pub const IFACE_ROLE_SLOTS: u32 = 65536;

/// `SourceValue::origin` bits: where the agent learnt an address entry. The
/// datapath ignores them; they let several sources (the node's routes, the
/// Kubernetes API) share an entry and withdraw only their own claim.
pub const SRC_ORIGIN_ROUTE: u32 = 1 << 0;
pub const SRC_ORIGIN_KUBE: u32 = 1 << 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceValue {
    /// `SRC_OWNED`, `SRC_LOCAL_POD` or `SRC_IFACE_*`.
    pub kind: u32,
    /// `SRC_ORIGIN_*`.
    pub origin: u32,
}
