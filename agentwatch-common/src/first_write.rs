//! The name a TCP connection asks for, read from its first write: the
//! server name of a TLS ClientHello, the target of an HTTP proxy's
//! `CONNECT host:port`, the host of an absolute URI (a plain HTTP proxy's
//! request) or a plaintext request's `Host:` header.
//!
//! The same code runs in the kernel (the sk_msg program calls
//! [`NameParser::step`] from a `bpf_loop` callback, with the state in map
//! memory) and in user space (tests). As in `dns.rs`, every read is masked
//! into the fixed buffer and checked against the write's length, so no
//! write can make it read out of bounds or loop.

use crate::{
    dns::MAX_LABELS,
    hash::{fnv_start, fnv_step, lower},
    names::NameSource,
};

/// Bytes of a first write kept (a power of two; a ClientHello with a
/// post-quantum key share is about 1.8 KB, and the server name comes first
/// in most clients' extension order).
pub const WRITE_CAP: usize = 2048;
const MASK: usize = WRITE_CAP - 1;
/// Bytes of the name kept for the event (longer names are still judged).
pub const NAME_CAP: usize = 128;
/// Steps enough for any write of `WRITE_CAP` bytes: every step consumes a
/// byte or skips a field.
pub const MAX_STEPS: u32 = WRITE_CAP as u32 + 16;
/// The longest DNS name and label.
const MAX_NAME: u32 = 253;
const MAX_LABEL: u32 = 63;

const TLS_HANDSHAKE: u32 = 0x16;
const TLS_CLIENT_HELLO: u32 = 1;
const TLS_SERVER_NAME: u32 = 0;
/// Record header (5), handshake header (4), client version (2), random (32).
const TLS_SESSION_ID_AT: u32 = 43;
/// An HTTP method is a short upper-case token.
const MAX_METHOD: u32 = 16;

pub mod phase {
    pub const START: u32 = 0;
    pub const TLS_EXTENSION: u32 = 1;
    pub const HTTP_METHOD: u32 = 2;
    pub const HTTP_TARGET: u32 = 3;
    pub const HTTP_SKIP_LINE: u32 = 4;
    pub const HTTP_LINE_START: u32 = 5;
    pub const HTTP_HOST_SPACE: u32 = 6;
    pub const NAME: u32 = 7;
    pub const PORT: u32 = 8;
    pub const NAMED: u32 = 9;
    pub const NAMELESS: u32 = 10;
}

/// What one step found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Continue,
    /// The name is complete: its label hashes are in `label_hashes`, its
    /// first `NAME_CAP` bytes in `name`, and `source` says where it was.
    Named,
    /// The write names no host (not TLS or HTTP, an address literal, a
    /// ClientHello without a server name, or a name cut off by the write's
    /// end): the connection is judged by its address.
    Nameless,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameParser {
    /// Bytes of the write in the buffer (at most `WRITE_CAP`).
    pub len: u32,
    pub pos: u32,
    pub phase: u32,
    /// End of the TLS extensions, or of the server name, in the buffer.
    pub end: u32,
    /// [`NameSource`] code of the name being read.
    pub source: u32,
    /// Bytes of the name so far, and of its current label.
    pub name_len: u32,
    pub label_len: u32,
    /// Labels of the name (may exceed `MAX_LABELS`).
    pub labels: u32,
    /// Whether a label had a letter: a name of digits only is an address.
    pub has_letter: u32,
    /// Bytes of the method or of the `Host:` token matched so far.
    pub token: u32,
    pub label_hash: u64,
    /// Hashes of the last `MAX_LABELS` labels: label `i` (leftmost 0) is at
    /// `i % MAX_LABELS`.
    pub label_hashes: [u64; MAX_LABELS],
    pub name: [u8; NAME_CAP],
}

