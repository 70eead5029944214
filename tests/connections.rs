//! How long connections may hold their place (`limits.max_connections`,
//! `limits.idle_timeout`): silent clients are closed, probes answer on a
//! full server.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::util::{poll_until, Bridge, Dir};

const JOB: &str = "jobs:\n  - job_name: app\n    static_configs: [{targets: ['127.0.0.1:1']}]\n";

fn bridge(limits: &str) -> (Dir, Bridge) {
    let dir = Dir::new();
    let config = dir.write("sdbridge.yml", &format!("limits: {limits}\n{JOB}"));
    let bridge = Bridge::start(&config);
    (dir, bridge)
}

/// Whether the server closed `stream` within `within` (EOF or reset),
/// reading and dropping whatever it sent first (an HTTP/2 GOAWAY).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let start = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let mut buf = [0u8; 4096];
    while start.elapsed() < within {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn a_connection_that_sends_nothing_is_closed() {
    let (_dir, bridge) = bridge("{idle_timeout: 1s}");
    let mut silent = TcpStream::connect(bridge.addr).expect("connect");
    // Generous: the limit is 1 s; without one it is never closed.
    assert!(
        closed_within(&mut silent, Duration::from_secs(15)),
        "a silent connection was still open after 15 s"
    );
}

#[test]
fn an_http2_connection_that_goes_quiet_after_its_preface_is_closed() {
    let (_dir, bridge) = bridge("{idle_timeout: 1s}");
    let mut quiet = TcpStream::connect(bridge.addr).expect("connect");
    // The client preface and an empty SETTINGS frame, then nothing.
    quiet
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .expect("preface");
    assert!(
        closed_within(&mut quiet, Duration::from_secs(15)),
        "a quiet HTTP/2 connection was still open after 15 s"
    );
}

#[test]
fn a_keep_alive_connection_is_closed_once_idle_not_while_used() {
    let (_dir, bridge) = bridge("{idle_timeout: 2s}");
    let mut client = crate::util::KeepAlive::open(bridge.addr);
    // Requests closer together than the limit keep the connection.
    for _ in 0..4 {
        assert_eq!(client.get("/http_sd/app").status, 200);
        std::thread::sleep(Duration::from_millis(700));
    }
    assert!(
        closed_within(client.stream(), Duration::from_secs(15)),
        "an idle keep-alive connection was still open after 15 s"
    );
}

#[test]
fn probes_answer_when_every_connection_is_taken() {
    let (_dir, bridge) = bridge("{max_connections: 4, idle_timeout: 1h}");
    let silent: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(bridge.addr).expect("connect"))
        .collect();
    // The server has taken all four (accept happens after connect returns).
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let healthy = bridge.get("/-/healthy");
    assert_eq!(healthy.status, 200);
    assert_eq!(bridge.get("/-/ready").status, 200);
    // Anything else is turned away while full, not left to hang.
    let busy = bridge.get("/http_sd/app");
    assert_eq!(busy.status, 503, "{}", busy.text());
    assert_eq!(busy.header("retry-after"), Some("1"));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "probes took {:?} on a full server",
        started.elapsed()
    );
    drop(silent);
    // Places freed: a normal request is served again.
    poll_until(Duration::from_secs(10), "a freed place", || {
        (bridge.get("/http_sd/app").status == 200).then_some(())
    });
}

#[test]
fn limits_are_checked() {
    let dir = Dir::new();
    for (limits, want) in [
        ("{max_connections: 0}", "max_connections must be between 1"),
        ("{idle_timeout: 0s}", "idle_timeout must be greater than 0"),
        ("{idle_timeout: soon}", "not a valid duration string"),
    ] {
        let config = dir.write("bad.yml", &format!("limits: {limits}\n{JOB}"));
        let out = crate::util::run_cli(None, ["check", config.to_str().expect("utf-8 path")]);
        assert!(!out.status.success(), "{limits} was accepted");
        let stderr = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stderr.contains(want), "{limits}: {stderr}");
        assert!(
            stderr.contains("bad.yml:1:"),
            "{limits}: no position: {stderr}"
        );
    }
}
