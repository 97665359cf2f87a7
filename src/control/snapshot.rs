//! The immutable configuration snapshot the control thread publishes to every core.
//!
//! Built once per (re)load on the control thread, where the expensive work happens:
//! PBKDF2 for every plaintext password (so cores never derive SCRAM secrets on the
//! login path). Cores only read it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{self, ScramSecret};
use crate::config::{AuthType, Config, General, PoolSpec};
use crate::ids::Epoch;

/// How a user proves who they are, prepared for the configured `auth_type`.
#[derive(Debug)]
pub struct Login {
    pub name: String,
    /// Plaintext passwords from users.toml (`password`, `passwords`).
    pub passwords: Vec<String>,
    /// SCRAM candidates sharing one salt: the `password_hash` verifier if given,
    /// else one secret per plaintext password, derived here.
    pub scram: Vec<ScramSecret>,
}

/// Settings the cores read on every session, converted once.
#[derive(Debug, Clone)]
pub struct Timeouts {
    pub connect: Duration,
    pub checkout: Duration,
    pub idle: Duration,
    pub server_lifetime: Duration,
    pub query: Option<Duration>,
    pub client_idle: Option<Duration>,
    pub shutdown: Duration,
}

#[derive(Debug)]
pub struct Snapshot {
    pub epoch: Epoch,
    pub general: General,
    pub timeouts: Timeouts,
    pub auth_type: AuthType,
    /// By user name.
    pub logins: HashMap<String, Login>,
    /// By (database, user): what a core needs to serve that login. Pool sizes are
    /// per process here; `per_core_share` divides them.
    pub pools: HashMap<(String, String), Arc<PoolSpec>>,
    pub workers: usize,
}

impl Snapshot {
    pub fn build(config: &Config, epoch: Epoch) -> Snapshot {
        let general = config.general.clone();
        let ms = Duration::from_millis;
        let timeouts = Timeouts {
            connect: ms(general.connect_timeout_ms),
            checkout: ms(general.checkout_timeout_ms),
            idle: ms(general.idle_timeout_ms),
            server_lifetime: ms(general.server_lifetime_ms),
            query: general.query_timeout_ms.map(ms),
            client_idle: general.client_idle_timeout_ms.map(ms),
            shutdown: ms(general.shutdown_timeout_ms),
        };
        let logins = config
            .users
            .iter()
            .map(|user| {
                let scram = scram_candidates(&user.passwords, user.password_hash.as_deref());
                let login = Login {
                    name: user.name.clone(),
                    passwords: user.passwords.clone(),
                    scram,
                };
                (user.name.clone(), login)
            })
            .collect();
        let pools = config
            .pools()
            .into_iter()
            .map(|spec| ((spec.database.clone(), spec.user.clone()), Arc::new(spec)))
            .collect();
        Snapshot {
            epoch,
            auth_type: general.auth_type,
            workers: general.workers.max(1),
            general,
            timeouts,
            logins,
            pools,
        }
    }

    /// A process-wide size split between cores: `ceil(size / workers)` each, so
    /// the process may open up to `workers - 1` more than `size` in total.
    pub fn per_core_share(&self, size: usize) -> usize {
        size.div_ceil(self.workers)
    }
}

fn scram_candidates(passwords: &[String], hash: Option<&str>) -> Vec<ScramSecret> {
    if let Some(hash) = hash {
        match ScramSecret::parse(hash) {
            Ok(secret) => return vec![secret],
            // Config validation already rejected bad verifiers; a parse failure
            // here means nobody can log in as this user, which is the safe side.
            Err(error) => {
                tracing::error!(%error, "password_hash is not a SCRAM-SHA-256 verifier");
                return Vec::new();
            }
        }
    }
    let salt: [u8; 16] = auth::random_bytes();
    passwords
        .iter()
        .map(|password| ScramSecret::from_password(password, &salt, auth::DEFAULT_ITERATIONS))
        .collect()
}
