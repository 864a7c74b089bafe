//! What an agent does with DNS in the `dns` tests, run inside the agent
//! with `warden run`: ask a resolver (UDP connected like glibc, UDP
//! unconnected, or TCP), then optionally connect to the answer; send a raw
//! (malformed) packet; flood. Prints one line for the test to read.
//!
//! resolve MODE SERVER NAME TYPE [PORT]   MODE: udp | udp-unconnected | tcp
//! raw SERVER HEX
//! flood SERVER NAME MILLIS
//! resolve-retry SERVER NAME TYPE SECS [PORT]  connected UDP, asked again
//!   every second (as a stub resolver retries) until answered or SECS pass
//! peer tcp|udp SERVER NAME      connect (UDP: connected), print the
//!   socket's peer (`getpeername`), then ask NAME on that socket
//! burst SERVER DOMAIN N WAIT_MS   N distinct names `qI.DOMAIN` at once;
//!   counts the answers by response code within WAIT_MS

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::{Name, RData, RecordType};

fn query(name: &str, rtype: RecordType, id: u16) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
    m.to_vec().expect("encode")
}

fn describe(reply: &[u8], from: Option<SocketAddr>) -> (String, Vec<std::net::IpAddr>) {
    let Ok(m) = Message::from_vec(reply) else {
        return ("unparsable".into(), Vec::new());
    };
    let addrs: Vec<std::net::IpAddr> = m
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0.into()),
            RData::AAAA(a) => Some(a.0.into()),
            _ => None,
        })
        .collect();
    let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let code = match u16::from(m.response_code()) {
        0 => "NOERROR".to_string(),
        1 => "FORMERR".to_string(),
        2 => "SERVFAIL".to_string(),
        3 => "NXDOMAIN".to_string(),
        5 => "REFUSED".to_string(),
        n => format!("RCODE{n}"),
    };
    let mut line = format!("{code} {}", list.join(","));
    if let Some(f) = from {
        line.push_str(&format!(" from={f}"));
    }
    (line, addrs)
}

fn udp_for(server: SocketAddr) -> UdpSocket {
    let any = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let s = UdpSocket::bind(any).expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(4)))
        .expect("timeout");
    s
}