impl Default for NameParser {
    fn default() -> Self {
        Self {
            len: 0,
            pos: 0,
            phase: phase::START,
            end: 0,
            source: 0,
            name_len: 0,
            label_len: 0,
            labels: 0,
            has_letter: 0,
            token: 0,
            label_hash: fnv_start(),
            label_hashes: [0; MAX_LABELS],
            name: [0; NAME_CAP],
        }
    }
}

#[inline(always)]
fn byte(buf: &[u8; WRITE_CAP], len: u32, at: u32) -> Option<u32> {
    if at < len {
        Some(buf[at as usize & MASK] as u32)
    } else {
        None
    }
}

#[inline(always)]
fn be16(buf: &[u8; WRITE_CAP], len: u32, at: u32) -> Option<u32> {
    Some((byte(buf, len, at)? << 8) | byte(buf, len, at + 1)?)
}

/// Whether `text` (lower case) is at `at`, ignoring ASCII case.
#[inline(always)]
fn starts_with(buf: &[u8; WRITE_CAP], len: u32, at: u32, text: &[u8]) -> bool {
    let mut i = 0;
    while i < text.len() {
        match byte(buf, len, at + i as u32) {
            Some(b) if lower(b as u8) == text[i] => {}
            _ => return false,
        }
        i += 1;
    }
    true
}

impl NameParser {
    /// A parser over the first `len` bytes of `buf`.
    pub fn start(len: u32) -> Self {
        Self {
            len: if len as usize > WRITE_CAP {
                WRITE_CAP as u32
            } else {
                len
            },
            ..Self::default()
        }
    }

    /// Label hashes of the name, rightmost first: `Some(hash)` for the
    /// `i`-th label from the right while it is kept.
    #[inline(always)]
    pub fn label_from_right(&self, i: u32) -> Option<u64> {
        if i >= self.labels || i as usize >= MAX_LABELS {
            return None;
        }
        Some(self.label_hashes[(self.labels - 1 - i) as usize % MAX_LABELS])
    }

    /// The name as read (at most `NAME_CAP` bytes).
    pub fn name_bytes(&self) -> &[u8] {
        let len = if self.name_len as usize > NAME_CAP {
            NAME_CAP
        } else {
            self.name_len as usize
        };
        &self.name[..len]
    }

    fn nameless(&mut self) -> Step {
        self.phase = phase::NAMELESS;
        Step::Nameless
    }

    fn begin_name(&mut self, at: u32, source: NameSource) -> Step {
        self.pos = at;
        self.source = source.code();
        self.phase = phase::NAME;
        Step::Continue
    }

    /// Advances by one unit of work (a byte, or a TLS field).
    pub fn step(&mut self, buf: &[u8; WRITE_CAP]) -> Step {
        match self.phase {
            phase::START => self.first(buf),
            phase::TLS_EXTENSION => self.tls_extension(buf),
            phase::HTTP_METHOD => {
                let Some(b) = byte(buf, self.len, self.pos) else {
                    return self.nameless();
                };
                self.pos += 1;
                if b == b' ' as u32 && self.token > 0 {
                    // The method's bytes are upper case: this compare is exact.
                    if self.token == 7 && starts_with(buf, self.len, 0, b"connect") {
                        return self.begin_name(self.pos, NameSource::ConnectProxy);
                    }
                    self.phase = phase::HTTP_TARGET;
                } else if !(b as u8).is_ascii_uppercase() || self.token >= MAX_METHOD {
                    return self.nameless();
                }
                self.token += 1;
                Step::Continue
            }
            phase::HTTP_TARGET => {
                // An absolute URI (what a plain HTTP proxy is sent) names
                // the host; otherwise the Host header does.
                if starts_with(buf, self.len, self.pos, b"http://") {
                    return self.begin_name(self.pos + 7, NameSource::Host);
                }
                if starts_with(buf, self.len, self.pos, b"https://") {
                    return self.begin_name(self.pos + 8, NameSource::Host);
                }
                self.phase = phase::HTTP_SKIP_LINE;
                Step::Continue
            }
            phase::HTTP_SKIP_LINE => {
                let Some(b) = byte(buf, self.len, self.pos) else {
                    return self.nameless();
                };
                self.pos += 1;
                if b == b'\n' as u32 {
                    self.phase = phase::HTTP_LINE_START;
                }
                Step::Continue
            }
            phase::HTTP_LINE_START => {
                if starts_with(buf, self.len, self.pos, b"host:") {
                    self.pos += 5;
                    self.phase = phase::HTTP_HOST_SPACE;
                    return Step::Continue;
                }
                match byte(buf, self.len, self.pos) {
                    // The blank line ends the headers: no Host.
                    Some(b) if b == b'\r' as u32 || b == b'\n' as u32 => self.nameless(),
                    Some(_) => {
                        self.phase = phase::HTTP_SKIP_LINE;
                        Step::Continue
                    }
                    None => self.nameless(),
                }
            }
            phase::HTTP_HOST_SPACE => match byte(buf, self.len, self.pos) {
                Some(b) if b == b' ' as u32 || b == b'\t' as u32 => {
                    self.pos += 1;
                    Step::Continue
                }
                Some(_) => self.begin_name(self.pos, NameSource::Host),
                None => self.nameless(),
            },
            phase::NAME => self.name_byte(buf),
            phase::PORT => self.port_byte(buf),
            phase::NAMED => Step::Named,
            _ => Step::Nameless,
        }
    }

