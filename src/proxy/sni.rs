//! ClientHello reader: finds the SNI in a tunnel's first bytes without consuming them.
//!
//! The reader is a pure function of the bytes buffered so far, so the tunnel can peek, call
//! it again as more segments arrive, then forward the untouched bytes. A ClientHello split
//! over many records (RFC 8446 §5.1) is read where it lies, without reassembling it.

use std::net::Ipv6Addr;

/// Upper bound on the bytes buffered while waiting for a complete ClientHello.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// What the first bytes of a tunnel turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// More bytes are needed; the buffer so far is a valid prefix of a TLS ClientHello.
    Incomplete,
    /// A complete ClientHello; `sni` is its host_name server name (lowercased ASCII, no trailing dot), if it has one.
    /// `ech`: it carries an `encrypted_client_hello` extension, so `sni` is the outer name
    /// (a provider's public name, or the real name under GREASE ECH).
    Complete { sni: Option<String>, ech: bool },
    /// The first bytes are not a TLS handshake record carrying a ClientHello (e.g. plain HTTP, SSH banner, a TLS alert).
    NotTls,
    /// The ClientHello would exceed `MAX_CLIENT_HELLO` (or the caller's cap) before completing.
    TooLarge,
    /// The bytes are TLS records but the ClientHello inside is malformed (bad lengths, truncated extension, invalid SNI bytes, duplicate SNI extension...).
    Malformed,
}

/// TLSPlaintext.type `handshake` (RFC 8446 §5.1).
const CONTENT_HANDSHAKE: u8 = 22;
/// HandshakeType `client_hello` (RFC 8446 §4).
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// ExtensionType `server_name` (RFC 6066 §3).
const EXT_SERVER_NAME: u16 = 0;
/// ExtensionType `encrypted_client_hello` (draft-ietf-tls-esni-22 §11.1).
const EXT_ENCRYPTED_CLIENT_HELLO: u16 = 0xfe0d;
/// NameType `host_name` (RFC 6066 §3).
const NAME_TYPE_HOST_NAME: u8 = 0;
const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;
/// RFC 8446 §5.1: a plaintext fragment longer than 2^14 bytes is a `record_overflow`.
const MAX_RECORD_LEN: usize = 1 << 14;
/// legacy_version, random, an empty session id, one cipher suite and one compression method:
/// a shorter body cannot be a ClientHello, so it is rejected before waiting for it.
const MIN_HELLO_BODY_LEN: usize = 2 + 32 + 1 + (2 + 2) + (1 + 1);
/// RFC 1035 §2.3.4, counted without the trailing dot.
const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// Inspects the bytes a client sent first in a tunnel without consuming them.
///
/// Call it again on the grown buffer while it answers [`Hello::Incomplete`]. The effective
/// cap is `max_len.min(MAX_CLIENT_HELLO)`: bytes beyond it are never read, and once the
/// buffer holds that many bytes without a complete hello the answer is [`Hello::TooLarge`],
/// never `Incomplete`, so the caller's buffer stays bounded. Bytes after the ClientHello
/// (0-RTT early data, RFC 8446 §2.3) are ignored.
///
/// The answer is prefix-stable: once it is anything but `Incomplete`, more bytes do not
/// change it.
pub fn parse_client_hello(buf: &[u8], max_len: usize) -> Hello {
    let cap = max_len.min(MAX_CLIENT_HELLO);
    let buf = buf.get(..cap).unwrap_or(buf);
    match client_hello(buf, cap) {
        Ok((sni, ech)) => Hello::Complete { sni, ech },
        Err(Stop::Short) if buf.len() >= cap => Hello::TooLarge,
        Err(Stop::Short) => Hello::Incomplete,
        Err(Stop::NotTls) => Hello::NotTls,
        Err(Stop::TooLarge) => Hello::TooLarge,
        Err(Stop::Malformed) => Hello::Malformed,
    }
}

/// Why reading stopped before the end of the hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The buffer ends inside the hello.
    Short,
    NotTls,
    TooLarge,
    Malformed,
}

