//! A TCP proxy that can cut a link the way a network partition does: connections stay
//! open, but nothing gets through in either direction (no reset, no FIN — the far side
//! only notices by silence), and new connections are accepted and go nowhere. Healing
//! the link lets traffic through again; a connection that lost bytes to the cut is
//! usually broken by then, and its peers reconnect. A link can also be cut one way only
//! ([`PartitionProxy::cut_to_client`], [`PartitionProxy::cut_to_target`]): what the target sends is dropped, what the client
//! sends gets through — the half-broken network that a lease must survive.
//!
//! It runs on a thread and runtime of its own, so a test that blocks (polling the CLI)
//! never stalls the traffic it forwards.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// A proxy from a free loopback port to `target`. Dropping it closes everything.
#[derive(Debug)]
pub struct PartitionProxy {
    addr: SocketAddr,
    cut: Arc<Cut>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl PartitionProxy {
    pub fn start(target: SocketAddr) -> PartitionProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("the proxy's address");
        let cut = Arc::new(Cut::default());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let link = Arc::clone(&cut);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the proxy's runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("the proxy's listener");
                tokio::select! {
                    _ = stopped => {}
                    () = accept_forever(listener, target, link) => {}
                }
            });
        });
        PartitionProxy {
            addr,
            cut,
            stop: Some(stop),
        }
    }

    /// Where to connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on nothing gets through, until [`PartitionProxy::heal`].
    pub fn cut(&self) {
        self.cut.to_target.store(true, Ordering::SeqCst);
        self.cut.to_client.store(true, Ordering::SeqCst);
    }

    /// From now on what the target sends is dropped; the client's bytes still reach it.
    pub fn cut_to_client(&self) {
        self.cut.to_client.store(true, Ordering::SeqCst);
    }

    /// From now on what the client sends is dropped; the target's bytes still reach it.
    pub fn cut_to_target(&self) {
        self.cut.to_target.store(true, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.cut.to_target.store(false, Ordering::SeqCst);
        self.cut.to_client.store(false, Ordering::SeqCst);
    }
}

impl Drop for PartitionProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Which directions of the link drop their bytes.
#[derive(Debug, Default)]
struct Cut {
    to_target: AtomicBool,
    to_client: AtomicBool,
}

async fn accept_forever(listener: TcpListener, target: SocketAddr, cut: Arc<Cut>) {
    while let Ok((client, _)) = listener.accept().await {
        let cut = Arc::clone(&cut);
        tokio::spawn(async move {
            // A connection made during a full cut waits (like a SYN into the void would)
            // and connects once the link heals; a one-way cut lets the handshake through.
            while cut.to_target.load(Ordering::SeqCst) && cut.to_client.load(Ordering::SeqCst) {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::join!(
                forward(client_read, server_write, &cut.to_target),
                forward(server_read, client_write, &cut.to_client),
            );
        });
    }
}

/// Copies bytes from `from` to `to`, dropping them while the link is cut.
async fn forward(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, cut: &AtomicBool) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if cut.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    if cut.load(Ordering::SeqCst) {
        // A closing connection sends nothing across a partition either.
        std::future::pending::<()>().await;
    }
    let _ = to.shutdown().await;
}
