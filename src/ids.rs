//! Identifier newtypes shared by every module (see the vocabulary in docs/architecture.md).

use std::fmt;

/// A CPU core running one executor (a worker). Never a database shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CoreId(pub u16);

/// A horizontal slice of a cluster's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

/// A server as configured: where it is and which database on it. Health and
/// failover are told per server; every pool of a core on it shares its fate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId {
    pub host: String,
    pub port: u16,
    pub database_name: String,
}

/// Version of a published snapshot; grows by one per reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(pub u64);

/// The process id sleddog hands a client in BackendKeyData: the core id in the
/// high bits, a per-core counter below, so a CancelRequest arriving on any core
/// names the core that owns the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientPid(pub u32);

impl ClientPid {
    /// Bits left for the per-core counter; 2^24 sessions before it wraps.
    const COUNTER_BITS: u32 = 24;

    pub fn new(core: CoreId, counter: u32) -> ClientPid {
        let counter = counter & ((1 << Self::COUNTER_BITS) - 1);
        // Keep the top bit clear: drivers treat the pid as a signed int32.
        ClientPid(((u32::from(core.0) & 0x7f) << Self::COUNTER_BITS) | counter)
    }

    pub fn core(self) -> CoreId {
        CoreId((self.0 >> Self::COUNTER_BITS) as u16)
    }
}

impl fmt::Display for CoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "core {}", self.0)
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard {}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_pid_carries_core() {
        for core in [0u16, 1, 7, 127] {
            for counter in [0u32, 1, 0xff_ffff, 0x1ff_ffff] {
                let pid = ClientPid::new(CoreId(core), counter);
                assert_eq!(pid.core(), CoreId(core));
                assert!(pid.0 < 0x8000_0000);
            }
        }
    }
}