/// Room for the longest valid HostName: 253 bytes and a trailing dot.
type NameBuf = [u8; MAX_NAME_LEN + 1];

/// What the extensions said: the host_name's length (copied into a [`NameBuf`]) and whether
/// an `encrypted_client_hello` extension is present.
#[derive(Debug, Clone, Copy, Default)]
struct Found {
    name_len: Option<usize>,
    ech: bool,
}

fn client_hello(buf: &[u8], cap: usize) -> Result<(Option<String>, bool), Stop> {
    // Only the first record decides "not TLS at all"; a bad record later is a broken hello.
    let first_record_len = record_header(buf, 0, Stop::NotTls)?;
    let mut header = Records {
        buf,
        pos: RECORD_HEADER_LEN,
        in_record: first_record_len,
        left: HANDSHAKE_HEADER_LEN,
    };
    if header.u8()? != HANDSHAKE_CLIENT_HELLO {
        return Err(Stop::NotTls);
    }
    let body_len = usize::from(header.u8()?) << 16 | usize::from(header.u16()?);
    // At least one record header precedes the message: reject now rather than buffer to the cap.
    if RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN + body_len > cap {
        return Err(Stop::TooLarge);
    }
    if body_len < MIN_HELLO_BODY_LEN {
        return Err(Stop::Malformed);
    }
    // The name is copied to the stack while walking and allocated only once the whole hello
    // checked out, so a broken or partial hello costs no allocation.
    let mut name: NameBuf = [0; MAX_NAME_LEN + 1];
    let body = Records {
        left: body_len,
        ..header
    };
    let found = if body.in_record >= body_len {
        // What real clients send: the whole body inside one record, read as a plain slice.
        hello_body(body.flat(), &mut name)?
    } else {
        hello_body(body, &mut name)?
    };
    let Some(len) = found.name_len else {
        return Ok((None, found.ech));
    };
    let name = name.get(..len).ok_or(Stop::Malformed)?;
    String::from_utf8(name.to_ascii_lowercase())
        .map(|n| (Some(n), found.ech))
        .map_err(|_| Stop::Malformed)
}

/// Checks a TLSPlaintext header at `at` (RFC 8446 §5.1) and returns its fragment length.
///
/// Each byte is judged as soon as it is present, so one byte of `GET` is already `NotTls`.
fn record_header(buf: &[u8], at: usize, not_handshake: Stop) -> Result<usize, Stop> {
    let byte = |i: usize| buf.get(at + i).copied().ok_or(Stop::Short);
    if byte(0)? != CONTENT_HANDSHAKE {
        return Err(not_handshake);
    }
    // legacy_record_version: 3.0 from ancient stacks up to 3.4; RFC 8446 §5.1 says ignore it,
    // but a major version other than 3 means this is not TLS.
    if byte(1)? != 3 || byte(2)? > 4 {
        return Err(not_handshake);
    }
    let len = usize::from(u16::from_be_bytes([byte(3)?, byte(4)?]));
    // RFC 8446 §5.1: zero-length handshake fragments MUST NOT be sent.
    if len == 0 || len > MAX_RECORD_LEN {
        return Err(Stop::Malformed);
    }
    Ok(len)
}

/// Walks the ClientHello body (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2); the length of its
/// host_name, copied into `name`, if it has one.
fn hello_body(mut r: impl Cursor, name: &mut NameBuf) -> Result<Found, Stop> {
    let legacy_version = r.u16()?;
    if !(0x0300..=0x0304).contains(&legacy_version) {
        return Err(Stop::Malformed);
    }
    r.skip(32)?; // random
    let session_id_len = usize::from(r.u8()?);
    if session_id_len > 32 {
        return Err(Stop::Malformed);
    }
    r.skip(session_id_len)?;
    let cipher_suites_len = usize::from(r.u16()?);
    if cipher_suites_len < 2 || cipher_suites_len % 2 != 0 {
        return Err(Stop::Malformed);
    }
    r.skip(cipher_suites_len)?;
    let compression_methods_len = usize::from(r.u8()?);
    if compression_methods_len == 0 {
        return Err(Stop::Malformed);
    }
    r.skip(compression_methods_len)?;
    // RFC 5246 §7.4.1.2: a hello may end here, with no extensions block at all.
    if r.left() == 0 {
        return Ok(Found::default());
    }
    let extensions_len = usize::from(r.u16()?);
    if extensions_len != r.left() {
        return Err(Stop::Malformed);
    }
    extensions(r, name)
}

