//! Everything the agent keeps in bpffs, which outlives the process: the pin
//! layout, whether pinned maps and links can be adopted, and the lock that
//! keeps one agent per pin directory. Uses no other module of the crate.
//!
//! - `layout`: where maps, programs and links are pinned; `uninstall`.
//! - `mount`: bpffs mounted where the agent pins.
//! - `adopt`: whether a pinned map has the shape this build creates.
//! - `linkinfo`: what a pinned link is attached to.
//! - `maps`: the pinned maps opened by name (the offline commands' view).
//! - `lock`: one agent per pin directory.
pub mod adopt;
pub mod layout;
pub mod linkinfo;
pub mod lock;
pub mod maps;
pub mod mount;

pub use adopt::{Plan, Repin, Shape};
pub use layout::{LinkKind, PinLayout};
pub use maps::{kernel_jiffies, Pinned};
pub use mount::ensure_bpffs;
