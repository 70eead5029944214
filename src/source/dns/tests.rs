//! [`super::lookup`] and rounds against small DNS servers made here
//! (loopback, UDP and TCP on one port), whose answers are chosen per
//! test: the outcomes of Prometheus's `lookupWithSearchPath` and
//! `lookupFromAnyServer`, truncation, and names failing on their own.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use super::lookup::{lookup, wire_name, Kind, Resolver};
use super::resolv::ResolvConf;

/// What a fake server does with one query.
#[derive(Clone)]
enum Reply {
    /// Answers with this code and these records (truncated over UDP when
    /// `udp_limit` is exceeded).
    Answer(ResponseCode, Vec<Record>),
    /// Says nothing.
    Silent,
}

/// A fake server: `reply` decides per query name; every query is logged
/// as (name, over TCP).
struct Fake {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<(String, bool)>>>,
}

impl Fake {
    async fn start(udp_limit: usize, reply: fn(&str) -> Reply) -> Fake {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = TcpListener::bind(addr).await.unwrap();
        let log: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
        let answer = move |query: &[u8], over_tcp: bool, log: &Mutex<Vec<(String, bool)>>| {
            let q = Message::from_vec(query).unwrap();
            let name = q.queries[0].name().to_ascii();
            log.lock().unwrap().push((name.clone(), over_tcp));
            match reply(&name) {
                Reply::Silent => None,
                Reply::Answer(code, records) => {
                    let mut m =
                        Message::new(q.metadata.id, MessageType::Response, q.metadata.op_code);
                    m.metadata.response_code = code;
                    m.add_queries(q.queries.clone());
                    m.add_answers(records);
                    let mut bytes = m.to_vec().unwrap();
                    if !over_tcp && bytes.len() > udp_limit {
                        m.answers.clear();
                        m.metadata.truncation = true;
                        bytes = m.to_vec().unwrap();
                    }
                    Some(bytes)
                }
            }
        };
        let udp_log = log.clone();
        tokio::spawn(async move {
            let mut buf = vec![0; 65535];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                // A stray datagram with another id first: it is skipped.
                let mut stray = Message::query();
                stray.metadata.message_type = MessageType::Response;
                let _ = udp.send_to(&stray.to_vec().unwrap(), from).await;
                if let Some(bytes) = answer(&buf[..n], false, &udp_log) {
                    let _ = udp.send_to(&bytes, from).await;
                }
            }
        });
        let tcp_log = log.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp.accept().await {
                let len = s.read_u16().await.unwrap();
                let mut buf = vec![0; usize::from(len)];
                s.read_exact(&mut buf).await.unwrap();
                if let Some(bytes) = answer(&buf, true, &tcp_log) {
                    s.write_all(&(bytes.len() as u16).to_be_bytes())
                        .await
                        .unwrap();
                    s.write_all(&bytes).await.unwrap();
                }
            }
        });
        Fake { addr, log }
    }

    fn log(&self) -> Vec<(String, bool)> {
        self.log.lock().unwrap().clone()
    }
}

fn srv(port: u16) -> Record {
    let data = RData::SRV(SRV::new(0, 0, port, wire_name("t.example.").unwrap()));
    Record::from_rdata(wire_name("_s._tcp.example.").unwrap(), 30, data)
}

fn a(last: u8) -> Record {
    Record::from_rdata(
        wire_name("h.example.").unwrap(),
        30,
        RData::A(A::new(127, 0, 0, last)),
    )
}

fn resolver(servers: &[SocketAddr], conf: &str) -> Resolver {
    Resolver {
        servers: servers.iter().map(|s| (s.to_string(), Ok(*s))).collect(),
        conf: ResolvConf::parse(conf),
    }
}

#[tokio::test]
async fn a_truncated_udp_answer_is_asked_again_over_tcp() {
    let fake = Fake::start(512, |_| {
        Reply::Answer(ResponseCode::NoError, (1000..1100).map(srv).collect())
    })
    .await;
    let r = resolver(&[fake.addr], "");
    let answers = lookup("_s._tcp.example", RecordType::SRV, &r)
        .await
        .unwrap();
    assert_eq!(answers.len(), 100, "the whole answer, from TCP");
    let name = "_s._tcp.example.".to_string();
    assert_eq!(fake.log(), [(name.clone(), false), (name, true)]);
}

#[tokio::test]
async fn the_search_list_stops_at_the_first_noerror_even_without_records() {
    let fake = Fake::start(4096, |name| match name {
        "db.a.example." => Reply::Answer(ResponseCode::NXDomain, vec![]),
        "db.b.example." => Reply::Answer(ResponseCode::NoError, vec![]),
        _ => Reply::Answer(ResponseCode::NoError, vec![a(1)]),
    })
    .await;
    let r = resolver(&[fake.addr], "search a.example b.example c.example\n");
    let answers = lookup("db", RecordType::A, &r).await.unwrap();
    assert!(answers.is_empty(), "NODATA at b.example ends the search");
    let asked: Vec<String> = fake.log().into_iter().map(|(n, _)| n).collect();
    assert_eq!(asked, ["db.a.example.", "db.b.example."]);
    // Enough dots: the name as given first, and it answers.
    let answers = lookup("db.x", RecordType::A, &r).await.unwrap();
    assert_eq!(answers.len(), 1);
    assert_eq!(fake.log().last().unwrap().0, "db.x.");
}

