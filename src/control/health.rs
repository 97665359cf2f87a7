//! The control thread's view of server health: one monitor thread per server
//! probes it every `lsn_check_interval` (`pg_is_in_recovery()`, its WAL
//! position, replay delay), and the control loop turns the observations into
//! one `Health` snapshot for every core: which servers are up, which one is
//! primary where roles are `auto`, how far each replica lags. Cores never probe
//! on their own, so they cannot disagree about who is primary.
//!
//! Must not: touch client traffic, or block the control loop (probes run on
//! their own threads; the loop only receives what they saw).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::config::Role;
use crate::control::resolve::Resolved;
use crate::control::snapshot::Snapshot;
use crate::pool::balance::BanReason;
use crate::pool::server_conn::ServerLogin;

use super::probe::Probe;

pub use crate::ids::ServerId;

/// What one probe of a server found.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// Could not connect, log in or run the check; why.
    Down(String),
    Up(Status),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// `pg_is_in_recovery()`: a standby.
    pub in_recovery: bool,
    /// WAL position in bytes: written (primary) or replayed (standby).
    pub lsn: u64,
    /// Standby: time since the last replayed transaction committed on the
    /// primary, when everything received is replayed this reads as no delay.
    pub replay_delay: Option<Duration>,
}

/// The check every probe runs; one row: in recovery, LSN as bytes from 0/0,
/// replay delay in ms (NULL on a primary or when all received WAL is replayed).
pub const CHECK_SQL: &str = "SELECT pg_is_in_recovery()::text, \
     (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END \
      - '0/0'::pg_lsn)::bigint::text, \
     CASE WHEN NOT pg_is_in_recovery() \
          OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN NULL \
          ELSE (EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp())) * 1000)::bigint::text \
     END";

/// Reads the row `CHECK_SQL` returns.
pub fn parse_check(rows: &[Vec<Option<String>>]) -> Result<Status, String> {
    let row = rows.first().ok_or("the health check returned no row")?;
    let field = |i: usize| row.get(i).and_then(|v| v.as_deref());
    let in_recovery = match field(0) {
        Some("true") => true,
        Some("false") => false,
        other => return Err(format!("pg_is_in_recovery() returned {other:?}")),
    };
    let lsn = field(1)
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or("the health check returned no WAL position")?;
    let replay_delay = field(2)
        .and_then(|v| v.parse::<i64>().ok())
        .map(|ms| Duration::from_millis(ms.max(0) as u64));
    Ok(Status {
        in_recovery,
        lsn,
        replay_delay,
    })
}

/// One server's health as the cores see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerHealth {
    pub up: bool,
    /// Last seen: a standby (Some(true)), a primary (Some(false)), never seen (None).
    pub in_recovery: Option<bool>,
    /// Standby: bytes of WAL behind the primary of its cluster, when known.
    pub lag_bytes: Option<u64>,
    pub replay_delay: Option<Duration>,
}

/// What every core is told about server health.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Health {
    pub servers: HashMap<ServerId, ServerHealth>,
    /// Where writes go for each (database, shard) whose servers have
    /// `role = "auto"`: the elected primary. Absent: none is primary now.
    pub primaries: HashMap<(String, u16), ServerId>,
    /// Servers a core could not use (a refused or timed-out checkout, a
    /// failed idle health check): out of rotation on every core until
    /// `until`, so one core's discovery spares the others the same wait.
    pub reported: HashMap<ServerId, ReportedBan>,
}

/// A failure a core reported, as every core applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportedBan {
    pub reason: BanReason,
    pub until: Instant,
}

impl Health {
    pub fn get(&self, server: &ServerId) -> Option<&ServerHealth> {
        self.servers.get(server)
    }

