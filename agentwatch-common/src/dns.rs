//! DNS response parsing, one small step at a time.
//!
//! The same code runs in the kernel (the cgroup skb program calls [`DnsParser::step`]
//! from a `bpf_loop` callback, with the parser state in map memory so the
//! verifier checks one step once) and in user space (tests, and the hostname
//! cache). Every read is masked into the fixed buffer and checked against the
//! message length. Owner names are skipped without following compression
//! pointers; CNAME targets are followed through them (they are how a chain
//! names its next link), but each jump must land strictly before where the
//! name part it ends began, so no packet can make the parser loop or read
//! out of bounds.
//!
//! Over TCP, [`DnsStream`] cuts a connection's byte stream into messages.

use crate::hash::{fnv_start, fnv_step, lower};

/// Bytes of a DNS message kept (a power of two; covers EDNS0's usual 1232).
pub const DNS_CAP: usize = 2048;
const MASK: usize = DNS_CAP - 1;
/// Labels of a name kept for suffix matching.
pub const MAX_LABELS: usize = 16;
/// CNAME targets hashed per message: chains longer than this are not followed.
pub const MAX_TARGETS: u32 = 8;
/// Compression pointers followed within one name.
pub const MAX_JUMPS: u32 = 16;
/// Bytes of a name in wire form, pointers aside (RFC 1035 3.1).
pub const MAX_NAME: u32 = 255;
/// Steps enough for any message of `DNS_CAP` bytes: every step but those
/// closing a label or taking a jump consumes a byte, except in CNAME
/// targets, each of which may re-read up to `MAX_NAME` bytes (two steps a
/// byte at most) through its pointers.
pub const MAX_STEPS: u32 = 2 * DNS_CAP as u32 + MAX_TARGETS * (2 * MAX_NAME + MAX_JUMPS);
const HEADER_LEN: u32 = 12;
const TYPE_A: u32 = 1;
const TYPE_CNAME: u32 = 5;
const TYPE_AAAA: u32 = 28;
const CLASS_IN: u32 = 1;

