//! A TCP proxy in front of a real server that injects faults: delay every
//! chunk, hold bytes without forwarding (a hung peer), cut every open
//! connection, or answer HTTP requests with `503` before they reach the
//! server. Tests put it between a store and Redis or the S3 server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to traffic from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    Pass,
    /// Wait this long before forwarding each chunk, both ways.
    Delay(Duration),
    /// Read but never forward: the peer looks hung.
    Hold,
}

#[derive(Debug)]
struct Shared {
    fault: Mutex<Fault>,
    /// Bumped by [`FaultProxy::cut`]; connections opened before it close.
    generation: AtomicU64,
    /// HTTP requests still to answer `503` without forwarding.
    fail_http: AtomicUsize,
    /// HTTP requests answered `503` so far.
    failed_http: AtomicUsize,
    /// Bytes the server sent that a cut discarded while they were held (the
    /// held chunk and what had arrived behind it).
    dropped_from_server: Mutex<Vec<u8>>,
}

/// A proxy on a free local port, forwarding to `upstream`; stopped on drop.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FaultProxy {
    /// Starts forwarding to `127.0.0.1:upstream_port`.
    pub fn start(upstream_port: u16) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("fault-proxy")
            .build()
            .expect("proxy runtime");
        // Bound here without blocking on the runtime: tests call this from inside their own.
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy port");
        std_listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = std_listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            fault: Mutex::new(Fault::Pass),
            generation: AtomicU64::new(0),
            fail_http: AtomicUsize::new(0),
            failed_http: AtomicUsize::new(0),
            dropped_from_server: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        runtime.spawn(async move {
            let listener = TcpListener::from_std(std_listener).expect("listener on the proxy runtime");
            while let Ok((client, _)) = listener.accept().await {
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    if s.fail_http.load(Ordering::SeqCst) > 0 && answer_503(client_peek(&client).await, &s) {
                        let _ = fail_request(client).await;
                        return;
                    }
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else { return };
                    pipe(client, server, s).await;
                });
            }
        });
        Self { addr, shared, runtime: Some(runtime) }
    }

    /// The proxy's port, to give the store instead of the server's.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Changes what happens to traffic, on open connections too.
    pub fn set(&self, fault: Fault) {
        *self.shared.fault.lock().expect("proxy lock") = fault;
    }

    /// Closes every open connection (new ones are accepted as usual).
    pub fn cut(&self) {
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Answers the next `n` new connections' HTTP requests with `503`.
    pub fn fail_http_requests(&self, n: usize) {
        self.shared.fail_http.store(n, Ordering::SeqCst);
    }

    /// How many requests were answered `503` so far.
    pub fn failed_http_requests(&self) -> usize {
        self.shared.failed_http.load(Ordering::SeqCst)
    }

    /// What the server sent that was held and then discarded by a cut: the
    /// client never saw it, though the server wrote it. Tests use it to know
    /// a fault really lost something instead of hoping their timing did.
    pub fn dropped_from_server(&self) -> Vec<u8> {
        self.shared.dropped_from_server.lock().expect("proxy lock").clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn client_peek(client: &TcpStream) -> bool {
    let mut buf = [0u8; 4];
    matches!(tokio::time::timeout(Duration::from_secs(5), client.peek(&mut buf)).await, Ok(Ok(n)) if n > 0)
}

fn answer_503(has_request: bool, s: &Shared) -> bool {
    let take =
        has_request && s.fail_http.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    if take {
        s.failed_http.fetch_add(1, Ordering::SeqCst);
    }
    take
}

async fn fail_request(mut client: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    // The request head (and whatever body arrived with it); the connection closes after the answer.
    let _ = tokio::time::timeout(Duration::from_millis(200), client.read(&mut buf)).await;
    let body = "<Error><Code>SlowDown</Code><Message>injected by the test proxy</Message></Error>";
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).await?;
    client.write_all(body.as_bytes()).await?;
    client.shutdown().await
}

async fn pipe(client: TcpStream, server: TcpStream, s: Arc<Shared>) {
    let born = s.generation.load(Ordering::SeqCst);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = copy(cr, sw, Arc::clone(&s), born, false);
    let down = copy(sr, cw, s, born, true);
    // Either direction ending (or a cut) closes both.
    tokio::select! {
        _ = up => {},
        _ = down => {},
    }
}

async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    s: Arc<Shared>,
    born: u64,
    from_server: bool,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => r?,
            () = cut_after(&s, born) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        loop {
            let fault = *s.fault.lock().expect("proxy lock");
            match fault {
                Fault::Pass => break,
                Fault::Delay(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Fault::Hold => tokio::time::sleep(Duration::from_millis(20)).await,
            }
            if s.generation.load(Ordering::SeqCst) != born {
                break;
            }
        }
        if s.generation.load(Ordering::SeqCst) != born {
            if from_server {
                // The held chunk and whatever else already arrived behind it.
                let mut dropped = s.dropped_from_server.lock().expect("proxy lock");
                dropped.extend_from_slice(&buf[..n]);
                while let Ok(more) = from.try_read(&mut buf)
                    && more > 0
                {
                    dropped.extend_from_slice(&buf[..more]);
                }
            }
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
    }
}

async fn cut_after(s: &Shared, born: u64) {
    while s.generation.load(Ordering::SeqCst) == born {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