    /// Among `candidates` (one cluster's servers with `role = "auto"`), the
    /// one to send writes to: the server that is up and not in recovery; if
    /// several are (a promoted standby while the old primary still runs), the
    /// one furthest ahead in WAL, then `current` if it is among them. None when
    /// no candidate is a primary now.
    pub fn elect_primary<'a>(
        &self,
        candidates: impl IntoIterator<Item = &'a ServerId>,
        current: Option<&ServerId>,
        lsns: &HashMap<ServerId, u64>,
    ) -> Option<ServerId> {
        let mut best: Option<(&ServerId, u64)> = None;
        for server in candidates {
            let Some(health) = self.servers.get(server) else {
                continue;
            };
            if !health.up || health.in_recovery != Some(false) {
                continue;
            }
            let lsn = lsns.get(server).copied().unwrap_or(0);
            let better = match best {
                None => true,
                Some((held, held_lsn)) => {
                    lsn > held_lsn || (lsn == held_lsn && Some(server) == current && held != server)
                }
            };
            if better {
                best = Some((server, lsn));
            }
        }
        best.map(|(server, _)| server.clone())
    }
}

/// The control loop's record of what the probes saw, folded into `Health`.
#[derive(Debug, Default)]
pub struct Monitor {
    seen: HashMap<ServerId, Observation>,
}

impl Monitor {
    /// Records an observation; true when the published health changes.
    pub fn observe(&mut self, server: ServerId, observation: Observation) -> bool {
        let before = self.health();
        self.seen.insert(server, observation);
        self.health() != before
    }

    /// Forgets servers no longer configured.
    pub fn retain(&mut self, keep: impl Fn(&ServerId) -> bool) {
        self.seen.retain(|server, _| keep(server));
    }

    /// WAL positions of the servers that are up.
    pub fn lsns(&self) -> HashMap<ServerId, u64> {
        self.seen
            .iter()
            .filter_map(|(server, seen)| match seen {
                Observation::Up(status) => Some((server.clone(), status.lsn)),
                Observation::Down(_) => None,
            })
            .collect()
    }

    /// The health snapshot. A standby's lag is measured against the highest
    /// WAL position among the primaries seen (the probes cannot tell which
    /// primary it follows; one primary per cluster is the norm). Lag in bytes
    /// is rounded to whole KiB so that a busy primary does not make every
    /// probe publish a new snapshot.
    pub fn health(&self) -> Health {
        let primary_lsn = self
            .seen
            .values()
            .filter_map(|seen| match seen {
                Observation::Up(status) if !status.in_recovery => Some(status.lsn),
                _ => None,
            })
            .max();
        let servers = self
            .seen
            .iter()
            .map(|(server, seen)| {
                let health = match seen {
                    Observation::Down(_) => ServerHealth {
                        up: false,
                        in_recovery: None,
                        lag_bytes: None,
                        replay_delay: None,
                    },
                    Observation::Up(status) => ServerHealth {
                        up: true,
                        in_recovery: Some(status.in_recovery),
                        lag_bytes: status
                            .in_recovery
                            .then(|| {
                                primary_lsn.map(|p| p.saturating_sub(status.lsn) / 1024 * 1024)
                            })
                            .flatten(),
                        replay_delay: status.replay_delay,
                    },
                };
                (server.clone(), health)
            })
            .collect();
        Health {
            servers,
            primaries: HashMap::new(),
            reported: HashMap::new(),
        }
    }

    /// The health snapshot with a primary elected for every (database,
    /// shard) of `auto` servers in `clusters`; `previous` keeps the current
    /// primary on a tie.
    pub fn elect(&self, clusters: &[AutoCluster], previous: &Health) -> Health {
        let mut health = self.health();
        let lsns = self.lsns();
        for cluster in clusters {
            let key = (cluster.database.clone(), cluster.shard);
            let current = previous.primaries.get(&key);
            if let Some(primary) = health.elect_primary(&cluster.servers, current, &lsns) {
                health.primaries.insert(key, primary);
            }
        }
        health
    }
}

/// The `auto` servers of one shard of one database: who may be primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoCluster {
    pub database: String,
    pub shard: u16,
    pub servers: Vec<ServerId>,
}

