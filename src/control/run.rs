//! The control loop: start the cores, then react to signals and core messages.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, unbounded, Receiver, Sender};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::config;
use crate::control::health::{
    self, AutoCluster, Health, Monitor, Observation, ReportedBan, ServerId,
};
use crate::control::msg::{CoreLink, FromCore, ToCore};
use crate::control::resolve::Refresher;
use crate::control::snapshot::Snapshot;
use crate::core::{self, CoreContext};
use crate::ids::{CoreId, Epoch};
use crate::pool::balance::BanReason;
use crate::rt;

/// Where the configuration comes from (the CLI's `-c`, `-u`, `-d`).
#[derive(Debug, Clone)]
pub struct Options {
    pub config_path: PathBuf,
    pub users_path: PathBuf,
    pub database_urls: Vec<String>,
}

/// Exit codes of `sleddog run`.
pub const EXIT_OK: i32 = 0;
pub const EXIT_CONFIG: i32 = 1;
pub const EXIT_STARTUP: i32 = 2;
/// Pool maintenance period.
const TICK: Duration = Duration::from_secs(1);
/// Cores one process runs at most (see `ids::ClientPid`).
const MAX_WORKERS: usize = 128;

/// Loads the configuration, logging warnings; every error is logged, all at once.
pub fn load_config(options: &Options) -> Option<config::Config> {
    match config::load(
        &options.config_path,
        &options.users_path,
        &options.database_urls,
    ) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                tracing::warn!("{warning}");
            }
            Some(loaded.config)
        }
        Err(errors) => {
            for error in &errors.0 {
                tracing::error!("{error}");
            }
            None
        }
    }
}

