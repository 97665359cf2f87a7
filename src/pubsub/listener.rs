//! The task behind one hub: opens the listener connection, runs the hub's
//! LISTEN/UNLISTEN batches on it, reads NotificationResponse messages and
//! hands them to the hub's fan-out; reconnects with backoff when the
//! connection dies, and ends when no session of the core listens any more.
//!
//! Owns the listener connection's socket and its timing (backoff, the bound
//! on a batch). Must not: decide which channels to LISTEN (the hub does) or
//! hold a `RefCell` borrow of the hub across an `.await`: every borrow below
//! is a single synchronous call.

use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::pool::{ServerConn, ServerError};
use crate::protocol::backend::BackendMessage;
use crate::protocol::{write, ProtocolError};
use crate::pubsub::{Batch, Hub, PubSubError};
use crate::rt::{self, AsyncWriteExt};

/// First wait before reconnecting after a failure; doubles per failure.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between reconnect attempts.
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A connection that lived this long was healthy: the backoff starts over.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Bound on one LISTEN/UNLISTEN batch; past it the connection is replaced.
const BATCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a listener connection was given up.
#[derive(Debug)]
pub(crate) enum Lost {
    Server(ServerError),
    /// A batch got no ReadyForQuery within `BATCH_TIMEOUT`.
    BatchTimeout,
    /// A message the connection should not send between statements.
    Unexpected(String),
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lost::Server(error) => write!(f, "{error}"),
            Lost::BatchTimeout => write!(
                f,
                "LISTEN/UNLISTEN not answered within {} s",
                BATCH_TIMEOUT.as_secs()
            ),
            Lost::Unexpected(kind) => write!(f, "unexpected {kind} while idle"),
        }
    }
}

impl From<ServerError> for Lost {
    fn from(error: ServerError) -> Self {
        Lost::Server(error)
    }
}

impl From<ProtocolError> for Lost {
    fn from(error: ProtocolError) -> Self {
        Lost::Server(ServerError::Protocol(error))
    }
}

impl From<std::io::Error> for Lost {
    fn from(error: std::io::Error) -> Self {
        Lost::Server(ServerError::Io(error))
    }
}

/// The wait before the next attempt after `failures` failures in a row.
pub(crate) fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    RECONNECT_BACKOFF_MIN
        .saturating_mul(1 << doublings)
        .min(RECONNECT_BACKOFF_MAX)
}

/// Runs the hub's listener until no channel is wanted; the hub starts it
/// (`Hub::kick`) and it clears `running` as it ends.
pub(crate) async fn run(hub: Rc<Hub>) {
    let mut failures = 0u32;
    let mut lost = false;
    loop {
        if !hub.state.borrow().wants_connection() {
            break;
        }
        let target = hub.target.borrow().clone();
        let Some(pool) = target else {
            let error = PubSubError::Connect("no server known for this login".into());
            hub.state.borrow_mut().connect_failed(error);
            break;
        };
        let conn = pool.connect_unpooled(hub.connect_timeout.get()).await;
        let mut conn = match conn {
            Ok(conn) => conn,
            Err(error) => {
                failures += 1;
                let delay = backoff(failures);
                tracing::warn!(
                    hub = %hub.label(),
                    %error,
                    retry_ms = delay.as_millis() as u64,
                    "pub/sub listener connection failed"
                );
                let error = PubSubError::Connect(error.to_string());
                hub.state.borrow_mut().connect_failed(error);
                rt::sleep(delay).await;
                continue;
            }
        };
        if lost || failures > 0 {
            tracing::info!(hub = %hub.label(), "pub/sub listener reconnected; listening again");
        }
        let opened = Instant::now();
        hub.state.borrow_mut().connected();
        let outcome = serve(&hub, &mut conn).await;
        hub.state.borrow_mut().disconnected();
        drop(conn);
        match outcome {
            Ok(()) => {
                lost = false;
                failures = 0;
                tracing::debug!(hub = %hub.label(), "pub/sub listener closed: no channel left");
            }
            Err(error) => {
                lost = true;
                failures = if opened.elapsed() >= STABLE_AFTER {
                    1
                } else {
                    failures + 1
                };
                let delay = backoff(failures);
                tracing::warn!(
                    hub = %hub.label(),
                    %error,
                    retry_ms = delay.as_millis() as u64,
                    "pub/sub listener connection lost; notifications until it is back are lost"
                );
                rt::sleep(delay).await;
            }
        }
    }
    // No await since the last check of `wants_connection`: a subscriber
    // arriving from now on finds `running` false and starts a new task.
    hub.running.set(false);
}

