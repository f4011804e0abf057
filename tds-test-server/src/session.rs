//! One client session: PRELOGIN (and TLS), LOGIN7, then requests until the client leaves.

use std::io;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::channel::{Channel, MessageWriter};
use crate::packet::{ATTENTION, LOGIN7, PRELOGIN, REPLY, RPC, SQL_BATCH};
use crate::{login, prelogin, rpc, sql, tokens, Shared};

fn protocol(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Serves one connection until the client disconnects.
pub(crate) async fn serve(stream: TcpStream, shared: Arc<Shared>) -> io::Result<()> {
    let mut chan = Channel::new(stream);
    let (kind, payload) = chan.read_message().await?;
    if kind != PRELOGIN {
        return Err(protocol(format!("expected PRELOGIN, got 0x{kind:02x}")));
    }
    let encryption =
        prelogin::negotiate(prelogin::client_encryption(&payload), shared.tls.is_some());
    chan.send_message(REPLY, &prelogin::response(encryption))
        .await?;
    if let (Some(tls), true) = (&shared.tls, encryption != prelogin::ENCRYPT_NOT_SUP) {
        chan.start_tls(tls.clone()).await?;
    }
    let (kind, payload) = chan.read_message().await?;
    if kind != LOGIN7 {
        return Err(protocol(format!("expected LOGIN7, got 0x{kind:02x}")));
    }
    if encryption == prelogin::ENCRYPT_OFF {
        chan.stop_tls();
    }
    let login = login::parse(&payload).map_err(protocol)?;
    let mut reply = Vec::new();
    if let Some((user, password)) = &shared.credentials {
        if &login.user != user || &login.password != password {
            let message = format!("Login failed for user '{}'.", login.user);
            tokens::error(&mut reply, 18456, 14, &message);
            tokens::done(&mut reply, tokens::DONE, tokens::DONE_ERROR, 0);
            return chan.send_message(REPLY, &reply).await;
        }
    }
    let database = if login.database.is_empty() {
        "master"
    } else {
        &login.database
    };
    tokens::env_change(&mut reply, 1, database, "master");
    tokens::env_change(&mut reply, 4, "4096", "4096");
    tokens::login_ack(&mut reply);
    tokens::done(&mut reply, tokens::DONE, 0, 0);
    chan.send_message(REPLY, &reply).await?;

    loop {
        let (kind, payload) = match chan.read_message().await {
            Ok(message) => message,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        match kind {
            SQL_BATCH => {
                let text = &payload[rpc::all_headers_len(&payload)..];
                let units: Vec<u16> = text
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                let sql = String::from_utf16_lossy(&units);
                respond(&mut chan, &shared, sql, Vec::new(), false).await?;
            }
            RPC => match rpc::parse(&payload) {
                Ok(call) => respond(&mut chan, &shared, call.sql, call.params, true).await?,
                Err(message) => {
                    let mut reply = Vec::new();
                    tokens::error(&mut reply, 2812, 16, &message);
                    tokens::done(&mut reply, tokens::DONEPROC, tokens::DONE_ERROR, 0);
                    chan.send_message(REPLY, &reply).await?;
                }
            },
            ATTENTION => {
                let mut reply = Vec::new();
                tokens::done(&mut reply, tokens::DONE, tokens::DONE_ATTN, 0);
                chan.send_message(REPLY, &reply).await?;
            }
            other => return Err(protocol(format!("unexpected packet type 0x{other:02x}"))),
        }
    }
}

/// Runs the statement on the shared SQLite connection and streams the tokens out as they
/// are produced.
async fn respond(
    chan: &mut Channel,
    shared: &Arc<Shared>,
    sql: String,
    params: Vec<(String, rusqlite::types::Value)>,
    rpc: bool,
) -> io::Result<()> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
    let db = shared.clone();
    let worker = tokio::task::spawn_blocking(move || {
        let conn = db
            .db
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        sql::run(&conn, &sql, &params, rpc, &mut |chunk| {
            tx.blocking_send(chunk).is_ok()
        });
    });
    let mut writer = MessageWriter::new(REPLY);
    let mut result = Ok(());
    while let Some(chunk) = rx.recv().await {
        if result.is_ok() {
            result = writer.push(chan, &chunk).await;
        }
        if result.is_err() {
            break;
        }
    }
    drop(rx);
    worker
        .await
        .map_err(|e| io::Error::other(format!("query task failed: {e}")))?;
    result?;
    writer.finish(chan).await
}
