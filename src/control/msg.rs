//! Messages between the control thread and the cores. Owned data only: nothing
//! mutable is shared across threads; snapshots travel as immutable `Arc`s.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Instant;

use crate::control::health::Health;
use crate::control::snapshot::Snapshot;
use crate::ids::{ClientPid, CoreId, ServerId};
use crate::pool::balance::BanReason;

/// Control → one core.
#[derive(Debug)]
pub enum ToCore {
    /// A new configuration: new sessions use it at once, pools whose servers
    /// changed drain.
    Config(Arc<Snapshot>),
    /// What the health monitor sees now: servers up or down, elected
    /// primaries, replica lag.
    Health(Arc<Health>),
    /// A client asked to cancel the query of the session `pid` owns on this core.
    Cancel { pid: ClientPid, secret: Vec<u8> },
    /// Time for pool maintenance (idle expiry, min_pool_size); sent every second
    /// so cores keep no timer of their own (an armed timer costs glommio extra
    /// io_uring work on every sleep).
    Tick,
    /// Stop accepting; close sessions at their next transaction boundary; at
    /// `deadline`, close everything and report `Stopped`.
    Shutdown { deadline: Instant },
}

/// Control's end of one core's inbox: a crossbeam channel plus a doorbell
/// socket whose bytes wake the core's executor (it cannot wait on crossbeam).
pub struct CoreLink {
    tx: crossbeam_channel::Sender<ToCore>,
    bell: UnixStream,
}

impl CoreLink {
    /// Creates the link; the returned fd is the core's end of the doorbell.
    pub fn new(
        tx: crossbeam_channel::Sender<ToCore>,
    ) -> std::io::Result<(CoreLink, std::os::fd::OwnedFd)> {
        let (bell, core_end) = UnixStream::pair()?;
        bell.set_nonblocking(true)?;
        core_end.set_nonblocking(true)?;
        Ok((CoreLink { tx, bell }, core_end.into()))
    }

    /// Queues a message and rings. A full doorbell means the core has unread
    /// rings already, so a failed write loses nothing.
    pub fn send(&self, message: ToCore) {
        if self.tx.send(message).is_ok() {
            let _ = (&self.bell).write(&[1]);
        }
    }
}

/// One core → control.
#[derive(Debug)]
pub enum FromCore {
    /// A CancelRequest that arrived on the wrong core, to forward to its owner.
    Cancel { pid: ClientPid, secret: Vec<u8> },
    /// A checkout on `server` failed (refused, timed out) or its idle health
    /// check did: control takes it out of rotation on every core.
    ServerFailed { server: ServerId, reason: BanReason },
    /// The core has closed every session and is exiting.
    Stopped(CoreId),
}
