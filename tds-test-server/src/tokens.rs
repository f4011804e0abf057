//! Writers for the response tokens this server sends.

/// COLMETADATA token.
pub(crate) const COLMETADATA: u8 = 0x81;
/// ROW token.
pub(crate) const ROW: u8 = 0xD1;
/// DONE token: end of a statement in a batch.
pub(crate) const DONE: u8 = 0xFD;
/// DONEPROC token: end of a procedure (RPC) call.
pub(crate) const DONEPROC: u8 = 0xFE;
/// DONEINPROC token: end of a statement inside a procedure.
pub(crate) const DONEINPROC: u8 = 0xFF;

/// DONE status: more results follow.
pub(crate) const DONE_MORE: u16 = 0x01;
/// DONE status: the statement failed.
pub(crate) const DONE_ERROR: u16 = 0x02;
/// DONE status: the row count is valid.
pub(crate) const DONE_COUNT: u16 = 0x10;
/// DONE status: acknowledges an attention.
pub(crate) const DONE_ATTN: u16 = 0x20;

/// Appends a B_VARCHAR: a one-byte character count, then UTF-16LE.
pub(crate) fn b_varchar(out: &mut Vec<u8>, s: &str) {
    let units: Vec<u16> = s.encode_utf16().take(255).collect();
    out.push(units.len() as u8);
    units
        .iter()
        .for_each(|u| out.extend_from_slice(&u.to_le_bytes()));
}

/// Appends a US_VARCHAR: a two-byte character count, then UTF-16LE.
pub(crate) fn us_varchar(out: &mut Vec<u8>, s: &str) {
    let units: Vec<u16> = s.encode_utf16().take(u16::MAX as usize).collect();
    out.extend_from_slice(&(units.len() as u16).to_le_bytes());
    units
        .iter()
        .for_each(|u| out.extend_from_slice(&u.to_le_bytes()));
}

fn with_length(out: &mut Vec<u8>, token: u8, body: &[u8]) {
    out.push(token);
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(body);
}

/// ENVCHANGE token of a string-valued kind (1 = database, 4 = packet size).
pub(crate) fn env_change(out: &mut Vec<u8>, kind: u8, new: &str, old: &str) {
    let mut body = vec![kind];
    b_varchar(&mut body, new);
    b_varchar(&mut body, old);
    with_length(out, 0xE3, &body);
}

/// LOGINACK token announcing TDS 7.4.
pub(crate) fn login_ack(out: &mut Vec<u8>) {
    let mut body = vec![0x01];
    body.extend_from_slice(&0x7400_0004u32.to_be_bytes());
    b_varchar(&mut body, "celeriac TDS test server");
    body.extend_from_slice(&[16, 0, 0, 0]);
    with_length(out, 0xAD, &body);
}

/// ERROR token: the client reports `number` and `message` as a server error.
pub(crate) fn error(out: &mut Vec<u8>, number: i32, class: u8, message: &str) {
    let mut body = Vec::new();
    body.extend_from_slice(&number.to_le_bytes());
    body.push(1);
    body.push(class);
    us_varchar(&mut body, message);
    b_varchar(&mut body, "tds-test-server");
    b_varchar(&mut body, "");
    body.extend_from_slice(&1u32.to_le_bytes());
    with_length(out, 0xAA, &body);
}

/// DONE, DONEPROC or DONEINPROC token.
pub(crate) fn done(out: &mut Vec<u8>, token: u8, status: u16, row_count: u64) {
    out.push(token);
    out.extend_from_slice(&status.to_le_bytes());
    out.extend_from_slice(&0x00C1u16.to_le_bytes());
    out.extend_from_slice(&row_count.to_le_bytes());
}

/// RETURNSTATUS token (the procedure's return value).
pub(crate) fn return_status(out: &mut Vec<u8>, value: i32) {
    out.push(0x79);
    out.extend_from_slice(&value.to_le_bytes());
}