/// What to probe for a snapshot, and which (database, shard) groups elect
/// their primary. Empty when no database has more than one server: with one
/// server per database there is nothing to balance or fail over to.
pub fn plan(snapshot: &Snapshot) -> (Vec<ProbeTarget>, Vec<AutoCluster>) {
    let mut targets: Vec<ProbeTarget> = Vec::new();
    let mut autos: Vec<AutoCluster> = Vec::new();
    let mut specs: Vec<_> = snapshot.pools.values().collect();
    // Deterministic: the first user of a database (by name) logs the probe in.
    specs.sort_by(|a, b| (&a.database, &a.user).cmp(&(&b.database, &b.user)));
    for spec in specs {
        if spec.servers.len() < 2 {
            continue;
        }
        for server in &spec.servers {
            let id = ServerId {
                host: server.host.clone(),
                port: server.port,
                database_name: server.database_name.clone(),
            };
            if server.role == Role::Auto {
                let group = autos
                    .iter_mut()
                    .find(|g| g.database == spec.database && g.shard == server.shard);
                match group {
                    Some(group) if !group.servers.contains(&id) => group.servers.push(id.clone()),
                    Some(_) => {}
                    None => autos.push(AutoCluster {
                        database: spec.database.clone(),
                        shard: server.shard,
                        servers: vec![id.clone()],
                    }),
                }
            }
            if targets.iter().any(|t| t.server == id) {
                continue;
            }
            let Resolved::Addrs(addrs) = snapshot.addrs.get(&server.host, server.port) else {
                continue; // unresolved: logged by DNS; its pools fail at checkout
            };
            let Some(addr) = addrs.first().copied() else {
                continue;
            };
            targets.push(ProbeTarget {
                server: id,
                addr,
                login: ServerLogin {
                    user: server.user.clone(),
                    password: server.password.clone(),
                    database: server.database_name.clone(),
                },
            });
        }
    }
    (targets, autos)
}

/// What a monitor thread needs to probe one server.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    pub server: ServerId,
    pub addr: SocketAddr,
    pub login: ServerLogin,
}

/// When the probes run: first after `delay` (`lsn_check_delay`), then every
/// `interval`, each bounded by `timeout`.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub delay: Duration,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Starts one thread per target probing it per `timing` and sending what it
/// saw on `tx`, until `stop` is set.
pub fn spawn_monitors(
    targets: Vec<ProbeTarget>,
    timing: Timing,
    tx: Sender<(ServerId, Observation)>,
    stop: Arc<AtomicBool>,
) {
    for target in targets {
        let tx = tx.clone();
        let stop = stop.clone();
        let name = format!("health-{}:{}", target.server.host, target.server.port);
        let spawned = std::thread::Builder::new()
            .name(name)
            .spawn(move || monitor_loop(target, timing, tx, stop));
        if let Err(error) = spawned {
            tracing::error!(%error, "could not start a health monitor thread");
        }
    }
}

fn monitor_loop(
    target: ProbeTarget,
    timing: Timing,
    tx: Sender<(ServerId, Observation)>,
    stop: Arc<AtomicBool>,
) {
    let mut probe: Option<Probe> = None;
    sleep_until(Instant::now() + timing.delay, &stop);
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let observation = check(&target, &mut probe, timing.timeout);
        if let Observation::Down(reason) = &observation {
            tracing::debug!(server = %target.server.host, port = target.server.port, %reason, "health check failed");
        }
        if tx.send((target.server.clone(), observation)).is_err() {
            return;
        }
        sleep_until(started + timing.interval, &stop);
    }
}

/// Sleeps in short steps, so a reload's stop is seen promptly.
fn sleep_until(deadline: Instant, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(100)));
    }
}