fn resolve(
    mode: &str,
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
) -> Result<(String, Vec<std::net::IpAddr>), String> {
    let q = query(name, rtype, 0x5a5a);
    let mut buf = vec![0u8; 65535];
    match mode {
        "udp" => {
            let s = udp_for(server);
            s.connect(server)
                .map_err(|e| format!("connect errno={}", e.raw_os_error().unwrap_or(0)))?;
            s.send(&q)
                .map_err(|e| format!("send errno={}", e.raw_os_error().unwrap_or(0)))?;
            let n = s.recv(&mut buf).map_err(|_| "timeout".to_string())?;
            Ok(describe(&buf[..n], None))
        }
        "udp-unconnected" => {
            let s = udp_for(server);
            s.send_to(&q, server)
                .map_err(|e| format!("send errno={}", e.raw_os_error().unwrap_or(0)))?;
            let (n, from) = s.recv_from(&mut buf).map_err(|_| "timeout".to_string())?;
            Ok(describe(&buf[..n], Some(from)))
        }
        "tcp" => {
            let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(4))
                .map_err(|e| format!("connect errno={}", e.raw_os_error().unwrap_or(0)))?;
            s.set_read_timeout(Some(Duration::from_secs(4)))
                .expect("timeout");
            let mut framed = (q.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&q);
            s.write_all(&framed).map_err(|e| e.to_string())?;
            let mut len = [0u8; 2];
            s.read_exact(&mut len).map_err(|_| "timeout".to_string())?;
            let mut out = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut out).map_err(|_| "timeout".to_string())?;
            Ok(describe(&out, None))
        }
        other => Err(format!("unknown mode {other}")),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["resolve", mode, server, name, rtype, rest @ ..] => {
            let server: SocketAddr = server.parse().expect("server");
            let rtype = if *rtype == "AAAA" {
                RecordType::AAAA
            } else {
                RecordType::A
            };
            match resolve(mode, server, name, rtype) {
                Err(e) => println!("{e}"),
                Ok((mut line, addrs)) => {
                    if let (Some(port), Some(addr)) = (rest.first(), addrs.first()) {
                        let port: u16 = port.parse().expect("port");
                        let to = SocketAddr::new(*addr, port);
                        match TcpStream::connect_timeout(&to, Duration::from_secs(4)) {
                            Ok(_) => line.push_str(" connect=ok"),
                            Err(e) => line.push_str(&format!(
                                " connect=errno={}",
                                e.raw_os_error().unwrap_or(0)
                            )),
                        }
                    }
                    println!("{line}");
                }
            }
        }
        ["raw", server, hex] => {
            let server: SocketAddr = server.parse().expect("server");
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            let s = udp_for(server);
            s.connect(server).expect("connect");
            s.send(&bytes).expect("send");
            let mut buf = vec![0u8; 65535];
            match s.recv(&mut buf) {
                Ok(n) => println!("{}", describe(&buf[..n], None).0),
                Err(_) => println!("timeout"),
            }
        }
        ["resolve-retry", server, name, rtype, secs, rest @ ..] => {
            let server: SocketAddr = server.parse().expect("server");
            let rtype = if *rtype == "AAAA" {
                RecordType::AAAA
            } else {
                RecordType::A
            };
            let s = udp_for(server);
            s.set_read_timeout(Some(Duration::from_secs(1)))
                .expect("timeout");
            s.connect(server).expect("connect");
            let q = query(name, rtype, 0x4b4b);
            let end = Instant::now() + Duration::from_secs(secs.parse().expect("secs"));
            let mut buf = vec![0u8; 65535];
            let mut tries = 0u32;
            let mut answer = None;
            while answer.is_none() && Instant::now() < end {
                tries += 1;
                s.send(&q).expect("send");
                if let Ok(n) = s.recv(&mut buf) {
                    answer = Some(describe(&buf[..n], None));
                }
            }
            let Some((mut line, addrs)) = answer else {
                println!("timeout tries={tries}");
                return;
            };
            if let (Some(port), Some(addr)) = (rest.first(), addrs.first()) {
                let port: u16 = port.parse().expect("port");
                let to = SocketAddr::new(*addr, port);
                match TcpStream::connect_timeout(&to, Duration::from_secs(4)) {
                    Ok(_) => line.push_str(" connect=ok"),
                    Err(e) => {
                        line.push_str(&format!(" connect=errno={}", e.raw_os_error().unwrap_or(0)))
                    }
                }
            }
            println!("{line} tries={tries}");
        }
        ["peer", mode, server, name] => {
            let server: SocketAddr = server.parse().expect("server");
            let q = query(name, RecordType::A, 0x3c3c);
            let mut buf = vec![0u8; 65535];
            match *mode {
                "tcp" => {
                    let mut s = match TcpStream::connect_timeout(&server, Duration::from_secs(4)) {
                        Ok(s) => s,
                        Err(e) => {
                            println!("connect errno={}", e.raw_os_error().unwrap_or(0));
                            return;
                        }
                    };
                    let peer = s.peer_addr().expect("getpeername");
                    s.set_read_timeout(Some(Duration::from_secs(4)))
                        .expect("timeout");
                    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&q);
                    s.write_all(&framed).expect("send");
                    let mut len = [0u8; 2];
                    let code = match s.read_exact(&mut len) {
                        Ok(()) => {
                            let mut out = vec![0u8; usize::from(u16::from_be_bytes(len))];
                            s.read_exact(&mut out).expect("read");
                            describe(&out, None).0
                        }
                        Err(_) => "timeout".into(),
                    };
                    println!("peer={peer} {code}");
                }
                _ => {
                    let s = udp_for(server);
                    s.connect(server).expect("connect");
                    let peer = s.peer_addr().expect("getpeername");
                    s.send(&q).expect("send");
                    let code = match s.recv(&mut buf) {
                        Ok(n) => describe(&buf[..n], None).0,
                        Err(_) => "timeout".into(),
                    };
                    println!("peer={peer} {code}");
                }
            }
        }
        ["burst", server, domain, n, wait_ms] => {
            let server: SocketAddr = server.parse().expect("server");
            let s = udp_for(server);
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            s.connect(server).expect("connect");
            let n: u16 = n.parse().expect("n");
            for i in 0..n {
                s.send(&query(&format!("q{i}.{domain}"), RecordType::A, i))
                    .expect("send");
            }
            let end = Instant::now() + Duration::from_millis(wait_ms.parse().expect("wait"));
            let mut buf = vec![0u8; 65535];
            let (mut refused, mut other) = (0u32, 0u32);
            while Instant::now() < end {
                if let Ok(k) = s.recv(&mut buf) {
                    if describe(&buf[..k], None).0.starts_with("REFUSED") {
                        refused += 1;
                    } else {
                        other += 1;
                    }
                }
            }
            println!("refused={refused} other={other}");
        }
        ["flood", server, name, millis] => {
            let server: SocketAddr = server.parse().expect("server");
            let s = udp_for(server);
            s.connect(server).expect("connect");
            s.set_nonblocking(true).expect("nonblocking");
            let end = Instant::now() + Duration::from_millis(millis.parse().expect("millis"));
            let mut sent = 0u64;
            let mut buf = vec![0u8; 65535];
            while Instant::now() < end {
                let q = query(name, RecordType::A, sent as u16);
                if s.send(&q).is_ok() {
                    sent += 1;
                }
                while s.recv(&mut buf).is_ok() {}
            }
            println!("sent={sent}");
        }
        _ => {
            eprintln!("usage: see the module comment");
            std::process::exit(2);
        }
    }
}