    /// Tells TLS from HTTP, and walks a ClientHello's fixed part.
    fn first(&mut self, buf: &[u8; WRITE_CAP]) -> Step {
        let len = self.len;
        if byte(buf, len, 0) != Some(TLS_HANDSHAKE) {
            self.phase = phase::HTTP_METHOD;
            return Step::Continue;
        }
        if byte(buf, len, 5) != Some(TLS_CLIENT_HELLO) {
            return self.nameless();
        }
        let mut pos = TLS_SESSION_ID_AT;
        let Some(session_id) = byte(buf, len, pos) else {
            return self.nameless();
        };
        pos += 1 + session_id;
        let Some(cipher_suites) = be16(buf, len, pos) else {
            return self.nameless();
        };
        pos += 2 + cipher_suites;
        let Some(compression) = byte(buf, len, pos) else {
            return self.nameless();
        };
        pos += 1 + compression;
        let Some(extensions) = be16(buf, len, pos) else {
            return self.nameless();
        };
        self.pos = pos + 2;
        self.end = self.pos + extensions;
        self.phase = phase::TLS_EXTENSION;
        Step::Continue
    }

    /// One extension: the server name's, or skipped.
    fn tls_extension(&mut self, buf: &[u8; WRITE_CAP]) -> Step {
        let (len, pos) = (self.len, self.pos);
        if pos + 4 > self.end {
            return self.nameless();
        }
        let (Some(kind), Some(size)) = (be16(buf, len, pos), be16(buf, len, pos + 2)) else {
            return self.nameless();
        };
        if kind != TLS_SERVER_NAME {
            self.pos = pos + 4 + size;
            return Step::Continue;
        }
        // server_name_list length (2), name type (1: host_name = 0), length (2).
        let (Some(0), Some(name_len)) = (byte(buf, len, pos + 6), be16(buf, len, pos + 7)) else {
            return self.nameless();
        };
        let at = pos + 9;
        if name_len == 0 || at + name_len > len {
            return self.nameless();
        }
        self.end = at + name_len;
        self.begin_name(at, NameSource::Sni)
    }

