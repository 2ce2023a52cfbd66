//! The worker's liveness probe follows its async runtime: `/healthz` answers 503 while the
//! runtime makes no progress (here: its only thread blocked, as by a handler that blocks)
//! and 200 again once it moves — answered all along by the probes' own thread.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use cronfleet_worker::handlers::StockHandler;
use cronfleet_worker::{ExecutorWatchdog, Worker, serve_probes};

/// `GET path` over plain HTTP/1.1: the status and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("an answer");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn a_stalled_runtime_fails_healthz_until_it_moves_again() {
    let worker = Worker::builder()
        .coordinators(["http://127.0.0.1:9"])
        .stock_handler(StockHandler::Noop)
        .build()
        .expect("a worker (never run)");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // One thread: a blocking task stalls the whole runtime.
    let watched = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    watched.block_on(async {
        let watchdog = ExecutorWatchdog::start(Duration::from_millis(600));
        serve_probes(listener, worker.status(), watchdog).unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(get(addr, "/healthz"), (200, "ok\n".to_owned()));

        // Block the runtime's only thread for 2.5 s; probe from outside meanwhile.
        let prober = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            get(addr, "/healthz")
        });
        std::thread::sleep(Duration::from_millis(2500));
        let (status, body) = prober.join().unwrap();
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("has made no progress for"), "{body}");

        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(get(addr, "/healthz").0, 200, "live again once it moves");
        let (ready, _) = get(addr, "/readyz");
        assert_eq!(ready, 503, "not registered: readiness is its own matter");
    });
}
