//! Session start: SSL/GSS negotiation (declined: TLS comes later), cancel
//! requests, protocol version negotiation, login, and the ParameterStatus /
//! BackendKeyData / ReadyForQuery that open the session.
//! (PostgreSQL docs: "protocol-flow", Start-up; "protocol-message-formats".)

use std::rc::Rc;
use std::time::Duration;

use crate::auth;
use crate::config::PoolerMode;
use crate::core::Core;
use crate::ids::ClientPid;
use crate::pool::{CheckoutLimits, Cluster};
use crate::protocol::backend::TransactionStatus;
use crate::protocol::startup::{split_startup, ProtocolVersion, StartupPacket};
use crate::protocol::write;
use crate::rt::{self, AsyncWriteExt};
use crate::session::client::Client;
use crate::session::params::{self, Params};
use crate::session::relay::RelaySettings;
use crate::session::{login_auth, SessionHandle};

/// The whole login must finish within this (PgBouncer's client_login_timeout).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// A client over the connection limit has this long to send its startup
/// packet and be told; it holds no slot, so keep it short.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Startup packets are small; Postgres refuses anything over 10000 bytes.
const MAX_STARTUP_LEN: usize = 10_000;
/// Newest protocol minor version sleddog speaks (3.2: long cancel keys).
const NEWEST_MINOR: u16 = 2;

/// A logged-in client, ready for queries.
pub struct Login {
    pub handle: Rc<SessionHandle>,
    pub cluster: Rc<Cluster>,
    pub settings: RelaySettings,
    /// Settings from the startup packet (incl. `options`), which a server
    /// connection must carry while the client uses it.
    pub startup: Params,
}

/// Runs the start-up exchange; `None` when the connection is done (a cancel
/// request, a refused login, a vanished client).
pub async fn handshake(core: &Rc<Core>, client: &mut Client) -> Option<Login> {
    rt::timeout(LOGIN_TIMEOUT, handshake_inner(core, client))
        .await
        .unwrap_or(None)
}

/// Answers a client over `max_client_connections`: FATAL 53300 once its
/// StartupMessage arrives (as Postgres answers "too many clients"), after
/// declining SSL like any other. A CancelRequest is still routed: cancelling
/// a running query matters most when the proxy is full.
pub async fn refuse(core: &Rc<Core>, client: &mut Client) {
    let refused = async {
        read_startup_message(core, client).await?;
        client.fatal("53300", "too many client connections").await;
        Some(())
    };
    let _ = rt::timeout(REFUSE_TIMEOUT, refused).await;
}

/// Reads up to the StartupMessage, declining SSL/GSS encryption and routing
/// a CancelRequest; `None` when the connection has nothing more to say.
async fn read_startup_message(
    core: &Rc<Core>,
    client: &mut Client,
) -> Option<(ProtocolVersion, Vec<(String, String)>)> {
    loop {
        match read_startup(client).await? {
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                // "N": no encryption; the client may go on in plaintext.
                client.stream.write_all(b"N").await.ok()?;
            }
            StartupPacket::Cancel {
                process_id,
                secret_key,
            } => {
                core.route_cancel(ClientPid(process_id), secret_key.to_vec());
                return None;
            }
            StartupPacket::Startup { version, params } => return Some((version, params)),
        }
    }
}

async fn handshake_inner(core: &Rc<Core>, client: &mut Client) -> Option<Login> {
    let (version, params) = read_startup_message(core, client).await?;
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(user) = param("user").filter(|u| !u.is_empty()) else {
        client
            .fatal(
                "28000",
                "no PostgreSQL user name specified in startup packet",
            )
            .await;
        return None;
    };
    let user = user.to_owned();
    let database = param("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(&user)
        .to_owned();
    let minor = negotiate_version(client, version, &params);

    let snapshot = core.snapshot();
    if !login_auth::authenticate(client, &snapshot, &core.plain_auth, &user).await {
        return None;
    }
    let Some(cluster) = core.pools.borrow().cluster(&database, &user) else {
        let message = format!("database \"{database}\" does not exist");
        client.fatal("3D000", &message).await;
        return None;
    };
    if cluster.shard_count() > 1 && cluster.mode == PoolerMode::Session {
        // A sharded session moves between shards per transaction; a session
        // pinned to one server connection cannot.
        let message = format!(
            "database \"{database}\" is sharded; sharded databases need pooler_mode = \"transaction\""
        );
        client.fatal("0A000", &message).await;
        return None;
    }
    let settings = RelaySettings::from_snapshot(&snapshot, cluster.mode == PoolerMode::Session);
    let limits = CheckoutLimits {
        checkout: snapshot.timeouts.checkout,
        connect: snapshot.timeouts.connect,
    };
    let server_params = match cluster.primary().params(limits).await {
        Ok(params) => params,
        Err(error) => {
            tracing::warn!(%database, %error, "login: no server connection");
            let message = format!("could not get a server connection for \"{database}\": {error}");
            client.fatal("08006", &message).await;
            return None;
        }
    };
    // Cancel keys: 4 bytes under 3.0, 32 under 3.2 (which allows up to 256).
    let secret = if minor >= 2 {
        auth::random_bytes::<32>().to_vec()
    } else {
        auth::random_bytes::<4>().to_vec()
    };
    let handle = core.register(secret);
    let startup = params::startup_params(&params);
    for (name, value) in server_params.iter() {
        // The client's own application_name is reported back verbatim, as
        // Postgres does; its server connections are brought to it before its
        // statements run. (Other reported settings from the startup packet
        // are applied the same way but reported with the server's value,
        // since Postgres would report them normalised.)
        let own = (name == "application_name")
            .then(|| startup.get("application_name"))
            .flatten();
        write::parameter_status(&mut client.out, name, own.unwrap_or(value));
    }
    write::backend_key_data(&mut client.out, handle.pid.0, handle.secret());
    write::ready_for_query(&mut client.out, TransactionStatus::Idle);
    if client.flush().await.is_err() {
        core.unregister(handle.pid);
        return None;
    }
    Some(Login {
        handle,
        cluster,
        settings,
        startup,
    })
}

async fn read_startup(client: &mut Client) -> Option<StartupPacket> {
    loop {
        match split_startup(&mut client.buf, MAX_STARTUP_LEN) {
            Ok(Some(packet)) => return Some(packet),
            Ok(None) => {}
            Err(error) => {
                client.fatal(error.sqlstate(), &error.to_string()).await;
                return None;
            }
        }
        match client.read_more().await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Queues NegotiateProtocolVersion when the client asked for a newer minor
/// version or sent `_pq_.` options; returns the minor version the session uses.
fn negotiate_version(
    client: &mut Client,
    version: ProtocolVersion,
    params: &[(String, String)],
) -> u16 {
    let unrecognized: Vec<&str> = params
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("_pq_."))
        .collect();
    let minor = version.minor.min(NEWEST_MINOR);
    if version.minor > NEWEST_MINOR || !unrecognized.is_empty() {
        write::negotiate_protocol_version(&mut client.out, u32::from(minor), &unrecognized);
    }
    minor
}
