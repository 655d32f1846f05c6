//! DNS response parsing, one small step at a time.
//!
//! The same code runs in the kernel (the cgroup skb program calls [`DnsParser::step`]
//! from a `bpf_loop` callback, with the parser state in map memory so the
//! verifier checks one step once) and in user space (tests, and the hostname
//! cache). Every read is masked into the fixed buffer and checked against the
//! message length, and names are skipped without following compression
//! pointers, so no packet can make it read out of bounds or loop.

use crate::hash::{fnv_start, fnv_step, lower};

/// Bytes of a DNS message kept (a power of two; covers EDNS0's usual 1232).
pub const DNS_CAP: usize = 2048;
const MASK: usize = DNS_CAP - 1;
/// Labels of the question name kept for suffix matching.
pub const MAX_LABELS: usize = 16;
/// Steps enough for any message of `DNS_CAP` bytes: every step but the one
/// closing a question label consumes at least a byte.
pub const MAX_STEPS: u32 = 2 * DNS_CAP as u32;
const HEADER_LEN: u32 = 12;
const TYPE_A: u32 = 1;
const TYPE_AAAA: u32 = 28;
const CLASS_IN: u32 = 1;

pub mod phase {
    pub const QNAME_LEN: u32 = 0;
    pub const QNAME_BYTE: u32 = 1;
    pub const QTAIL: u32 = 2;
    pub const ANAME: u32 = 3;
    pub const AFIXED: u32 = 4;
    pub const DONE: u32 = 5;
    pub const MALFORMED: u32 = 6;
}

/// What one step found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Continue,
    /// The question name is complete: its label hashes are in `label_hashes`.
    Question,
    /// An A (len 4) or AAAA (len 16) answer at `offset` in the buffer.
    Address {
        offset: u32,
        len: u32,
    },
    Done,
    Malformed,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsParser {
    /// Message length in the buffer (at most `DNS_CAP`).
    pub len: u32,
    pub pos: u32,
    pub phase: u32,
    /// Answer records not yet parsed.
    pub answers: u32,
    /// Bytes left in the question label being hashed.
    pub label_left: u32,
    /// Labels of the question name (may exceed `MAX_LABELS`).
    pub labels: u32,
    pub label_hash: u64,
    /// Hashes of the first `MAX_LABELS` question labels, leftmost first.
    pub label_hashes: [u64; MAX_LABELS],
}

#[inline(always)]
fn byte(buf: &[u8; DNS_CAP], len: u32, at: u32) -> Option<u32> {
    if at < len {
        Some(buf[at as usize & MASK] as u32)
    } else {
        None
    }
}

#[inline(always)]
fn be16(buf: &[u8; DNS_CAP], len: u32, at: u32) -> Option<u32> {
    Some((byte(buf, len, at)? << 8) | byte(buf, len, at + 1)?)
}

impl DnsParser {
    /// Checks the header of a response with exactly one question; `None`
    /// for queries, errors, truncated headers and anything else to ignore.
    pub fn start(buf: &[u8; DNS_CAP], len: u32) -> Option<Self> {
        let len = if len as usize > DNS_CAP {
            DNS_CAP as u32
        } else {
            len
        };
        if len < HEADER_LEN {
            return None;
        }
        let flags = be16(buf, len, 2)?;
        let is_response = flags & 0x8000 != 0;
        let opcode = (flags >> 11) & 0xf;
        let rcode = flags & 0xf;
        if !is_response || opcode != 0 || rcode != 0 || be16(buf, len, 4)? != 1 {
            return None;
        }
        Some(Self {
            len,
            pos: HEADER_LEN,
            phase: phase::QNAME_LEN,
            answers: be16(buf, len, 6)?,
            ..Self::default()
        })
    }

    /// Whether the question name fitted in `label_hashes`.
    pub fn labels_kept(&self) -> usize {
        if self.labels as usize > MAX_LABELS {
            0
        } else {
            self.labels as usize
        }
    }

    fn malformed(&mut self) -> Step {
        self.phase = phase::MALFORMED;
        Step::Malformed
    }

