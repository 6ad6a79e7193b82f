//! `filemetasync health`: asks the running daemon's `/healthz` (on `http.listen`, through
//! loopback when it listens on every address) and exits 0 when it answers 200. This is the
//! container's HEALTHCHECK: the image needs no curl.

use crate::config::Config;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

pub fn run(config: &Config) -> anyhow::Result<ExitCode> {
    let mut address: SocketAddr = config.http.listen;
    if address.ip().is_unspecified() {
        address.set_ip(if address.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .map_err(|error| anyhow::anyhow!("the daemon does not answer on {address}: {error}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let healthy = head.split_whitespace().nth(1) == Some("200");
    print!("{body}");
    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
