//! One client connection: TDS messages over TCP, optionally inside TLS.
//!
//! TDS 7.x runs the TLS handshake inside PRELOGIN packets; afterwards TLS records travel
//! bare on the socket. rustls is driven by hand (`read_tls`/`write_tls`) so the handshake
//! can be wrapped and the TLS layer dropped again after LOGIN7 when the client asked to
//! encrypt the login only.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::{ServerConfig, ServerConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::packet::{self, HEADER_LEN, PRELOGIN, STATUS_EOM};

/// A client connection that reads and writes whole TDS messages.
pub(crate) struct Channel {
    stream: TcpStream,
    tls: Option<ServerConnection>,
    plain: Vec<u8>,
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Channel {
    /// Wraps an accepted socket; plaintext until [`Channel::start_tls`].
    pub(crate) fn new(stream: TcpStream) -> Self {
        Channel {
            stream,
            tls: None,
            plain: Vec::new(),
        }
    }

    async fn raw_read_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        self.stream.read_exact(&mut buf).await?;
        Ok(buf)
    }

    /// Reads exactly `n` application bytes (decrypted when TLS is on).
    async fn read_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        if self.tls.is_none() {
            if self.plain.is_empty() {
                return self.raw_read_exact(n).await;
            }
            let from_buffer = n.min(self.plain.len());
            let mut out: Vec<u8> = self.plain.drain(..from_buffer).collect();
            out.extend(self.raw_read_exact(n - from_buffer).await?);
            return Ok(out);
        }
        while self.plain.len() < n {
            self.pull_tls().await?;
        }
        Ok(self.plain.drain(..n).collect())
    }

    /// Decrypts what rustls holds, reading more records from the socket when it holds none.
    async fn pull_tls(&mut self) -> io::Result<()> {
        let Some(conn) = self.tls.as_mut() else {
            return Ok(());
        };
        let mut chunk = [0u8; 16 * 1024];
        match conn.reader().read(&mut chunk) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                self.plain.extend_from_slice(&chunk[..n]);
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut records = &chunk[..n];
        while !records.is_empty() {
            conn.read_tls(&mut records)?;
            conn.process_new_packets().map_err(tls_error)?;
        }
        Ok(())
    }

    /// Writes application bytes (encrypted when TLS is on).
    pub(crate) async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        let Some(conn) = self.tls.as_mut() else {
            return self.stream.write_all(data).await;
        };
        conn.writer().write_all(data)?;
        let mut records = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut records)?;
        }
        self.stream.write_all(&records).await
    }

    /// Reads one whole message: its packet type and the joined payloads.
    pub(crate) async fn read_message(&mut self) -> io::Result<(u8, Vec<u8>)> {
        let mut payload = Vec::new();
        loop {
            let head = self.read_exact(HEADER_LEN).await?;
            let len = u16::from_be_bytes([head[2], head[3]]) as usize;
            if len < HEADER_LEN {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("packet length {len} is shorter than its header"),
                ));
            }
            payload.extend(self.read_exact(len - HEADER_LEN).await?);
            if head[1] & STATUS_EOM != 0 {
                return Ok((head[0], payload));
            }
        }
    }

    /// Sends one whole message, cut into packets.
    pub(crate) async fn send_message(&mut self, kind: u8, payload: &[u8]) -> io::Result<()> {
        self.write_all(&packet::frame(kind, payload)).await
    }

    /// Runs the server side of the TLS handshake with its records inside PRELOGIN packets;
    /// TLS stays on for everything after.
    pub(crate) async fn start_tls(&mut self, config: Arc<ServerConfig>) -> io::Result<()> {
        let mut conn = ServerConnection::new(config).map_err(tls_error)?;
        loop {
            let mut records = Vec::new();
            while conn.wants_write() {
                conn.write_tls(&mut records)?;
            }
            if !records.is_empty() {
                self.send_message(PRELOGIN, &records).await?;
            }
            if !conn.is_handshaking() {
                break;
            }
            let (kind, payload) = self.read_message().await?;
            if kind != PRELOGIN {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("expected a PRELOGIN packet in the TLS handshake, got 0x{kind:02x}"),
                ));
            }
            let mut records = &payload[..];
            while !records.is_empty() {
                conn.read_tls(&mut records)?;
                conn.process_new_packets().map_err(tls_error)?;
            }
        }
        self.tls = Some(conn);
        Ok(())
    }

    /// Drops TLS (the client encrypted the login only); later bytes are plaintext.
    pub(crate) fn stop_tls(&mut self) {
        self.tls = None;
    }
}

/// Streams one response message packet by packet, so large results are not held whole.
pub(crate) struct MessageWriter {
    kind: u8,
    buf: Vec<u8>,
    packet_id: u8,
}

impl MessageWriter {
    /// A writer for one message of packet type `kind`.
    pub(crate) fn new(kind: u8) -> Self {
        MessageWriter {
            kind,
            buf: Vec::with_capacity(packet::PACKET_SIZE),
            packet_id: 1,
        }
    }

    /// Appends bytes, sending every packet that fills up.
    pub(crate) async fn push(&mut self, chan: &mut Channel, mut data: &[u8]) -> io::Result<()> {
        let room = packet::PACKET_SIZE - HEADER_LEN;
        while !data.is_empty() {
            if self.buf.len() == room {
                self.send(chan, false).await?;
            }
            let take = (room - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    /// Sends the last packet.
    pub(crate) async fn finish(mut self, chan: &mut Channel) -> io::Result<()> {
        self.send(chan, true).await
    }

    async fn send(&mut self, chan: &mut Channel, last: bool) -> io::Result<()> {
        let mut out = Vec::with_capacity(self.buf.len() + HEADER_LEN);
        out.extend_from_slice(&packet::header(
            self.kind,
            last,
            self.buf.len(),
            self.packet_id,
        ));
        out.extend_from_slice(&self.buf);
        self.buf.clear();
        self.packet_id = self.packet_id.wrapping_add(1);
        chan.write_all(&out).await
    }
}