    /// Advances by one unit of work (a byte of the question name, a label of
    /// an answer name, or an answer's fixed part).
    pub fn step(&mut self, buf: &[u8; DNS_CAP]) -> Step {
        match self.phase {
            phase::QNAME_LEN => {
                let Some(len) = byte(buf, self.len, self.pos) else {
                    return self.malformed();
                };
                // A question name is never compressed in practice, and a
                // pointer could only point back into the header.
                if len > 63 {
                    return self.malformed();
                }
                self.pos += 1;
                if len == 0 {
                    self.phase = phase::QTAIL;
                } else {
                    self.label_left = len;
                    self.label_hash = fnv_start();
                    self.phase = phase::QNAME_BYTE;
                }
                Step::Continue
            }
            phase::QNAME_BYTE => {
                if self.label_left == 0 {
                    if (self.labels as usize) < MAX_LABELS {
                        self.label_hashes[self.labels as usize & (MAX_LABELS - 1)] =
                            self.label_hash;
                    }
                    self.labels += 1;
                    self.phase = phase::QNAME_LEN;
                    return Step::Continue;
                }
                let Some(b) = byte(buf, self.len, self.pos) else {
                    return self.malformed();
                };
                self.label_hash = fnv_step(self.label_hash, lower(b as u8));
                self.pos += 1;
                self.label_left -= 1;
                Step::Continue
            }
            phase::QTAIL => {
                // QTYPE and QCLASS.
                if self.pos + 4 > self.len {
                    return self.malformed();
                }
                self.pos += 4;
                self.phase = if self.answers == 0 {
                    phase::DONE
                } else {
                    phase::ANAME
                };
                Step::Question
            }
            phase::ANAME => {
                let Some(len) = byte(buf, self.len, self.pos) else {
                    return self.malformed();
                };
                if len & 0xc0 == 0xc0 {
                    // A compression pointer ends the name; it is not followed.
                    self.pos += 2;
                    self.phase = phase::AFIXED;
                } else if len > 63 {
                    return self.malformed();
                } else if len == 0 {
                    self.pos += 1;
                    self.phase = phase::AFIXED;
                } else {
                    self.pos += 1 + len;
                }
                Step::Continue
            }
            phase::AFIXED => {
                let (Some(rtype), Some(class), Some(rdlen)) = (
                    be16(buf, self.len, self.pos),
                    be16(buf, self.len, self.pos + 2),
                    be16(buf, self.len, self.pos + 8),
                ) else {
                    return self.malformed();
                };
                let rdata = self.pos + 10;
                if rdata + rdlen > self.len {
                    return self.malformed();
                }
                self.pos = rdata + rdlen;
                self.answers -= 1;
                self.phase = if self.answers == 0 {
                    phase::DONE
                } else {
                    phase::ANAME
                };
                let address = class == CLASS_IN
                    && ((rtype == TYPE_A && rdlen == 4) || (rtype == TYPE_AAAA && rdlen == 16));
                if address {
                    Step::Address {
                        offset: rdata,
                        len: rdlen,
                    }
                } else {
                    Step::Continue
                }
            }
            phase::DONE => Step::Done,
            _ => Step::Malformed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::label_hash;

    /// Builds a response: header, one question, then raw answer bytes.
    fn response(qname: &[u8], answers: u16, body: &[u8]) -> ([u8; DNS_CAP], u32) {
        let mut msg = vec![0x12, 0x34, 0x81, 0x80, 0, 1];
        msg.extend_from_slice(&answers.to_be_bytes());
        msg.extend_from_slice(&[0, 0, 0, 0]);
        msg.extend_from_slice(qname);
        msg.extend_from_slice(&[0, 1, 0, 1]);
        msg.extend_from_slice(body);
        let mut buf = [0u8; DNS_CAP];
        buf[..msg.len()].copy_from_slice(&msg);
        (buf, msg.len() as u32)
    }

    fn name(labels: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for label in labels {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }

    fn record(owner: &[u8], rtype: u16, rdata: &[u8]) -> Vec<u8> {
        let mut out = owner.to_vec();
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(rdata);
        out
    }

    /// Runs the parser to the end: (question seen, addresses, final step).
    fn run(buf: &[u8; DNS_CAP], len: u32) -> (Option<DnsParser>, Vec<Vec<u8>>, Step) {
        let Some(mut parser) = DnsParser::start(buf, len) else {
            return (None, Vec::new(), Step::Malformed);
        };
        let mut question = None;
        let mut addresses = Vec::new();
        for _ in 0..MAX_STEPS {
            match parser.step(buf) {
                Step::Continue => {}
                Step::Question => question = Some(parser),
                Step::Address { offset, len } => {
                    addresses.push(buf[offset as usize..(offset + len) as usize].to_vec())
                }
                end => return (question, addresses, end),
            }
        }
        panic!("parser did not finish within MAX_STEPS");
    }

    const POINTER_TO_QNAME: [u8; 2] = [0xc0, 12];

    #[test]
    fn a_and_aaaa_answers_with_compressed_owner_names() {
        let mut body = record(&POINTER_TO_QNAME, 1, &[127, 0, 0, 2]);
        let mut v6 = [0u8; 16];
        v6[15] = 2;
        body.extend(record(&POINTER_TO_QNAME, 28, &v6));
        let (buf, len) = response(&name(&["backboard", "railway", "app"]), 2, &body);
        let (question, addresses, end) = run(&buf, len);
        assert_eq!(end, Step::Done);
        let question = question.expect("question");
        assert_eq!(question.labels, 3);
        assert_eq!(question.label_hashes[0], label_hash(b"backboard"));
        assert_eq!(question.label_hashes[2], label_hash(b"app"));
        assert_eq!(addresses, vec![vec![127, 0, 0, 2], v6.to_vec()]);
    }

    #[test]
    fn letter_case_does_not_change_label_hashes() {
        let (buf, len) = response(&name(&["BackBoard", "RAILWAY", "app"]), 0, &[]);
        let (question, _, end) = run(&buf, len);
        assert_eq!(end, Step::Done);
        assert_eq!(question.unwrap().label_hashes[1], label_hash(b"railway"));
    }

    #[test]
    fn cname_chain_yields_the_final_addresses() {
        // backboard.railway.app CNAME edge.example.net (rdata compressed
        // against itself), then edge.example.net A.
        let target = name(&["edge", "example", "net"]);
        let mut body = record(&POINTER_TO_QNAME, 5, &target);
        // Owner of the A record: a pointer to the CNAME's rdata.
        let cname_rdata_at = 12 + name(&["backboard", "railway", "app"]).len() + 4 + 2 + 10;
        body.extend(record(&[0xc0, cname_rdata_at as u8], 1, &[127, 0, 0, 3]));
        let (buf, len) = response(&name(&["backboard", "railway", "app"]), 2, &body);
        let (question, addresses, end) = run(&buf, len);
        assert_eq!(end, Step::Done);
        assert!(question.is_some());
        assert_eq!(addresses, vec![vec![127, 0, 0, 3]]);
    }

    #[test]
    fn truncated_packets_are_malformed_not_overread() {
        let body = record(&POINTER_TO_QNAME, 1, &[127, 0, 0, 2]);
        let (buf, len) = response(&name(&["a", "example", "com"]), 1, &body);
        for cut in 12..len {
            let (_, addresses, end) = run(&buf, cut);
            assert!(addresses.is_empty(), "cut at {cut}");
            assert_eq!(end, Step::Malformed, "cut at {cut}");
        }
        // A header shorter than 12 bytes is not even started.
        assert!(DnsParser::start(&buf, 11).is_none());
    }

    #[test]
    fn looping_compression_pointers_terminate() {
        // An answer whose owner name points at itself, and a record claiming
        // more answers than there are.
        let self_offset = 12 + name(&["x", "com"]).len() as u8 + 4;
        let mut body = record(&[0xc0, self_offset], 1, &[10, 0, 0, 1]);
        body.extend_from_slice(&[0xc0, self_offset]);
        let (buf, len) = response(&name(&["x", "com"]), 5, &body);
        let (_, addresses, end) = run(&buf, len);
        assert_eq!(addresses, vec![vec![10, 0, 0, 1]]);
        assert_eq!(end, Step::Malformed);
    }

    #[test]
    fn pointer_in_question_and_bad_labels_are_malformed() {
        let (buf, len) = response(&[0xc0, 12], 1, &[]);
        assert_eq!(run(&buf, len).2, Step::Malformed);
        let (buf, len) = response(&[64, b'a'], 0, &[]);
        assert_eq!(run(&buf, len).2, Step::Malformed);
    }

    #[test]
    fn queries_errors_and_multi_question_messages_are_ignored() {
        let (mut buf, len) = response(&name(&["x", "com"]), 0, &[]);
        buf[2] = 0x01; // QR = 0: a query
        assert!(DnsParser::start(&buf, len).is_none());
        let (mut buf, len) = response(&name(&["x", "com"]), 0, &[]);
        buf[3] = 0x83; // NXDOMAIN
        assert!(DnsParser::start(&buf, len).is_none());
        let (mut buf, len) = response(&name(&["x", "com"]), 0, &[]);
        buf[5] = 2; // two questions
        assert!(DnsParser::start(&buf, len).is_none());
    }

    #[test]
    fn other_record_types_and_wrong_lengths_are_skipped() {
        let mut body = record(&POINTER_TO_QNAME, 16, b"\x05hello"); // TXT
        body.extend(record(&POINTER_TO_QNAME, 1, &[1, 2, 3])); // A of 3 bytes
        body.extend(record(&POINTER_TO_QNAME, 1, &[1, 2, 3, 4]));
        let (buf, len) = response(&name(&["x", "com"]), 3, &body);
        let (_, addresses, end) = run(&buf, len);
        assert_eq!(end, Step::Done);
        assert_eq!(addresses, vec![vec![1, 2, 3, 4]]);
    }

    #[test]
    fn names_deeper_than_max_labels_are_not_kept() {
        let labels: Vec<&str> = (0..MAX_LABELS + 1).map(|_| "a").collect();
        let (buf, len) = response(&name(&labels), 0, &[]);
        let (question, _, end) = run(&buf, len);
        assert_eq!(end, Step::Done);
        assert_eq!(question.unwrap().labels_kept(), 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic_or_overrun() {
        // A deterministic pseudo-random walk over many small messages.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut buf = [0u8; DNS_CAP];
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = 12 + (seed % 200) as u32;
            for (i, b) in buf.iter_mut().take(len as usize).enumerate() {
                *b = (seed.rotate_left(i as u32 % 64) >> 3) as u8;
            }
            buf[2] = 0x81;
            buf[3] = 0x80;
            buf[4] = 0;
            buf[5] = 1;
            let _ = run(&buf, len);
        }
    }
}
