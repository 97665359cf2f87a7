//! Messages between the control thread and the cores. Owned data only: nothing
//! mutable is shared across threads; snapshots travel as immutable `Arc`s.

use std::sync::Arc;
use std::time::Instant;

use crate::control::snapshot::Snapshot;
use crate::ids::{ClientPid, CoreId};

/// Control → one core.
#[derive(Debug)]
pub enum ToCore {
    /// A new configuration: new sessions use it at once, pools whose servers
    /// changed drain.
    Config(Arc<Snapshot>),
    /// A client asked to cancel the query of the session `pid` owns on this core.
    Cancel { pid: ClientPid, secret: Vec<u8> },
    /// Stop accepting; close sessions at their next transaction boundary; at
    /// `deadline`, close everything and report `Stopped`.
    Shutdown { deadline: Instant },
}

/// One core → control.
#[derive(Debug)]
pub enum FromCore {
    /// A CancelRequest that arrived on the wrong core, to forward to its owner.
    Cancel { pid: ClientPid, secret: Vec<u8> },
    /// The core has closed every session and is exiting.
    Stopped(CoreId),
}
