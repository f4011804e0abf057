//! TDS packet framing: an 8-byte header (type, status, big-endian length, spid, packet id,
//! window) before each packet's payload; a message is the packets up to the one with
//! end-of-message status.

/// Client's PRELOGIN message, also the carrier of TLS handshake records.
pub const PRELOGIN: u8 = 0x12;
/// Client's LOGIN7 message.
pub const LOGIN7: u8 = 0x10;
/// Client's SQL batch.
pub const SQL_BATCH: u8 = 0x01;
/// Client's remote procedure call (`sp_executesql`).
pub const RPC: u8 = 0x03;
/// Client's attention (cancel) signal.
pub const ATTENTION: u8 = 0x06;
/// Server's tabular response.
pub const REPLY: u8 = 0x04;

/// Size of the packets this server sends (announced to the client at login).
pub const PACKET_SIZE: usize = 4096;
/// Length of a packet header.
pub const HEADER_LEN: usize = 8;
/// Status bit marking the last packet of a message.
pub const STATUS_EOM: u8 = 0x01;

/// Builds the header of one packet.
pub fn header(kind: u8, last: bool, payload_len: usize, packet_id: u8) -> [u8; HEADER_LEN] {
    let len = (payload_len + HEADER_LEN) as u16;
    let [hi, lo] = len.to_be_bytes();
    let status = if last { STATUS_EOM } else { 0 };
    [kind, status, hi, lo, 0, 0, packet_id, 0]
}

/// Cuts a message into packets of at most [`PACKET_SIZE`] bytes, headers included.
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let chunk = PACKET_SIZE - HEADER_LEN;
    let mut out = Vec::with_capacity(payload.len() + HEADER_LEN * (payload.len() / chunk + 1));
    let mut chunks = payload.chunks(chunk).peekable();
    let mut id: u8 = 1;
    if chunks.peek().is_none() {
        out.extend_from_slice(&header(kind, true, 0, id));
    }
    while let Some(part) = chunks.next() {
        out.extend_from_slice(&header(kind, chunks.peek().is_none(), part.len(), id));
        out.extend_from_slice(part);
        id = id.wrapping_add(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_long_messages_into_full_packets_and_marks_the_last() {
        let payload = vec![7u8; PACKET_SIZE * 2];
        let framed = frame(REPLY, &payload);
        let first_len = u16::from_be_bytes([framed[2], framed[3]]) as usize;
        assert_eq!(first_len, PACKET_SIZE);
        assert_eq!(framed[1], 0);
        assert_eq!(framed.len(), payload.len() + 3 * HEADER_LEN);
        let last = PACKET_SIZE * 2;
        assert_eq!(framed[last + 1], STATUS_EOM);
        assert_eq!(framed[last + 6], 3);
    }

    #[test]
    fn frames_an_empty_message_as_one_packet() {
        assert_eq!(frame(REPLY, &[]), header(REPLY, true, 0, 1).to_vec());
    }
}
