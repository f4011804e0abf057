//! `celeriac healthcheck`: GET `http://127.0.0.1:PORT/healthz` (or another path) and exit 0 on a
//! 200 answer, 1 otherwise. For container images without curl (Docker `HEALTHCHECK`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `celeriac healthcheck`.
#[derive(clap::Args, Debug)]
pub struct HealthcheckArgs {
    /// The worker's metrics port.
    #[arg(long, env = "CELERIAC_METRICS_PORT", default_value_t = 9100)]
    pub port: u16,
    /// The path to ask.
    #[arg(long, default_value = "/healthz")]
    pub path: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    pub timeout: u64,
}

/// Run the check; the reason for a failure goes to stderr on one line.
pub fn run(args: &HealthcheckArgs) -> ExitCode {
    match check(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("celeriac healthcheck: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(args: &HealthcheckArgs) -> Result<(), String> {
    let timeout = Duration::from_secs(args.timeout.max(1));
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let mut conn = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    conn.set_read_timeout(Some(timeout))
        .and_then(|()| conn.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("socket: {e}"))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        args.path, args.port
    );
    conn.write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut head = [0u8; 64];
    let n = conn.read(&mut head).map_err(|e| format!("read: {e}"))?;
    let status_line = String::from_utf8_lossy(&head[..n]);
    let status = status_line.split_whitespace().nth(1).unwrap_or("");
    if status == "200" {
        Ok(())
    } else {
        let first = status_line.lines().next().unwrap_or("no answer");
        Err(format!("{} answered {first:?}", args.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serve one request with `status_line`, returning the request's first line.
    fn serve_once(status_line: &'static str) -> (u16, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let handle = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 1024];
            let n = conn.read(&mut buf).expect("read request");
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            let reply = format!("{status_line}\r\nContent-Length: 0\r\n\r\n");
            conn.write_all(reply.as_bytes()).expect("reply");
            request.lines().next().unwrap_or_default().to_string()
        });
        (port, handle)
    }

    fn args(port: u16) -> HealthcheckArgs {
        HealthcheckArgs {
            port,
            path: "/healthz".into(),
            timeout: 3,
        }
    }

    #[test]
    fn ok_on_200() {
        let (port, server) = serve_once("HTTP/1.1 200 OK");
        assert_eq!(check(&args(port)), Ok(()));
        assert_eq!(server.join().expect("server"), "GET /healthz HTTP/1.1");
    }

    #[test]
    fn fails_on_503_and_on_a_closed_port() {
        let (port, server) = serve_once("HTTP/1.1 503 Service Unavailable");
        let err = check(&args(port)).expect_err("503 is unhealthy");
        assert!(err.contains("503"), "{err}");
        server.join().expect("server");
        let closed = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let err = check(&args(closed)).expect_err("nothing listens");
        assert!(err.contains("cannot connect"), "{err}");
    }
}