/// Runs sleddog until shutdown; returns the process exit code.
pub fn run(options: Options) -> i32 {
    let Some(config) = load_config(&options) else {
        return EXIT_CONFIG;
    };
    let addr = match listen_addr(&config.general.host, config.general.port) {
        Ok(addr) => addr,
        Err(error) => {
            tracing::error!(%error, "cannot resolve [general] host/port");
            return EXIT_CONFIG;
        }
    };
    let mut epoch = Epoch(1);
    let mut first = Snapshot::build(&config, epoch);
    if first.workers > MAX_WORKERS {
        // The client process id carries the core id in 7 bits.
        tracing::warn!(workers = first.workers, "workers capped at {MAX_WORKERS}");
        first.workers = MAX_WORKERS;
    }
    let mut snapshot = Arc::new(first);
    let (from_core_tx, from_core_rx) = unbounded();
    let cores = match start_cores(&snapshot, addr, &from_core_tx) {
        Ok(cores) => cores,
        Err(error) => {
            tracing::error!(%error, "cannot start cores");
            return EXIT_STARTUP;
        }
    };
    let signals = match signal_channel() {
        Ok(signals) => signals,
        Err(error) => {
            tracing::error!(%error, "cannot install signal handlers");
            return EXIT_STARTUP;
        }
    };
    tracing::info!(%addr, workers = cores.len(), "sleddog listening");

    let mut stopped = 0usize;
    let mut shutdown_deadline: Option<Instant> = None;
    let mut next_tick = Instant::now() + TICK;
    let mut dns = Refresher::new(snapshot.timeouts.dns_refresh, Instant::now());
    let (health_tx, health_rx) = unbounded();
    let mut monitors = Monitors::start(&snapshot, &health_tx);
    let mut published = Health::default();
    loop {
        let now = Instant::now();
        if now >= next_tick {
            broadcast(&cores, || ToCore::Tick);
            next_tick = now + TICK;
            dns.poll(now, snapshot.named_servers());
        }
        let tick = next_tick.saturating_duration_since(now);
        select! {
            recv(signals) -> signal => match signal {
                Ok(SIGHUP) => {
                    if let Some(config) = load_config(&options) {
                        epoch = Epoch(epoch.0 + 1);
                        let mut next = Snapshot::build(&config, epoch);
                        // The number of cores is fixed at start; shares follow it.
                        next.workers = cores.len();
                        snapshot = Arc::new(next);
                        broadcast(&cores, || ToCore::Config(snapshot.clone()));
                        dns.set_period(snapshot.timeouts.dns_refresh, Instant::now());
                        monitors = monitors.restart(&snapshot, &health_tx);
                        tracing::info!(epoch = epoch.0, "configuration reloaded");
                    } else {
                        tracing::error!("reload failed; keeping the running configuration");
                    }
                }
                Ok(SIGINT) if shutdown_deadline.is_none() => {
                    let deadline = Instant::now() + snapshot.timeouts.shutdown;
                    tracing::info!("graceful shutdown: waiting for transactions to finish");
                    broadcast(&cores, || ToCore::Shutdown { deadline });
                    shutdown_deadline = Some(deadline);
                }
                Ok(SIGINT) | Ok(SIGTERM) => {
                    tracing::info!("fast shutdown");
                    return EXIT_OK;
                }
                _ => {}
            },
            recv(dns.results()) -> fresh => {
                dns.finished(Instant::now());
                let changed = fresh.ok().and_then(|fresh| snapshot.addrs.updated(&fresh));
                if let Some(addrs) = changed {
                    epoch = Epoch(epoch.0 + 1);
                    snapshot = Arc::new(snapshot.with_addrs(addrs, epoch));
                    broadcast(&cores, || ToCore::Config(snapshot.clone()));
                    monitors = monitors.restart(&snapshot, &health_tx);
                    tracing::info!(epoch = epoch.0, "server addresses changed in DNS");
                }
            },
            recv(health_rx) -> seen => {
                if let Ok((server, observation)) = seen {
                    if let Some(health) = monitors.observe(server, observation, &published) {
                        published = health;
                        let shared = Arc::new(published.clone());
                        broadcast(&cores, || ToCore::Health(shared.clone()));
                    }
                }
            },
            recv(from_core_rx) -> message => match message {
                Ok(FromCore::ServerFailed { server, reason }) => {
                    if let Some(health) = monitors.report(server, reason, Instant::now(), &published) {
                        published = health;
                        let shared = Arc::new(published.clone());
                        broadcast(&cores, || ToCore::Health(shared.clone()));
                    }
                }
                Ok(FromCore::Cancel { pid, secret }) => {
                    if let Some(core) = cores.get(usize::from(pid.core().0)) {
                        core.send(ToCore::Cancel { pid, secret });
                    }
                }
                Ok(FromCore::Stopped(core)) => {
                    tracing::debug!(%core, "core stopped");
                    stopped += 1;
                    if stopped == cores.len() {
                        return EXIT_OK;
                    }
                }
                Err(_) => return EXIT_OK,
            },
            default(tick) => {
                if shutdown_deadline.is_some_and(|d| Instant::now() > d) {
                    tracing::warn!("shutdown_timeout passed; exiting");
                    return EXIT_OK;
                }
            }
        }
    }
}

fn listen_addr(host: &str, port: u16) -> std::io::Result<SocketAddr> {
    (host, port).to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "host resolves to nothing")
    })
}

fn broadcast(cores: &[CoreLink], message: impl Fn() -> ToCore) {
    for core in cores {
        core.send(message());
    }
}

/// Starts one pinned executor per worker; returns each core's inbox.
fn start_cores(
    snapshot: &Arc<Snapshot>,
    addr: SocketAddr,
    from_core: &Sender<FromCore>,
) -> std::io::Result<Vec<CoreLink>> {
    let cpus: Vec<usize> = core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|id| id.id).collect())
        .unwrap_or_default();
    let mut inboxes = Vec::with_capacity(snapshot.workers);
    for index in 0..snapshot.workers {
        let (tx, rx) = unbounded();
        let (link, doorbell) = CoreLink::new(tx)?;
        let context = CoreContext {
            doorbell,
            id: CoreId(index as u16),
            snapshot: snapshot.clone(),
            inbox: rx,
            outbox: from_core.clone(),
            addr,
        };
        let cpu = (!cpus.is_empty()).then(|| cpus[index % cpus.len()]);
        rt::start_executor(format!("sleddog-core-{index}"), cpu, move || {
            core::run(context)
        })?;
        inboxes.push(link);
    }
    Ok(inboxes)
}