/// Drives one logged-in listener connection: runs each batch the hub asks
/// for and delivers notifications, until no channel is wanted (`Ok`, after
/// sending Terminate) or the connection fails.
pub(crate) async fn serve(hub: &Rc<Hub>, conn: &mut ServerConn) -> Result<(), Lost> {
    loop {
        if !hub.state.borrow().wants_connection() {
            let mut out = BytesMut::new();
            write::terminate(&mut out);
            let _ = conn.stream.write_all(&out).await;
            return Ok(());
        }
        // Reset before looking, with no await between: a change after the
        // look fires the signal again and the wait below returns at once.
        hub.wake.reset();
        let batch = hub.state.borrow_mut().next_batch();
        if let Some(batch) = batch {
            let outcome = rt::timeout(BATCH_TIMEOUT, run_batch(hub, conn, &batch))
                .await
                .ok_or(Lost::BatchTimeout)??;
            hub.state.borrow_mut().batch_done(outcome);
            continue;
        }
        let read = rt::race(async { Some(conn.read_message().await) }, async {
            hub.wake.wait().await;
            None
        })
        .await;
        if let Some(message) = read {
            idle_message(hub, conn, message?)?;
        }
    }
}

/// Sends one batch and reads through its ReadyForQuery; the inner result is
/// the server's verdict on the statements.
async fn run_batch(
    hub: &Rc<Hub>,
    conn: &mut ServerConn,
    batch: &Batch,
) -> Result<Result<(), PubSubError>, Lost> {
    let mut out = BytesMut::new();
    write::query(&mut out, &batch.sql());
    conn.stream.write_all(&out).await?;
    let mut refused = None;
    loop {
        let message = conn.read_message().await?;
        match BackendMessage::decode(&message)? {
            BackendMessage::NotificationResponse { .. } => deliver(hub, &message),
            BackendMessage::ErrorResponse(fields) => {
                let reason = format!(
                    "{} ({})",
                    fields.message().unwrap_or("unknown error"),
                    fields.code().unwrap_or("XX000")
                );
                refused = Some(PubSubError::Refused(reason));
            }
            BackendMessage::ParameterStatus { name, value } => conn.set_param(name, value),
            BackendMessage::ReadyForQuery(_) => return Ok(refused.map_or(Ok(()), Err)),
            _ => {}
        }
    }
}

/// A message that arrived between batches.
fn idle_message(hub: &Rc<Hub>, conn: &mut ServerConn, message: Bytes) -> Result<(), Lost> {
    match BackendMessage::decode(&message)? {
        BackendMessage::NotificationResponse { .. } => deliver(hub, &message),
        BackendMessage::ParameterStatus { name, value } => conn.set_param(name, value),
        BackendMessage::NoticeResponse(_) => {}
        BackendMessage::ErrorResponse(fields) => {
            // A FATAL (admin shutdown, terminated backend); the close follows.
            tracing::warn!(
                hub = %hub.label(),
                message = fields.message().unwrap_or(""),
                code = fields.code().unwrap_or(""),
                "pub/sub listener connection got an error"
            );
        }
        other => return Err(Lost::Unexpected(format!("{:?}", other.kind()))),
    }
    Ok(())
}