    /// One byte of the name: hashed into its label, kept for the event.
    fn name_byte(&mut self, buf: &[u8; WRITE_CAP]) -> Step {
        let sni = self.source == NameSource::Sni.code();
        if sni && self.pos >= self.end {
            return self.finish();
        }
        let Some(b) = byte(buf, self.len, self.pos) else {
            // A name cut off by the write's end is not judged as a name.
            return self.nameless();
        };
        let b = b as u8;
        if !sni {
            match b {
                b':' => {
                    self.pos += 1;
                    self.phase = phase::PORT;
                    return Step::Continue;
                }
                b'/' | b' ' | b'\t' | b'\r' | b'\n' | b'?' => return self.finish(),
                _ => {}
            }
        }
        self.pos += 1;
        if b == b'.' {
            return self.close_label();
        }
        if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            // `[::1]`, `user@host` and stray bytes are not names.
            return self.nameless();
        }
        if b.is_ascii_alphabetic() {
            self.has_letter = 1;
        }
        self.label_len += 1;
        self.label_hash = fnv_step(self.label_hash, lower(b));
        self.keep(lower(b));
        if self.label_len > MAX_LABEL || self.name_len > MAX_NAME {
            return self.nameless();
        }
        Step::Continue
    }

    /// A port after an HTTP name: digits up to the name's end. Anything
    /// else (`user:password@host`) means the name was not the host.
    fn port_byte(&mut self, buf: &[u8; WRITE_CAP]) -> Step {
        let Some(b) = byte(buf, self.len, self.pos) else {
            return self.nameless();
        };
        match b as u8 {
            b'0'..=b'9' => {
                self.pos += 1;
                Step::Continue
            }
            b'/' | b' ' | b'\t' | b'\r' | b'\n' | b'?' => self.finish(),
            _ => self.nameless(),
        }
    }

    fn keep(&mut self, b: u8) {
        if (self.name_len as usize) < NAME_CAP {
            self.name[self.name_len as usize % NAME_CAP] = b;
        }
        self.name_len += 1;
    }

    fn close_label(&mut self) -> Step {
        if self.label_len == 0 {
            return self.nameless();
        }
        self.label_hashes[self.labels as usize % MAX_LABELS] = self.label_hash;
        self.labels += 1;
        self.label_len = 0;
        self.label_hash = fnv_start();
        self.keep(b'.');
        Step::Continue
    }

    fn finish(&mut self) -> Step {
        if self.label_len > 0 {
            self.close_label();
        }
        // Every label closed with a dot; the last one is not the name's.
        self.name_len = self.name_len.saturating_sub(1);
        if self.labels == 0 || self.has_letter == 0 {
            return self.nameless();
        }
        self.phase = phase::NAMED;
        Step::Named
    }
}

/// First writes built by hand, for tests here and the integration tests'
/// probe (a real client's ClientHello is in `first_write/*.bin`).
#[cfg(any(test, feature = "user"))]
pub mod fixtures {
    extern crate alloc;
    use alloc::{vec, vec::Vec};

    /// A minimal TLS ClientHello with the given extensions (type, data).
    pub fn client_hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(32);
        body.extend([1u8; 32]);
        // One cipher suite (TLS_AES_128_GCM_SHA256), no compression.
        body.extend([0, 2, 0x13, 0x01, 1, 0]);
        let mut all = Vec::new();
        for (kind, data) in extensions {
            all.extend(kind.to_be_bytes());
            all.extend((data.len() as u16).to_be_bytes());
            all.extend(data);
        }
        body.extend((all.len() as u16).to_be_bytes());
        body.extend(all);
        let mut handshake = vec![1];
        handshake.extend(&(body.len() as u32).to_be_bytes()[1..]);
        handshake.extend(body);
        let mut record = vec![0x16, 3, 1];
        record.extend((handshake.len() as u16).to_be_bytes());
        record.extend(handshake);
        record
    }

    /// The server_name extension naming `name`.
    pub fn server_name(name: &str) -> (u16, Vec<u8>) {
        let mut data = ((name.len() + 3) as u16).to_be_bytes().to_vec();
        data.push(0);
        data.extend((name.len() as u16).to_be_bytes());
        data.extend(name.as_bytes());
        (0, data)
    }
}

#[cfg(test)]
mod tests;
