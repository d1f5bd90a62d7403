//! What the kernel says about a BPF link: its type, the program it runs and
//! the interface it is attached to. aya's `LinkInfo` does not expose the
//! interface, and an adopted link must be checked against it (an interface
//! deleted and re-created under the same name is a different attachment).
use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;

pub const LINK_TYPE_XDP: u32 = 6;
pub const LINK_TYPE_TCX: u32 = 11;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub link_type: u32,
    pub id: u32,
    pub prog_id: u32,
    /// 0 once the interface is gone (the link is then defunct).
    pub ifindex: u32,
}

fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a zeroed bpf_attr-sized buffer the command reads and
    // writes within its first 128 bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this descriptor to us.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// Opens a pinned BPF object.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = [0u64; 16];
    attr[0] = c.as_ptr() as u64; // pathname
    bpf(BPF_OBJ_GET, &mut attr).map(owned)
}

/// Reads the link's info. The union after `prog_id` starts at offset 16 (it
/// holds 64-bit members), and both `xdp` and `tcx` begin with the ifindex.
pub fn link_info(fd: &OwnedFd) -> io::Result<LinkInfo> {
    let mut info = [0u32; 64];
    let mut attr = [0u64; 16];
    attr[0] = fd.as_raw_fd() as u32 as u64 | ((std::mem::size_of_val(&info) as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(LinkInfo {
        link_type: info[0],
        id: info[1],
        prog_id: info[2],
        ifindex: info[4],
    })
}

/// Info of the link pinned at `path`.
pub fn pinned_link_info(path: &Path) -> io::Result<LinkInfo> {
    link_info(&obj_get(path)?)
}

/// Whether a link with this id still exists (something still holds it).
pub fn link_exists(id: u32) -> bool {
    let mut attr = [0u64; 16];
    attr[0] = u64::from(id);
    bpf(BPF_LINK_GET_FD_BY_ID, &mut attr).map(owned).is_ok()
}