/// Signals arrive on a helper thread and are forwarded as plain numbers.
fn signal_channel() -> std::io::Result<Receiver<i32>> {
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM])?;
    let (tx, rx) = unbounded();
    std::thread::Builder::new()
        .name("sleddog-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if tx.send(signal).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}

/// The health monitor threads of the running configuration and what they saw.
struct Monitors {
    stop: Arc<AtomicBool>,
    monitor: Monitor,
    /// The servers this configuration probes: an observation of any other
    /// (the last one of a thread a reload stopped) is dropped.
    servers: Vec<ServerId>,
    autos: Vec<AutoCluster>,
    /// Failures cores reported, in force until their `until`; only servers
    /// of a database with a choice of servers are banned.
    reported: HashMap<ServerId, ReportedBan>,
    balanced: Vec<ServerId>,
    ban_timeout: Duration,
}

impl Monitors {
    fn start(snapshot: &Snapshot, tx: &Sender<(ServerId, Observation)>) -> Monitors {
        let (targets, autos) = health::plan(snapshot);
        let servers = targets.iter().map(|t| t.server.clone()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        // As in PgDog, the probes run only once `lsn_check_delay` is set.
        let settings = &snapshot.health;
        if let (false, Some(delay)) = (targets.is_empty(), settings.lsn_check_delay) {
            tracing::info!(servers = targets.len(), "health monitors started");
            let timing = health::Timing {
                delay,
                interval: settings.lsn_check_interval,
                timeout: settings.lsn_check_timeout,
            };
            health::spawn_monitors(targets, timing, tx.clone(), stop.clone());
        }
        let balanced = snapshot
            .pools
            .values()
            .filter(|spec| spec.servers.len() > 1)
            .flat_map(|spec| spec.servers.iter())
            .map(|server| ServerId {
                host: server.host.clone(),
                port: server.port,
                database_name: server.database_name.clone(),
            })
            .collect();
        Monitors {
            stop,
            monitor: Monitor::default(),
            servers,
            autos,
            reported: HashMap::new(),
            balanced,
            ban_timeout: settings.ban_timeout,
        }
    }

    /// Stops the threads and starts those of `snapshot`, keeping what was
    /// seen of servers still configured.
    fn restart(self, snapshot: &Snapshot, tx: &Sender<(ServerId, Observation)>) -> Monitors {
        self.stop.store(true, Ordering::Relaxed);
        let mut next = Monitors::start(snapshot, tx);
        let mut monitor = self.monitor;
        monitor.retain(|server| next.servers.contains(server));
        next.monitor = monitor;
        next.reported = self.reported;
        let bans_on = !next.ban_timeout.is_zero();
        next.reported
            .retain(|server, _| bans_on && next.balanced.contains(server));
        next
    }

    /// Records an observation; the new health to publish when it changed.
    fn observe(
        &mut self,
        server: ServerId,
        observation: Observation,
        published: &Health,
    ) -> Option<Health> {
        if !self.servers.contains(&server) {
            return None;
        }
        self.monitor.observe(server, observation);
        let health = self.current(published, Instant::now());
        (health != *published).then_some(health)
    }

    /// A core could not use `server`: every core takes it out of rotation
    /// for `ban_timeout`. The health to publish, unless the server is out
    /// already (when a server dies, each of its sessions reports it; one
    /// report is enough) or is not one a balancer chooses.
    fn report(
        &mut self,
        server: ServerId,
        reason: BanReason,
        now: Instant,
        published: &Health,
    ) -> Option<Health> {
        if self.ban_timeout.is_zero() || !self.balanced.contains(&server) {
            return None;
        }
        self.reported.retain(|_, ban| ban.until > now);
        if self.reported.contains_key(&server) {
            return None;
        }
        tracing::warn!(host = %server.host, port = server.port, ?reason, "server out of rotation on every core");
        let until = now
            .checked_add(self.ban_timeout)
            .unwrap_or(now + Duration::from_secs(365 * 24 * 3600));
        self.reported.insert(server, ReportedBan { reason, until });
        Some(self.current(published, now))
    }

    /// What the monitors see, with the primaries they elect and the
    /// reported failures still in force.
    fn current(&mut self, published: &Health, now: Instant) -> Health {
        let mut health = self.monitor.elect(&self.autos, published);
        self.reported.retain(|_, ban| ban.until > now);
        health.reported = self.reported.clone();
        health
    }
}