fn deliver(hub: &Rc<Hub>, message: &Bytes) {
    // A copy of its own: a slice of the read buffer would keep the whole
    // buffer alive for as long as the slowest subscriber queues it.
    let message = Bytes::copy_from_slice(message);
    let delivered = hub.state.borrow().deliver(&message);
    if delivered == 0 {
        tracing::debug!(hub = %hub.label(), "notification for a channel nobody listens on now");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    use crate::control::resolve::Resolved;
    use crate::pool::{IdleLimits, ScramCache, ServerLogin, ServerPool};
    use crate::protocol::backend::TransactionStatus;
    use crate::protocol::write::Severity;
    use crate::pubsub::tests::notification;
    use crate::pubsub::{Launch, PubSub};
    use crate::rt::{AsyncReadExt, TcpStream};

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(7), Duration::from_secs(5));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(5));
    }

    /// Runs `test` on a glommio executor of its own, bounded in time.
    fn on_executor<F, Fut>(test: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        let thread = rt::start_executor("pubsub-test".into(), None, move || async move {
            rt::timeout(Duration::from_secs(20), test())
                .await
                .expect("the scripted exchange finished in time");
        })
        .unwrap();
        thread.join().expect("the test on the executor passed");
    }

    fn pool_for(addr: SocketAddr) -> Rc<ServerPool> {
        let limits = IdleLimits {
            idle: Duration::from_secs(60),
            lifetime: Duration::from_secs(3600),
            healthcheck_interval: Duration::from_secs(30),
            healthcheck_timeout: Duration::from_secs(5),
            idle_healthcheck_interval: Duration::from_secs(30),
            idle_healthcheck_delay: Duration::from_secs(5),
        };
        let login = ServerLogin {
            user: "user".into(),
            password: None,
            database: "db".into(),
        };
        let host = addr.ip().to_string();
        let addrs = Resolved::Addrs(vec![addr]);
        let scram = Rc::new(ScramCache::default());
        ServerPool::new(host, addr.port(), addrs, login, 1, 0, limits, scram)
    }

    /// A Postgres stand-in speaking just enough of the protocol.
    struct FakeServer {
        stream: TcpStream,
    }

    impl FakeServer {
        /// Accepts the listener connection and logs it in (trust).
        async fn accept(listener: &rt::TcpListener) -> FakeServer {
            let mut stream = rt::accept(listener).await.unwrap();
            let mut len = [0u8; 4];
            stream.read_exact(&mut len).await.unwrap();
            let mut startup = vec![0u8; u32::from_be_bytes(len) as usize - 4];
            stream.read_exact(&mut startup).await.unwrap();
            let mut out = BytesMut::new();
            write::authentication_ok(&mut out);
            write::backend_key_data(&mut out, 99, &[1, 2, 3, 4]);
            write::ready_for_query(&mut out, TransactionStatus::Idle);
            stream.write_all(&out).await.unwrap();
            FakeServer { stream }
        }

        /// The next frontend message: tag and body.
        async fn read(&mut self) -> (u8, Vec<u8>) {
            let mut header = [0u8; 5];
            self.stream.read_exact(&mut header).await.unwrap();
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
            let mut body = vec![0u8; len as usize - 4];
            self.stream.read_exact(&mut body).await.unwrap();
            (header[0], body)
        }

        async fn expect_query(&mut self, sql: &str) {
            let (tag, body) = self.read().await;
            assert_eq!(tag, b'Q');
            assert_eq!(&body[..body.len() - 1], sql.as_bytes());
        }

        /// Answers a query of `statements` statements tagged `tag`.
        async fn complete(&mut self, tags: &[&str]) {
            let mut out = BytesMut::new();
            for tag in tags {
                write::command_complete(&mut out, tag);
            }
            write::ready_for_query(&mut out, TransactionStatus::Idle);
            self.stream.write_all(&out).await.unwrap();
        }

        async fn send(&mut self, bytes: &[u8]) {
            self.stream.write_all(bytes).await.unwrap();
        }
    }

    async fn taken_when_ready(subscriber: &crate::pubsub::Subscriber) -> Vec<u8> {
        subscriber.ready().await;
        let mut out = BytesMut::new();
        assert!(subscriber.try_take(&mut out));
        out.to_vec()
    }

    #[test]
    fn listens_fans_out_reconnects_and_closes() {
        on_executor(|| async {
            let listener = rt::listen("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            let pubsub = PubSub::with_launch(16, Duration::from_secs(2), Launch::Spawn);
            let hub = pubsub.hub("db", "user");
            *hub.target.borrow_mut() = Some(pool_for(addr));

            let mut a = pubsub.subscriber_for("db", "user").unwrap();
            let mut b = pubsub.subscriber_for("db", "user").unwrap();
            let synced = a.listen("Chan");
            assert!(hub.running.get());
            let mut server = FakeServer::accept(&listener).await;
            server.expect_query("LISTEN \"Chan\"").await;
            assert!(!synced.is_done());
            // A notification that arrives before the ReadyForQuery is delivered.
            let early = notification(4242, "Chan", "early");
            server.send(&early).await;
            server.complete(&["LISTEN"]).await;
            synced.wait().await.unwrap();
            assert_eq!(taken_when_ready(&a).await, early.to_vec());

            // A second subscriber of the same channel: no statement at all.
            assert!(b.listen("Chan").is_done());
            let hello = notification(4242, "Chan", "hello");
            server.send(&hello).await;
            assert_eq!(taken_when_ready(&a).await, hello.to_vec());
            assert_eq!(taken_when_ready(&b).await, hello.to_vec());

            // A channel of its own for a, then the connection dies: the
            // listener reconnects and listens to both again.
            let synced = a.listen("other");
            server.expect_query("LISTEN \"other\"").await;
            server.complete(&["LISTEN"]).await;
            synced.wait().await.unwrap();
            drop(server);
            let mut server = FakeServer::accept(&listener).await;
            server
                .expect_query("LISTEN \"Chan\"; LISTEN \"other\"")
                .await;
            server.complete(&["LISTEN", "LISTEN"]).await;
            let again = notification(7, "other", "again");
            server.send(&again).await;
            assert_eq!(taken_when_ready(&a).await, again.to_vec());

            // The last subscriber of a channel leaves: UNLISTEN.
            a.unlisten("other");
            server.expect_query("UNLISTEN \"other\"").await;
            server.complete(&["UNLISTEN"]).await;
            // A refused LISTEN is reported to the commit that waits.
            let synced = b.listen("refused");
            server.expect_query("LISTEN \"refused\"").await;
            let mut out = BytesMut::new();
            write::error_response(
                &mut out,
                Severity::Error,
                "53200",
                "out of shared memory",
                None,
            );
            server.send(&out).await;
            server.complete(&[]).await;
            assert_eq!(
                synced.wait().await,
                Err(PubSubError::Refused("out of shared memory (53200)".into()))
            );
            assert_eq!(b.channels(), ["Chan", "refused"]);

            // Nobody listens any more: Terminate, then the task ends.
            drop(a);
            drop(b);
            let (tag, _) = server.read().await;
            assert_eq!(tag, b'X');
            let mut byte = [0u8; 1];
            assert_eq!(server.stream.read(&mut byte).await.unwrap(), 0);
            while hub.running.get() {
                rt::sleep(Duration::from_millis(5)).await;
            }

            // A new subscriber starts a new listener.
            let mut c = pubsub.subscriber_for("db", "user").unwrap();
            let synced = c.listen("chan");
            let mut server = FakeServer::accept(&listener).await;
            server.expect_query("LISTEN \"chan\"").await;
            server.complete(&["LISTEN"]).await;
            synced.wait().await.unwrap();
        });
    }

    #[test]
    fn a_failed_connect_is_reported_and_retried() {
        on_executor(|| async {
            // A port nobody listens on.
            let addr = {
                let listener = rt::listen("127.0.0.1:0".parse().unwrap()).unwrap();
                listener.local_addr().unwrap()
            };
            let pubsub = PubSub::with_launch(16, Duration::from_secs(2), Launch::Spawn);
            let hub = pubsub.hub("db", "user");
            *hub.target.borrow_mut() = Some(pool_for(addr));
            let mut a = pubsub.subscriber_for("db", "user").unwrap();
            match a.listen("chan").wait().await {
                Err(PubSubError::Connect(_)) => {}
                other => panic!("expected a connect error, got {other:?}"),
            }
            // The subscription stays; the listener keeps trying while it does.
            assert_eq!(a.channels(), ["chan"]);
            assert!(hub.running.get());
            drop(a);
            while hub.running.get() {
                rt::sleep(Duration::from_millis(5)).await;
            }
        });
    }
}
