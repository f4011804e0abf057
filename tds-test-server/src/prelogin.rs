//! PRELOGIN: the client's encryption wish and the server's answer.

/// ENCRYPT_OFF: encrypt the login packet only.
pub(crate) const ENCRYPT_OFF: u8 = 0x00;
/// ENCRYPT_ON: encrypt the whole session.
pub(crate) const ENCRYPT_ON: u8 = 0x01;
/// ENCRYPT_NOT_SUP: no TLS at all.
pub(crate) const ENCRYPT_NOT_SUP: u8 = 0x02;
/// ENCRYPT_REQ: the client requires encryption (answered like ENCRYPT_ON).
#[cfg(test)]
pub(crate) const ENCRYPT_REQ: u8 = 0x03;

const OPTION_ENCRYPTION: u8 = 0x01;
const TERMINATOR: u8 = 0xFF;

/// The ENCRYPTION option of a client's PRELOGIN payload (ENCRYPT_NOT_SUP when absent).
pub(crate) fn client_encryption(payload: &[u8]) -> u8 {
    let mut i = 0;
    while i + 5 <= payload.len() && payload[i] != TERMINATOR {
        if payload[i] == OPTION_ENCRYPTION {
            let offset = u16::from_be_bytes([payload[i + 1], payload[i + 2]]) as usize;
            return payload.get(offset).copied().unwrap_or(ENCRYPT_NOT_SUP);
        }
        i += 5;
    }
    ENCRYPT_NOT_SUP
}

/// What the server answers: no TLS when it has no certificate or the client wants none,
/// login-only TLS when the client asked for that, full TLS otherwise.
pub(crate) fn negotiate(client: u8, server_has_tls: bool) -> u8 {
    match (server_has_tls, client) {
        (false, _) | (true, ENCRYPT_NOT_SUP) => ENCRYPT_NOT_SUP,
        (true, ENCRYPT_OFF) => ENCRYPT_OFF,
        (true, _) => ENCRYPT_ON,
    }
}

/// The server's PRELOGIN response payload.
pub(crate) fn response(encryption: u8) -> Vec<u8> {
    let options: [(u8, &[u8]); 5] = [
        (0x00, &[16, 0, 0, 0, 0, 0]), // VERSION
        (OPTION_ENCRYPTION, &[encryption]),
        (0x02, &[0]), // INSTOPT
        (0x03, &[]),  // THREADID
        (0x04, &[0]), // MARS off
    ];
    let mut head = Vec::new();
    let mut data = Vec::new();
    let table_len = options.len() * 5 + 1;
    for (kind, value) in options {
        head.push(kind);
        head.extend_from_slice(&((table_len + data.len()) as u16).to_be_bytes());
        head.extend_from_slice(&(value.len() as u16).to_be_bytes());
        data.extend_from_slice(value);
    }
    head.push(TERMINATOR);
    head.extend(data);
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_the_encryption_option_it_writes() {
        assert_eq!(client_encryption(&response(ENCRYPT_REQ)), ENCRYPT_REQ);
        assert_eq!(client_encryption(&[TERMINATOR]), ENCRYPT_NOT_SUP);
        assert_eq!(client_encryption(&[0x01, 0x00]), ENCRYPT_NOT_SUP);
    }

    #[test]
    fn negotiates_like_sql_server() {
        assert_eq!(negotiate(ENCRYPT_REQ, false), ENCRYPT_NOT_SUP);
        assert_eq!(negotiate(ENCRYPT_NOT_SUP, true), ENCRYPT_NOT_SUP);
        assert_eq!(negotiate(ENCRYPT_OFF, true), ENCRYPT_OFF);
        assert_eq!(negotiate(ENCRYPT_REQ, true), ENCRYPT_ON);
    }
}
