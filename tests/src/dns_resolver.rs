//! A test resolver for the `dns` tests and bench: answers A and AAAA
//! questions for the names it is given (others: NXDOMAIN), over UDP and
//! TCP on one loopback address and port, using hickory-proto for the wire
//! format. It runs in the test process, outside every agent.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{rdata, Name, RData, Record, RecordType};

/// One answer: name (lowercase, no trailing dot), address, TTL seconds.
pub type Answer = (String, IpAddr, u32);

pub struct TestResolver {
    pub addr: SocketAddr,
    /// Questions answered so far.
    pub queries: Arc<AtomicU64>,
}

fn reply(query: &[u8], answers: &[Answer]) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let question = q.queries().first()?.clone();
    let name = question
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let mut m = Message::new();
    m.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(true)
        .add_query(question.clone());
    let mut found = false;
    for (n, addr, ttl) in answers {
        if *n != name {
            continue;
        }
        found = true;
        let data = match (addr, question.query_type()) {
            (IpAddr::V4(a), RecordType::A) => RData::A(rdata::A(*a)),
            (IpAddr::V6(a), RecordType::AAAA) => RData::AAAA(rdata::AAAA(*a)),
            _ => continue,
        };
        m.add_answer(Record::from_rdata(question.name().clone(), *ttl, data));
    }
    if !found {
        m.set_response_code(ResponseCode::NXDomain);
    }
    let _ = Name::root();
    m.to_vec().ok()
}

impl TestResolver {
    /// Serves `answers` on `addr` (UDP and TCP) until the process ends.
    pub fn start(addr: SocketAddr, answers: Vec<Answer>) -> Self {
        let answers = Arc::new(answers);
        let queries = Arc::new(AtomicU64::new(0));
        let udp =
            UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind test resolver {addr}: {e}"));
        let tcp = TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("bind test resolver {addr}/tcp: {e}"));
        {
            let (answers, queries) = (answers.clone(), queries.clone());
            thread::spawn(move || {
                let mut buf = vec![0u8; 65535];
                while let Ok((n, from)) = udp.recv_from(&mut buf) {
                    queries.fetch_add(1, Ordering::Relaxed);
                    if let Some(r) = reply(&buf[..n], &answers) {
                        let _ = udp.send_to(&r, from);
                    }
                }
            });
        }
        {
            let (answers, queries) = (answers.clone(), queries.clone());
            thread::spawn(move || {
                for conn in tcp.incoming() {
                    let Ok(mut s) = conn else { continue };
                    let (answers, queries) = (answers.clone(), queries.clone());
                    thread::spawn(move || loop {
                        let mut len = [0u8; 2];
                        if s.read_exact(&mut len).is_err() {
                            return;
                        }
                        let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                        if s.read_exact(&mut q).is_err() {
                            return;
                        }
                        queries.fetch_add(1, Ordering::Relaxed);
                        if let Some(r) = reply(&q, &answers) {
                            let mut framed = (r.len() as u16).to_be_bytes().to_vec();
                            framed.extend_from_slice(&r);
                            if s.write_all(&framed).is_err() {
                                return;
                            }
                        }
                    });
                }
            });
        }
        Self { addr, queries }
    }
}
