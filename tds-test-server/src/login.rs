//! LOGIN7: the fields this server reads (user, password, database).

/// What a client sent in LOGIN7.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Login {
    /// SQL login name.
    pub user: String,
    /// Password, de-obfuscated.
    pub password: String,
    /// Initial database ("" when none).
    pub database: String,
}

/// LOGIN7 fixed part: offset/length pairs start here.
const USER_AT: usize = 40;
const PASSWORD_AT: usize = 44;
const DATABASE_AT: usize = 68;

fn field(payload: &[u8], at: usize) -> Result<Vec<u8>, String> {
    let word = |i: usize| {
        payload
            .get(i..i + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
            .ok_or_else(|| "LOGIN7 packet too short".to_string())
    };
    let (offset, chars) = (word(at)?, word(at + 2)?);
    payload
        .get(offset..offset + chars * 2)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| "LOGIN7 field out of bounds".to_string())
}

fn utf16(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// Parses the LOGIN7 payload.
pub(crate) fn parse(payload: &[u8]) -> Result<Login, String> {
    let password: Vec<u8> = field(payload, PASSWORD_AT)?
        .into_iter()
        .map(|b| (b ^ 0xA5).rotate_left(4))
        .collect();
    Ok(Login {
        user: utf16(&field(payload, USER_AT)?),
        password: utf16(&password),
        database: utf16(&field(payload, DATABASE_AT)?),
    })
}