/// One probe, reusing the connection while it works.
fn check(target: &ProbeTarget, probe: &mut Option<Probe>, timeout: Duration) -> Observation {
    if probe.is_none() {
        match Probe::connect(target.addr, &target.login, timeout) {
            Ok(connected) => *probe = Some(connected),
            Err(error) => return Observation::Down(error.to_string()),
        }
    }
    let result = probe
        .as_mut()
        .expect("connected above")
        .query(CHECK_SQL)
        .map_err(|error| error.to_string())
        .and_then(|rows| parse_check(&rows));
    match result {
        Ok(status) => Observation::Up(status),
        Err(reason) => {
            *probe = None;
            Observation::Down(reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(port: u16) -> ServerId {
        ServerId {
            host: "127.0.0.1".into(),
            port,
            database_name: "db".into(),
        }
    }

    fn up(in_recovery: bool, lsn: u64) -> Observation {
        Observation::Up(Status {
            in_recovery,
            lsn,
            replay_delay: None,
        })
    }

    #[test]
    fn check_rows_parse() {
        let row = |a: &str, b: &str, c: Option<&str>| {
            vec![vec![
                Some(a.to_owned()),
                Some(b.to_owned()),
                c.map(str::to_owned),
            ]]
        };
        assert_eq!(
            parse_check(&row("true", "1024", Some("1500"))),
            Ok(Status {
                in_recovery: true,
                lsn: 1024,
                replay_delay: Some(Duration::from_millis(1500)),
            })
        );
        assert_eq!(
            parse_check(&row("false", "9", None)).unwrap().replay_delay,
            None
        );
        assert!(parse_check(&row("maybe", "9", None)).is_err());
        assert!(parse_check(&row("true", "x", None)).is_err());
        assert!(parse_check(&[]).is_err());
    }

    #[test]
    fn the_up_server_out_of_recovery_is_elected() {
        let mut monitor = Monitor::default();
        assert!(monitor.observe(id(1), up(false, 5120)));
        assert!(monitor.observe(id(2), up(true, 3000)));
        let servers = [id(1), id(2)];
        let health = monitor.health();
        assert_eq!(
            health.elect_primary(&servers, None, &monitor.lsns()),
            Some(id(1))
        );
        // 2120 bytes behind, in whole KiB.
        assert_eq!(health.get(&id(2)).unwrap().lag_bytes, Some(2048));

        // Promotion: both out of recovery; the one ahead wins.
        monitor.observe(id(2), up(false, 6000));
        let health = monitor.health();
        assert_eq!(
            health.elect_primary(&servers, Some(&id(1)), &monitor.lsns()),
            Some(id(2))
        );
        // The old primary stops.
        monitor.observe(id(1), Observation::Down("refused".into()));
        let health = monitor.health();
        assert!(!health.get(&id(1)).unwrap().up);
        assert_eq!(
            health.elect_primary(&servers, Some(&id(1)), &monitor.lsns()),
            Some(id(2))
        );
        // Nobody out of recovery: no primary.
        monitor.observe(id(2), up(true, 6000));
        assert_eq!(
            monitor
                .health()
                .elect_primary(&servers, None, &monitor.lsns()),
            None
        );
    }

    #[test]
    fn a_tie_keeps_the_current_primary() {
        let mut monitor = Monitor::default();
        monitor.observe(id(1), up(false, 100));
        monitor.observe(id(2), up(false, 100));
        let servers = [id(1), id(2)];
        let health = monitor.health();
        let lsns = monitor.lsns();
        assert_eq!(
            health.elect_primary(&servers, Some(&id(2)), &lsns),
            Some(id(2))
        );
        assert_eq!(
            health.elect_primary(&servers, Some(&id(1)), &lsns),
            Some(id(1))
        );
    }

    #[test]
    fn only_material_changes_publish() {
        let mut monitor = Monitor::default();
        assert!(monitor.observe(id(1), up(false, 10_000)));
        assert!(monitor.observe(id(2), up(true, 9_000)));
        // The primary moved a few bytes: the standby's lag rounds the same.
        assert!(!monitor.observe(id(1), up(false, 10_010)));
        assert!(monitor.observe(id(2), Observation::Down("gone".into())));
        assert!(!monitor.observe(id(2), Observation::Down("still gone".into())));
        monitor.retain(|server| server.port == 1);
        assert_eq!(monitor.health().servers.len(), 1);
    }
}