pub mod phase {
    /// A label's length byte (or a compression pointer) of the name being hashed.
    pub const NAME_LEN: u32 = 0;
    pub const NAME_BYTE: u32 = 1;
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
    /// A CNAME target name is complete: its label hashes are in `label_hashes`.
    Target,
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
    /// Bytes left in the label being hashed.
    pub label_left: u32,
    /// Labels of the name being hashed (may exceed `MAX_LABELS`).
    pub labels: u32,
    /// Where the CNAME record whose target is being hashed ends; 0 while
    /// hashing the question.
    pub name_end: u32,
    /// A compression pointer in the name must point below this: where the
    /// part of the name being read began.
    pub floor: u32,
    pub jumps: u32,
    /// Bytes of the name read, pointers aside.
    pub name_bytes: u32,
    /// CNAME targets still to hash; the kernel sets 0 once the message has
    /// matched, since nothing more is to be learned from names.
    pub targets_left: u32,
    pub _pad: u32,
    pub label_hash: u64,
    /// Hashes of the first `MAX_LABELS` labels of the name, leftmost first.
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
            phase: phase::NAME_LEN,
            answers: be16(buf, len, 6)?,
            floor: HEADER_LEN,
            targets_left: MAX_TARGETS,
            ..Self::default()
        })
    }

    /// Whether the name fitted in `label_hashes`.
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

    /// Where the name's bytes may be read up to: a target's own bytes stay
    /// inside its record until a pointer leads elsewhere.
    #[inline(always)]
    fn name_limit(&self) -> u32 {
        if self.name_end != 0 && self.jumps == 0 {
            self.name_end
        } else {
            self.len
        }
    }

    #[inline(always)]
    fn next_record(&mut self) {
        self.phase = if self.answers == 0 {
            phase::DONE
        } else {
            phase::ANAME
        };
    }

    /// Advances by one unit of work (a byte of a hashed name, a label of
    /// an owner name, or an answer's fixed part).
    pub fn step(&mut self, buf: &[u8; DNS_CAP]) -> Step {
        match self.phase {
            phase::NAME_LEN => {
                let limit = self.name_limit();
                let Some(len) = byte(buf, limit, self.pos) else {
                    return self.malformed();
                };
                if len & 0xc0 == 0xc0 {
                    // A question name is never compressed (it could only
                    // point back into the header).
                    if self.name_end == 0 || self.jumps == MAX_JUMPS {
                        return self.malformed();
                    }
                    let Some(low) = byte(buf, limit, self.pos + 1) else {
                        return self.malformed();
                    };
                    let target = ((len & 0x3f) << 8) | low;
                    // Every jump lands further back than the last: no loop.
                    if target >= self.floor {
                        return self.malformed();
                    }
                    self.pos = target;
                    self.floor = target;
                    self.jumps += 1;
                    return Step::Continue;
                }
                self.name_bytes += 1 + len;
                if len > 63 || self.name_bytes > MAX_NAME {
                    return self.malformed();
                }
                self.pos += 1;
                if len != 0 {
                    self.label_left = len;
                    self.label_hash = fnv_start();
                    self.phase = phase::NAME_BYTE;
                    Step::Continue
                } else if self.name_end == 0 {
                    self.phase = phase::QTAIL;
                    Step::Continue
                } else {
                    self.pos = self.name_end;
                    self.next_record();
                    Step::Target
                }
            }
            phase::NAME_BYTE => {
                if self.label_left == 0 {
                    if (self.labels as usize) < MAX_LABELS {
                        self.label_hashes[self.labels as usize & (MAX_LABELS - 1)] =
                            self.label_hash;
                    }
                    self.labels += 1;
                    self.phase = phase::NAME_LEN;
                    return Step::Continue;
                }
                let Some(b) = byte(buf, self.name_limit(), self.pos) else {
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
                self.next_record();
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
                self.answers -= 1;
                if class == CLASS_IN && rtype == TYPE_CNAME && self.targets_left > 0 {
                    self.targets_left -= 1;
                    self.pos = rdata;
                    self.name_end = rdata + rdlen;
                    self.floor = rdata;
                    self.jumps = 0;
                    self.name_bytes = 0;
                    self.labels = 0;
                    self.phase = phase::NAME_LEN;
                    return Step::Continue;
                }
                self.pos = rdata + rdlen;
                self.next_record();
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

/// A DNS-over-TCP response stream cut into messages (RFC 1035 4.2.2): each
/// is a two-byte length and then that many bytes, of which the first
/// `DNS_CAP` are kept. The kernel keeps one per connection from port 53 and
/// walks each segment's payload through it a [`Piece`] at a time, so a
/// message may start, continue and end in any segments.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsStream {
    /// Sequence number of the next byte expected.
    pub next_seq: u32,
    /// Bytes of the current message's length prefix seen (0 to 2).
    pub prefix_seen: u32,
    /// The current message's length, once its prefix is complete.
    pub message_len: u32,
    /// Bytes of the current message seen so far.
    pub seen: u32,
}

/// Where a segment falls in its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    /// It carries the next bytes.
    Next,
    /// A retransmission of bytes already seen.
    Old,
    /// Bytes before it are missing: the stream cannot be followed.
    Gap,
}

/// The next piece of a segment's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// One byte of a length prefix, for [`DnsStream::prefix_byte`].
    PrefixByte,
    /// `len` bytes of the message, to store at `at` in the buffer.
    Store { at: u32, len: u32 },
    /// `len` bytes of the message past `DNS_CAP`, not kept.
    Skip { len: u32 },
}

impl Piece {
    /// Bytes of the segment the piece takes.
    pub fn bytes(self) -> u32 {
        match self {
            Piece::PrefixByte => 1,
            Piece::Store { len, .. } | Piece::Skip { len } => len,
        }
    }
}

impl DnsStream {
    /// A stream whose first byte has sequence number `seq` (the SYN's + 1).
    pub fn new(seq: u32) -> Self {
        Self {
            next_seq: seq,
            ..Self::default()
        }
    }

    /// Places a segment of `len` payload bytes starting at `seq`; the
    /// stream then expects the bytes after a `Next` one.
    pub fn segment(&mut self, seq: u32, len: u32) -> Segment {
        let ahead = seq.wrapping_sub(self.next_seq) as i32;
        if ahead == 0 {
            self.next_seq = seq.wrapping_add(len);
            Segment::Next
        } else if ahead < 0 {
            Segment::Old
        } else {
            Segment::Gap
        }
    }

    /// The next piece of a segment with `left` (at least 1) bytes left.
    /// Call [`DnsStream::complete`] after each piece.
    pub fn piece(&mut self, left: u32) -> Piece {
        if self.prefix_seen < 2 {
            return Piece::PrefixByte;
        }
        let want = self.message_len - self.seen;
        let mut len = left.min(want);
        let at = self.seen;
        let piece = if at < DNS_CAP as u32 {
            len = len.min(DNS_CAP as u32 - at);
            Piece::Store { at, len }
        } else {
            Piece::Skip { len }
        };
        self.seen += len;
        piece
    }

    pub fn prefix_byte(&mut self, byte: u8) {
        self.message_len = (self.message_len << 8) | byte as u32;
        self.prefix_seen += 1;
    }

    /// Once the current message is complete: the bytes of it kept, and the
    /// stream waits for the next message's length.
    pub fn complete(&mut self) -> Option<u32> {
        if self.prefix_seen < 2 || self.seen < self.message_len {
            return None;
        }
        let kept = self.message_len.min(DNS_CAP as u32);
        self.prefix_seen = 0;
        self.message_len = 0;
        self.seen = 0;
        Some(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{domain_hash, label_hash};

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

    /// What a parse found: the question (as the parser held it then), the
    /// full-name hash of every CNAME target, the addresses, the last step.
    struct Parsed {
        question: Option<DnsParser>,
        targets: Vec<u64>,
        addresses: Vec<Vec<u8>>,
        end: Step,
    }

    /// The hash of the whole name in `label_hashes`, as `domain_hash` computes it.
    fn name_hash(parser: &DnsParser) -> u64 {
        let labels = parser.labels_kept();
        parser.label_hashes[..labels]
            .iter()
            .rev()
            .fold(crate::hash::SUFFIX_SEED, |hash, &label| {
                crate::hash::suffix_step(hash, label)
            })
    }

    fn parse(buf: &[u8; DNS_CAP], len: u32) -> Parsed {
        let mut parsed = Parsed {
            question: None,
            targets: Vec::new(),
            addresses: Vec::new(),
            end: Step::Malformed,
        };
        let Some(mut parser) = DnsParser::start(buf, len) else {
            return parsed;
        };
        for _ in 0..MAX_STEPS {
            match parser.step(buf) {
                Step::Continue => {}
                Step::Question => parsed.question = Some(parser),
                Step::Target => parsed.targets.push(name_hash(&parser)),
                Step::Address { offset, len } => parsed
                    .addresses
                    .push(buf[offset as usize..(offset + len) as usize].to_vec()),
                end => {
                    parsed.end = end;
                    return parsed;
                }
            }
        }
        panic!("parser did not finish within MAX_STEPS");
    }

    /// Runs the parser to the end: (question seen, addresses, final step).
    fn run(buf: &[u8; DNS_CAP], len: u32) -> (Option<DnsParser>, Vec<Vec<u8>>, Step) {
        let parsed = parse(buf, len);
        (parsed.question, parsed.addresses, parsed.end)
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
        let parsed = parse(&buf, len);
        assert_eq!(parsed.end, Step::Done);
        assert!(parsed.question.is_some());
        assert_eq!(parsed.targets, vec![domain_hash("edge.example.net")]);
        assert_eq!(parsed.addresses, vec![vec![127, 0, 0, 3]]);
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

    /// Offset of the rdata of the first answer after a question of `qname`
    /// whose owner is a 2-byte pointer.
    fn first_rdata(qname: &[u8]) -> usize {
        12 + qname.len() + 4 + 2 + 10
    }

    #[test]
    fn cname_targets_are_hashed_through_compression_pointers() {
        // assets.mycompany.example CNAME mybucket.s3.amazonaws.com
        //   CNAME edge.<s3.amazonaws.com of the first target>
        //   CNAME x.<the second target: two jumps> ; then A.
        let qname = name(&["assets", "mycompany", "example"]);
        let first = first_rdata(&qname);
        let target1 = name(&["mybucket", "s3", "amazonaws", "com"]);
        let mut body = record(&POINTER_TO_QNAME, 5, &target1);
        let s3_at = first + 1 + "mybucket".len();
        let mut target2 = vec![4];
        target2.extend_from_slice(b"edge");
        target2.extend_from_slice(&[0xc0, s3_at as u8]);
        let second = first + target1.len() + 2 + 10;
        body.extend(record(&[0xc0, first as u8], 5, &target2));
        let third = second + target2.len() + 2 + 10;
        body.extend(record(
            &[0xc0, second as u8],
            5,
            &[1, b'x', 0xc0, second as u8],
        ));
        body.extend(record(&[0xc0, third as u8], 1, &[127, 0, 0, 7]));
        let (buf, len) = response(&qname, 4, &body);
        let parsed = parse(&buf, len);
        assert_eq!(parsed.end, Step::Done);
        assert_eq!(
            parsed.targets,
            vec![
                domain_hash("mybucket.s3.amazonaws.com"),
                domain_hash("edge.s3.amazonaws.com"),
                domain_hash("x.edge.s3.amazonaws.com"),
            ]
        );
        assert_eq!(parsed.addresses, vec![vec![127, 0, 0, 7]]);
    }

    #[test]
    fn pointer_loops_and_forward_pointers_in_targets_are_malformed() {
        let qname = name(&["a", "example"]);
        let first = first_rdata(&qname) as u8;
        // A target pointing at itself, one pointing forward, and one that
        // jumps back into a name whose own pointer leads back to it (the
        // second jump does not go further back).
        let to_itself = record(&POINTER_TO_QNAME, 5, &[0xc0, first]);
        let forward = record(&POINTER_TO_QNAME, 5, &[0xc0, first + 10]);
        let second = first as usize + 4 + 2 + 10;
        let mut mutual = record(&POINTER_TO_QNAME, 16, &[1, b'b', 0xc0, second as u8]);
        mutual.extend(record(&POINTER_TO_QNAME, 5, &[0xc0, first]));
        for (what, body, answers) in [
            ("itself", to_itself, 1),
            ("forward", forward, 1),
            ("mutual", mutual, 2),
        ] {
            let (buf, len) = response(&qname, answers, &body);
            let parsed = parse(&buf, len);
            assert_eq!(parsed.end, Step::Malformed, "{what}");
            assert!(parsed.targets.is_empty(), "{what}");
        }
    }

    #[test]
    fn a_question_name_may_not_be_compressed_but_a_target_may_jump_into_it() {
        let qname = name(&["api", "example", "com"]);
        let body = record(&POINTER_TO_QNAME, 5, &[0xc0, 12 + 4]);
        let (buf, len) = response(&qname, 1, &body);
        assert_eq!(parse(&buf, len).targets, vec![domain_hash("example.com")]);
    }

    #[test]
    fn truncated_or_overlong_targets_are_malformed() {
        let qname = name(&["a", "example"]);
        let target = name(&["mybucket", "s3", "amazonaws", "com"]);
        let body = record(&POINTER_TO_QNAME, 5, &target);
        let (buf, len) = response(&qname, 1, &body);
        for cut in 12..len {
            assert_eq!(parse(&buf, cut).end, Step::Malformed, "cut at {cut}");
        }
        // A target whose labels run past its record's rdata.
        let mut body = record(&POINTER_TO_QNAME, 5, &target[..5]);
        body.extend_from_slice(&target[5..]);
        let (buf, len) = response(&qname, 1, &body);
        assert_eq!(parse(&buf, len).end, Step::Malformed);
        // More than MAX_NAME bytes, through pointers to a long name.
        let long: Vec<String> = (0..4).map(|i| format!("{i}").repeat(60)).collect();
        let long: Vec<&str> = long.iter().map(String::as_str).collect();
        let qname = name(&long);
        let body = record(
            &POINTER_TO_QNAME,
            5,
            &[
                10, b'0', b'1', b'2', b'3', b'4', b'5', b'6', b'7', b'8', b'9', 0xc0, 12,
            ],
        );
        let (buf, len) = response(&qname, 1, &body);
        assert_eq!(parse(&buf, len).end, Step::Malformed);
    }

    #[test]
    fn targets_are_not_hashed_once_matched_nor_beyond_max_targets() {
        let qname = name(&["a", "example"]);
        let mut body = Vec::new();
        for _ in 0..MAX_TARGETS + 2 {
            body.extend(record(&POINTER_TO_QNAME, 5, &name(&["b", "example"])));
        }
        body.extend(record(&POINTER_TO_QNAME, 1, &[10, 0, 0, 1]));
        let (buf, len) = response(&qname, MAX_TARGETS as u16 + 3, &body);
        let parsed = parse(&buf, len);
        assert_eq!(parsed.targets.len(), MAX_TARGETS as usize);
        assert_eq!(parsed.addresses, vec![vec![10, 0, 0, 1]]);
        let mut parser = DnsParser::start(&buf, len).unwrap();
        parser.targets_left = 0;
        for _ in 0..MAX_STEPS {
            match parser.step(&buf) {
                Step::Target => panic!("a target hashed after targets_left = 0"),
                Step::Done => return,
                Step::Malformed => panic!("malformed"),
                _ => {}
            }
        }
        panic!("did not finish");
    }

    #[test]
    fn the_costliest_targets_finish_within_max_steps() {
        // MAX_TARGETS targets, each a pointer to a question name of
        // MAX_NAME bytes made of one-byte labels, then many more records.
        let labels: Vec<&str> = (0..(MAX_NAME as usize - 1) / 2).map(|_| "a").collect();
        let qname = name(&labels);
        let mut body = Vec::new();
        let mut answers = 0;
        while 12 + qname.len() + 4 + body.len() + 14 < DNS_CAP {
            body.extend(record(&POINTER_TO_QNAME, 5, &POINTER_TO_QNAME));
            answers += 1;
        }
        let (buf, len) = response(&qname, answers, &body);
        let parsed = parse(&buf, len);
        assert_eq!(parsed.end, Step::Done);
        assert_eq!(parsed.targets.len(), MAX_TARGETS as usize);
    }

    /// Feeds `segments` of one connection through a stream and returns the
    /// messages it completed, as the kernel would store them.
    fn reassemble(segments: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut stream = DnsStream::new(1000);
        let mut buf = vec![0u8; DNS_CAP];
        let mut messages = Vec::new();
        let mut seq = 1000u32;
        for segment in segments {
            assert_eq!(stream.segment(seq, segment.len() as u32), Segment::Next);
            seq += segment.len() as u32;
            let mut at = 0;
            while at < segment.len() {
                let piece = stream.piece((segment.len() - at) as u32);
                match piece {
                    Piece::PrefixByte => stream.prefix_byte(segment[at]),
                    Piece::Store { at: to, len } => buf[to as usize..(to + len) as usize]
                        .copy_from_slice(&segment[at..at + len as usize]),
                    Piece::Skip { .. } => {}
                }
                assert!(piece.bytes() >= 1, "every piece takes a byte");
                at += piece.bytes() as usize;
                if let Some(kept) = stream.complete() {
                    messages.push(buf[..kept as usize].to_vec());
                }
            }
        }
        messages
    }

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = (message.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(message);
        out
    }

    fn railway_response() -> Vec<u8> {
        let body = record(&POINTER_TO_QNAME, 1, &[127, 0, 0, 2]);
        let (buf, len) = response(&name(&["backboard", "railway", "app"]), 1, &body);
        buf[..len as usize].to_vec()
    }

    #[test]
    fn tcp_messages_are_reassembled_however_segments_cut_them() {
        let message = railway_response();
        let stream = framed(&message);
        assert_eq!(reassemble(&[&stream]), vec![message.clone()]);
        // Every cut into two segments, and the prefix alone then two halves.
        for cut in 1..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(reassemble(&[a, b]), vec![message.clone()], "cut at {cut}");
        }
        let half = 2 + message.len() / 2;
        assert_eq!(
            reassemble(&[
                &stream[..1],
                &stream[1..2],
                &stream[2..half],
                &stream[half..]
            ]),
            vec![message.clone()]
        );
        // The reassembled message parses as the UDP one does.
        let mut buf = [0u8; DNS_CAP];
        buf[..message.len()].copy_from_slice(&message);
        assert_eq!(run(&buf, message.len() as u32).1, vec![vec![127, 0, 0, 2]]);
    }

    #[test]
    fn several_tcp_messages_share_segments() {
        let (a, b) = (railway_response(), name(&["x"]));
        let mut both = framed(&a);
        both.extend(framed(&b));
        assert_eq!(reassemble(&[&both]), vec![a.clone(), b.clone()]);
        let cut = framed(&a).len() + 1;
        assert_eq!(reassemble(&[&both[..cut], &both[cut..]]), vec![a, b]);
    }

    #[test]
    fn tcp_messages_longer_than_dns_cap_keep_their_start_and_the_framing() {
        let long: Vec<u8> = (0..DNS_CAP + 300).map(|i| i as u8).collect();
        let mut both = framed(&long);
        both.extend(framed(b"next"));
        let messages = reassemble(&[&both[..1000], &both[1000..]]);
        assert_eq!(messages, vec![long[..DNS_CAP].to_vec(), b"next".to_vec()]);
    }

    #[test]
    fn tcp_segments_out_of_order_are_old_or_gaps_across_wraparound() {
        let mut stream = DnsStream::new(u32::MAX - 1);
        assert_eq!(stream.segment(u32::MAX - 1, 4), Segment::Next);
        assert_eq!(stream.next_seq, 2);
        assert_eq!(stream.segment(u32::MAX - 1, 4), Segment::Old);
        assert_eq!(stream.segment(10, 4), Segment::Gap);
        assert_eq!(stream.segment(2, 0), Segment::Next);
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