fn extensions(mut r: impl Cursor, name: &mut NameBuf) -> Result<Found, Stop> {
    let mut found = Found::default();
    let mut seen_server_name = false;
    while r.left() > 0 {
        let ext_type = r.u16()?;
        let ext_len = usize::from(r.u16()?);
        let data = r.sub(ext_len)?;
        if ext_type == EXT_SERVER_NAME {
            // RFC 8446 §4.2 forbids repeats; a proxy that read one copy while the server
            // read another would pin the wrong name.
            if seen_server_name {
                return Err(Stop::Malformed);
            }
            seen_server_name = true;
            found.name_len = server_name_list(data, name)?;
        } else if ext_type == EXT_ENCRYPTED_CLIENT_HELLO {
            found.ech = true;
        }
    }
    Ok(found)
}

/// Reads a ServerNameList (RFC 6066 §3); the length of its host_name, copied into `name`.
fn server_name_list(mut r: impl Cursor, name: &mut NameBuf) -> Result<Option<usize>, Stop> {
    let list_len = usize::from(r.u16()?);
    if list_len == 0 || list_len != r.left() {
        return Err(Stop::Malformed);
    }
    let mut name_len = None;
    while r.left() > 0 {
        let name_type = r.u8()?;
        // Every name type defined or foreseen by RFC 6066 is an opaque<1..2^16-1>.
        let len = usize::from(r.u16()?);
        let mut entry = r.sub(len)?;
        if name_type == NAME_TYPE_HOST_NAME {
            // RFC 6066 §3: at most one name per type; two host names could let a client
            // show the proxy one name and the server another.
            if name_len.is_some() {
                return Err(Stop::Malformed);
            }
            let out = name.get_mut(..len).ok_or(Stop::Malformed)?;
            entry.copy_to(out)?;
            name_len = Some(host_name_len(out)?);
        }
    }
    Ok(name_len)
}