#[tokio::test]
async fn nxdomain_everywhere_is_empty_and_one_failing_name_is_an_error() {
    let nx = Fake::start(4096, |_| Reply::Answer(ResponseCode::NXDomain, vec![])).await;
    let r = resolver(&[nx.addr], "search a.example\n");
    assert!(lookup("gone", RecordType::A, &r).await.unwrap().is_empty());
    assert_eq!(nx.log().len(), 2);

    // NXDOMAIN for one name of the list, SERVFAIL for the other: it cannot
    // be said that the name does not exist.
    let mixed = Fake::start(4096, |name| match name {
        "gone.a.example." => Reply::Answer(ResponseCode::ServFail, vec![]),
        _ => Reply::Answer(ResponseCode::NXDomain, vec![]),
    })
    .await;
    let r = resolver(&[mixed.addr], "search a.example\noptions attempts:1\n");
    let err = lookup("gone", RecordType::A, &r).await.unwrap_err();
    assert_eq!(err.kind, Kind::Rcode);
    assert!(
        err.message.starts_with("could not resolve \"gone\": all servers responded with errors to at least one search domain"),
        "{err}"
    );
    assert!(
        err.message.contains("gone.a.example.: Server Failure"),
        "{err}"
    );
}

#[tokio::test]
async fn servers_are_asked_in_turn_until_one_gives_a_viable_answer() {
    let refusing = Fake::start(4096, |_| Reply::Answer(ResponseCode::Refused, vec![])).await;
    let silent = Fake::start(4096, |_| Reply::Silent).await;
    let good = Fake::start(4096, |_| Reply::Answer(ResponseCode::NoError, vec![a(7)])).await;
    let r = resolver(
        &[refusing.addr, silent.addr, good.addr],
        "options timeout:1 attempts:3\n",
    );
    let answers = lookup("h.example", RecordType::A, &r).await.unwrap();
    assert_eq!(answers.len(), 1);
    assert_eq!((refusing.log().len(), silent.log().len()), (1, 1));

    // No server answers: every one is asked `attempts` times, and the
    // last failure (the silent one's timeout) gives the kind.
    let r = resolver(
        &[refusing.addr, silent.addr],
        "options timeout:1 attempts:2\n",
    );
    let err = lookup("h.example", RecordType::A, &r).await.unwrap_err();
    assert_eq!(err.kind, Kind::Timeout, "{err}");
    assert_eq!((refusing.log().len(), silent.log().len()), (3, 3));
    assert!(
        err.message
            .contains(&format!("{}: h.example.: no answer within 1s", silent.addr)),
        "{err}"
    );
}

#[tokio::test]
async fn a_server_that_is_gone_fails_at_once() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let r = resolver(&[port], "options timeout:30 attempts:1\n");
    let started = std::time::Instant::now();
    let err = lookup("h.example", RecordType::A, &r).await.unwrap_err();
    assert_eq!(err.kind, Kind::Network, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "refused, not timed out"
    );
}

/// Whether `flaky.example.` answers, in the round test's server.
static FLAKY_UP: AtomicBool = AtomicBool::new(false);

#[tokio::test]
async fn a_failing_name_keeps_its_last_good_groups_and_shows_its_error() {
    use super::{round, DnsSdConfig, Names, RecordKind, Who};
    use crate::source::SourceError;
    use tokio::sync::watch;

    let fake = Fake::start(4096, |name| match name {
        "ok.example." => Reply::Answer(ResponseCode::NoError, vec![a(1)]),
        _ if FLAKY_UP.load(Ordering::SeqCst) => Reply::Answer(ResponseCode::NoError, vec![a(2)]),
        _ => Reply::Answer(ResponseCode::ServFail, vec![]),
    })
    .await;
    let config = DnsSdConfig {
        names: vec![
            "ok.example.".into(),
            "flaky.example.".into(),
            "ok.example.".into(),
        ],
        refresh_interval: crate::duration::PromDuration(Duration::from_secs(30)),
        record_type: RecordKind::A,
        port: 9100,
        nameservers: Some(vec![fake.addr]),
    };
    let names = Names::new(&config.names);
    assert_eq!(names.names.len(), 2, "a repeated name is one");
    let (tx, mut rx) = watch::channel::<Option<SourceError>>(None);
    let who = Who {
        job: "j".into(),
        source: "dns_sd#0".into(),
    };
    let served = |groups: &[crate::targetgroup::TargetGroup]| -> Vec<String> {
        groups.iter().flat_map(|g| g.targets.clone()).collect()
    };

    // Before every name has resolved once: the round fails.
    let err = round(&config, &names, &tx, &who).await.unwrap_err();
    assert_eq!(err.kind, "dns_rcode");
    assert!(
        err.message.contains("\"flaky.example.\""),
        "{}",
        err.message
    );
    assert!(!rx.has_changed().unwrap());

    FLAKY_UP.store(true, Ordering::SeqCst);
    let groups = round(&config, &names, &tx, &who).await.unwrap();
    assert_eq!(served(&groups), ["127.0.0.1:9100", "127.0.0.2:9100"]);
    assert_eq!(groups[1].labels.0["__meta_dns_name"], "flaky.example.");
    assert!(!rx.has_changed().unwrap(), "no problem, none reported");

    // It fails again: its last good groups are served, the error is the
    // problem beside the round, reported every round it lasts.
    FLAKY_UP.store(false, Ordering::SeqCst);
    for _ in 0..2 {
        let groups = round(&config, &names, &tx, &who).await.unwrap();
        assert_eq!(served(&groups), ["127.0.0.1:9100", "127.0.0.2:9100"]);
        assert!(rx.has_changed().unwrap());
        let problem = rx.borrow_and_update().clone().expect("a problem");
        assert_eq!(problem.kind, "dns_rcode");
        assert!(
            problem.message.contains("flaky.example.: Server Failure"),
            "{}",
            problem.message
        );
    }

    FLAKY_UP.store(true, Ordering::SeqCst);
    round(&config, &names, &tx, &who).await.unwrap();
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), None, "cleared once it resolves");
}
