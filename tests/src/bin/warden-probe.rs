//! A tiny program the tests run inside agent cgroups. It performs one action
//! and reports the outcome on stdout as `ok` or `errno=N`, exiting 0 or 1.
//!
//!   warden-probe connect ADDR:PORT        TCP connect
//!   warden-probe udp ADDR:PORT            UDP sendto (unconnected)
//!   warden-probe sleep SECS               stay alive (for kill tests)

use std::{
    io,
    net::{SocketAddr, TcpStream, UdpSocket},
    process::ExitCode,
    time::Duration,
};

fn report(result: io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("errno={}", e.raw_os_error().unwrap_or(-1));
            ExitCode::FAILURE
        }
    }
}

fn addr(arg: Option<&String>) -> SocketAddr {
    arg.and_then(|a| a.parse().ok()).unwrap_or_else(|| {
        eprintln!("usage: warden-probe connect|udp ADDR:PORT");
        std::process::exit(2)
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("connect") => {
            let to = addr(args.get(1));
            report(TcpStream::connect_timeout(&to, Duration::from_secs(5)).map(drop))
        }
        Some("udp") => {
            let to = addr(args.get(1));
            let bind: SocketAddr = if to.is_ipv4() {
                "127.0.0.1:0"
            } else {
                "[::1]:0"
            }
            .parse()
            .expect("literal");
            report(
                UdpSocket::bind(bind)
                    .and_then(|s| s.send_to(b"probe", to))
                    .map(drop),
            )
        }
        Some("sleep") => {
            let secs = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(60);
            std::thread::sleep(Duration::from_secs(secs));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: warden-probe connect|udp ADDR:PORT | sleep SECS");
            ExitCode::from(2)
        }
    }
}
