//! The runtime facade: the only module that names glommio.
//!
//! Everything else spawns tasks, sleeps, races futures and opens sockets through
//! these functions and types, so a runtime swap touches one file. glommio calls a
//! pinned executor a "shard"; that word never leaves this file (a shard, in sleddog,
//! is always a database shard).
//!
//! Must not: hold any sleddog state. It is plumbing only.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

pub use futures_lite::io::{AsyncReadExt, AsyncWriteExt};

/// A TCP stream owned by the current core.
pub type TcpStream = glommio::net::TcpStream;
/// A TCP listener owned by the current core; bound with SO_REUSEPORT so every core
/// can listen on the same address and the kernel spreads connections between them.
pub type TcpListener = glommio::net::TcpListener;
/// A spawned task; dropping it cancels it, `detach` lets it run on.
pub type Task<T> = glommio::Task<T>;

/// Memory registered with io_uring per executor. The network path needs little
/// (no O_DIRECT file I/O), and `ulimit -l` is often small (8 MiB).
const IO_MEMORY_BYTES: usize = 512 * 1024;
/// io_uring submission queue depth per executor.
const RING_DEPTH: usize = 256;

/// Starts a thread running one executor pinned to `cpu` (when given) and runs
/// `main` to completion on it.
pub fn start_executor<F, Fut>(
    name: String,
    cpu: Option<usize>,
    main: F,
) -> io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let placement = match cpu {
        Some(cpu) => glommio::Placement::Fixed(cpu),
        None => glommio::Placement::Unbound,
    };
    let builder = glommio::LocalExecutorBuilder::new(placement)
        .name(&name)
        .io_memory(IO_MEMORY_BYTES)
        .ring_depth(RING_DEPTH)
        .preempt_timer(Duration::from_millis(10));
    std::thread::Builder::new()
        .name(name)
        .spawn(move || match builder.make() {
            Ok(executor) => executor.run(main()),
            Err(error) => {
                tracing::error!(%error, "could not start executor");
                std::process::exit(1);
            }
        })
}

/// Spawns a task on the current core.
pub fn spawn<T: 'static>(future: impl Future<Output = T> + 'static) -> Task<T> {
    glommio::spawn_local(future)
}

/// Sleeps on the current core's timer wheel.
pub async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await;
}

/// Runs `future` for at most `duration`; `None` when time ran out (the future is dropped).
pub async fn timeout<T>(duration: Duration, future: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(future.await) }, async {
        sleep(duration).await;
        None
    })
    .await
}

/// Yields to other tasks if this one has run for its share of time.
pub async fn yield_if_needed() {
    glommio::yield_if_needed().await;
}

/// The first of two futures to finish; the other is dropped. Biased to `a`.
pub async fn race<T>(a: impl Future<Output = T>, b: impl Future<Output = T>) -> T {
    futures_lite::future::or(a, b).await
}

/// Binds a listener on this core.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(io::Error::from)
}

/// Accepts one connection.
pub async fn accept(listener: &TcpListener) -> io::Result<TcpStream> {
    let stream = listener.accept().await.map_err(io::Error::from)?;
    stream.set_nodelay(true).map_err(io::Error::from)?;
    Ok(stream)
}

/// Connects to `addr` within `duration`.
pub async fn connect(addr: SocketAddr, duration: Duration) -> io::Result<TcpStream> {
    let duration = duration.max(Duration::from_millis(1));
    let stream = TcpStream::connect_timeout(addr, duration)
        .await
        .map_err(io::Error::from)?;
    stream.set_nodelay(true).map_err(io::Error::from)?;
    Ok(stream)
}

/// True when the peer has closed the stream or sent bytes nobody asked for: a
/// pooled server connection in that state is not clean. One non-blocking syscall.
pub fn has_pending_input_or_eof(stream: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: recv writes at most 1 byte into a valid 1-byte buffer; the fd is
    // owned by `stream` and open for the duration of the call.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n >= 0 {
        return true; // 0: EOF; 1: unsolicited bytes
    }
    let error = io::Error::last_os_error();
    error.kind() != io::ErrorKind::WouldBlock
}

/// A one-shot, single-core signal: `fire` wakes every `wait`er, now and later.
#[derive(Default)]
pub struct Signal {
    fired: std::cell::Cell<bool>,
    wakers: std::cell::RefCell<Vec<std::task::Waker>>,
}

impl Signal {
    pub fn new() -> Rc<Signal> {
        Rc::new(Signal::default())
    }

    pub fn fire(&self) {
        self.fired.set(true);
        // The borrow ends before any woken task runs: wake only schedules.
        for waker in self.wakers.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    /// Clears a fired signal so it can be used again.
    pub fn reset(&self) {
        self.fired.set(false);
    }

    pub fn wait(&self) -> SignalWait<'_> {
        SignalWait { signal: self }
    }
}

pub struct SignalWait<'a> {
    signal: &'a Signal,
}

impl Future for SignalWait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.fired.get() {
            return Poll::Ready(());
        }
        let mut wakers = self.signal.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// The core's end of the control thread's doorbell socket.
pub type Doorbell = glommio::net::UnixStream;

/// Wraps the core's end of a doorbell socket pair (already non-blocking).
pub fn doorbell(fd: std::os::fd::OwnedFd) -> Doorbell {
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: the fd is an open, owned Unix stream socket; ownership moves
    // into the glommio stream, which closes it on drop.
    unsafe { Doorbell::from_raw_fd(fd.into_raw_fd()) }
}

/// Waits for the doorbell to ring and swallows the rings; false when the
/// other end closed.
pub async fn wait_doorbell(doorbell: &mut Doorbell) -> bool {
    let mut rings = [0u8; 64];
    matches!(doorbell.read(&mut rings).await, Ok(n) if n > 0)
}

/// A future that never completes: used where an optional timer is absent.
pub async fn never() {
    futures_lite::future::pending::<()>().await;
}

/// Runs every future concurrently on this core; their outputs in order.
/// (Cross-shard queries drive one server connection per shard at once.)
pub async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => done = false,
                }
            }
        }
        if done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|output| output.expect("every future finished"))
        .collect()
}
