//! A real DNS server for the dns_sd tests: Debian's `dnsmasq` (package
//! `dnsmasq-base`), run in the foreground on a loopback address with its
//! records on the command line, no config file, no upstream, and
//! `NXDOMAIN` for every name it does not hold.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};

use crate::util::poll_until;

/// A running dnsmasq, killed on drop.
pub(crate) struct Dnsmasq {
    child: Child,
    /// Where it answers, UDP and TCP.
    pub(crate) addr: SocketAddr,
    binary: PathBuf,
    log: tempfile::NamedTempFile,
}

impl Dnsmasq {
    /// Starts `binary` on `addr` serving `records` (dnsmasq options such
    /// as `--srv-host=...`) and waits until it answers.
    pub(crate) fn start(binary: &Path, addr: SocketAddr, records: &[String]) -> Dnsmasq {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = Command::new(binary)
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--pid-file=",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--log-facility=-",
                // Every name it does not hold: NXDOMAIN, not REFUSED.
                "--local=/#/",
            ])
            .arg(format!("--listen-address={}", addr.ip()))
            .arg(format!("--port={}", addr.port()))
            .args(records)
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("log file"))
            .spawn()
            .expect("start dnsmasq");
        let mut server = Dnsmasq {
            child,
            addr,
            binary: binary.to_path_buf(),
            log,
        };
        poll_until(Duration::from_secs(10), "dnsmasq to answer", || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("dnsmasq exited ({status}): {}", server.log());
            }
            query(addr, "sdbridge-probe.", RecordType::A, true).ok()
        });
        server
    }

    /// What it logged.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Stops it and starts it again on the same address with `records`.
    pub(crate) fn restart(self, records: &[String]) -> Dnsmasq {
        let (binary, addr) = (self.binary.clone(), self.addr);
        drop(self);
        Dnsmasq::start(&binary, addr, records)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback UDP port that is free for TCP too (dnsmasq binds both).
pub(crate) fn free_dns_addr() -> SocketAddr {
    loop {
        let port = crate::util::free_port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return SocketAddr::from(([127, 0, 0, 1], port));
        }
    }
}

/// One UDP query (with EDNS0 at 4096 bytes, as Prometheus asks, when
/// `edns`), its answer.
pub(crate) fn query(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    edns: bool,
) -> Result<Message, String> {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(
        Name::from_ascii(name).map_err(|e| e.to_string())?,
        qtype,
    ));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(4096);
        msg.set_edns(e);
    }
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    let bytes = msg.to_vec().map_err(|e| e.to_string())?;
    socket.send_to(&bytes, server).map_err(|e| e.to_string())?;
    let mut buf = vec![0; 65535];
    let n = socket.recv(&mut buf).map_err(|e| e.to_string())?;
    Message::from_vec(&buf[..n]).map_err(|e| e.to_string())
}