/// Validates a HostName and returns its length without one trailing dot.
///
/// RFC 6066 §3 asks for an ASCII DNS name: letters, digits, hyphens and dots, plus the
/// underscore real DNS names carry. IP literals are not allowed there either, but they are
/// passed through so the caller can decide; an IPv6 literal is the only reason for a colon.
fn host_name_len(name: &[u8]) -> Result<usize, Stop> {
    if name.contains(&b':') {
        let is_ipv6 = std::str::from_utf8(name).is_ok_and(|s| s.parse::<Ipv6Addr>().is_ok());
        return is_ipv6.then_some(name.len()).ok_or(Stop::Malformed);
    }
    let name = name.strip_suffix(b".").unwrap_or(name);
    let valid = (1..=MAX_NAME_LEN).contains(&name.len())
        && name.split(|&b| b == b'.').all(|label| {
            (1..=MAX_LABEL_LEN).contains(&label.len())
                && label
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then_some(name.len()).ok_or(Stop::Malformed)
}

/// Reading one length-delimited vector of the handshake message. Every read checks the
/// vector's bound first (`Malformed`) and then the buffer's end (`Short`).
trait Cursor: Copy {
    /// Bytes left in this vector, whether or not they have arrived yet.
    fn left(&self) -> usize;
    fn u8(&mut self) -> Result<u8, Stop>;
    fn skip(&mut self, n: usize) -> Result<(), Stop>;
    /// Splits off the next `n` bytes as their own vector and moves past them.
    fn sub(&mut self, n: usize) -> Result<Self, Stop>;
    /// Fills `out` from the vector.
    fn copy_to(&mut self, out: &mut [u8]) -> Result<(), Stop>;

    fn u16(&mut self) -> Result<u16, Stop> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
}

/// A vector inside one record: `data` is the part of it that has arrived.
#[derive(Debug, Clone, Copy)]
struct Flat<'a> {
    data: &'a [u8],
    left: usize,
}

impl Cursor for Flat<'_> {
    fn left(&self) -> usize {
        self.left
    }

    fn u8(&mut self) -> Result<u8, Stop> {
        if self.left == 0 {
            return Err(Stop::Malformed);
        }
        let (&b, rest) = self.data.split_first().ok_or(Stop::Short)?;
        self.data = rest;
        self.left -= 1;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, Stop> {
        if self.left < 2 {
            return Err(Stop::Malformed);
        }
        let (&[hi, lo], rest) = self.data.split_first_chunk().ok_or(Stop::Short)?;
        self.data = rest;
        self.left -= 2;
        Ok(u16::from_be_bytes([hi, lo]))
    }

    fn skip(&mut self, n: usize) -> Result<(), Stop> {
        if n > self.left {
            return Err(Stop::Malformed);
        }
        self.data = self.data.get(n..).ok_or(Stop::Short)?;
        self.left -= n;
        Ok(())
    }

    fn sub(&mut self, n: usize) -> Result<Self, Stop> {
        let data = self.data.get(..n).unwrap_or(self.data);
        self.skip(n)?;
        Ok(Flat { data, left: n })
    }

    fn copy_to(&mut self, out: &mut [u8]) -> Result<(), Stop> {
        let data = self.data;
        self.skip(out.len())?;
        out.copy_from_slice(data.get(..out.len()).ok_or(Stop::Short)?);
        Ok(())
    }
}

/// A vector of a handshake message that runs across records (RFC 8446 §5.1 lets a message
/// span any number of them); the record headers in between are checked as they are crossed.
#[derive(Debug, Clone, Copy)]
struct Records<'a> {
    buf: &'a [u8],
    /// Offset in `buf` of the next byte (or record header, when `in_record` is 0).
    pos: usize,
    /// Fragment bytes left in the current record.
    in_record: usize,
    left: usize,
}

impl<'a> Records<'a> {
    /// This vector as a slice; only for a vector that does not leave the current record.
    fn flat(&self) -> Flat<'a> {
        let end = self.buf.len().min(self.pos + self.left);
        let data = self.buf.get(self.pos..end).unwrap_or_default();
        Flat { data, left: self.left }
    }

    /// Steps over the next record header when the current fragment is used up. Called only
    /// when a byte of the message is needed, so whatever follows the hello is never read.
    fn enter_record(&mut self) -> Result<(), Stop> {
        if self.in_record == 0 {
            // Records of any other type interleaved into a handshake message are a protocol
            // violation (RFC 8446 §5.1), not a hint that this is some other protocol.
            self.in_record = record_header(self.buf, self.pos, Stop::Malformed)?;
            self.pos += RECORD_HEADER_LEN;
        }
        Ok(())
    }
}

impl Cursor for Records<'_> {
    fn left(&self) -> usize {
        self.left
    }

    fn u8(&mut self) -> Result<u8, Stop> {
        if self.left == 0 {
            return Err(Stop::Malformed);
        }
        self.enter_record()?;
        let b = *self.buf.get(self.pos).ok_or(Stop::Short)?;
        self.pos += 1;
        self.in_record -= 1;
        self.left -= 1;
        Ok(b)
    }

    fn skip(&mut self, n: usize) -> Result<(), Stop> {
        if n > self.left {
            return Err(Stop::Malformed);
        }
        let mut n = n;
        while n > 0 {
            self.enter_record()?;
            let step = n.min(self.in_record);
            if step > self.buf.len().saturating_sub(self.pos) {
                return Err(Stop::Short);
            }
            self.pos += step;
            self.in_record -= step;
            self.left -= step;
            n -= step;
        }
        Ok(())
    }

    fn sub(&mut self, n: usize) -> Result<Self, Stop> {
        let vector = Records { left: n, ..*self };
        self.skip(n)?;
        Ok(vector)
    }

    fn copy_to(&mut self, out: &mut [u8]) -> Result<(), Stop> {
        for slot in out {
            *slot = self.u8()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
