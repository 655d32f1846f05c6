//! Reading a request from the head of what a client wrote (HTTP/1.x, or HTTP/2 from the
//! connection preface on). The kernel hands over at most a few KiB, so a head cut anywhere
//! still gives what it shows: the method, path and host when they are in it, and the part of
//! the body that is (with `body_complete` false when more was to come).

use std::collections::HashMap;

use loona_hpack::Decoder;

/// What a client asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target as sent: `/path?query`, or a proxy's absolute form.
    pub target: String,
    /// From `Host`, `:authority` or an absolute target: lower case, without port.
    pub host: Option<String>,
    /// Names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether `body` is the whole body (false when the head was cut before its end).
    pub body_complete: bool,
}

impl Request {
    /// A request whose headers cannot be read, on a connection to `host`
    /// (when known): no method, nothing more to wait for.
    pub fn unreadable(host: Option<String>) -> Self {
        Self {
            host,
            body_complete: true,
            ..Self::default()
        }
    }

    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The path without its query, also for an absolute-form target.
    pub fn path(&self) -> &str {
        let target = match self.target.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("/", |at| &rest[at..]),
            None => &self.target,
        };
        target.split(['?', '#']).next().unwrap_or(target)
    }

    /// The query string, without `?`.
    pub fn query(&self) -> Option<&str> {
        let (_, query) = self.target.split_once('?')?;
        Some(query.split('#').next().unwrap_or(query))
    }

    /// The media type of the body, lower case, without parameters.
    pub fn content_type(&self) -> Option<String> {
        let value = self.header("content-type")?;
        Some(value.split(';').next()?.trim().to_ascii_lowercase())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not an HTTP request: {0}")]
    NotHttp(String),
    #[error("the request is cut before its {0}")]
    Truncated(&'static str),
    #[error("HTTP/2: {0}")]
    Http2(String),
}

/// Reads a request from the first bytes a client wrote on a connection.
pub fn parse_request(bytes: &[u8]) -> Result<Request, ParseError> {
    if let Some(frames) = bytes.strip_prefix(HTTP2_PREFACE) {
        return http2(frames);
    }
    if !bytes.is_empty() && HTTP2_PREFACE.starts_with(bytes) {
        return Err(ParseError::Truncated("HTTP/2 connection preface"));
    }
    http1(bytes).map(|(request, _)| request)
}

/// The host of an authority (`Host: a.b:443`, `[::1]:8080`), lower case without port.
pub(super) fn authority_host(authority: &str) -> Option<String> {
    let url = url::Url::parse(&format!("http://{authority}/")).ok()?;
    url.host_str()
        .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
}

fn absolute_host(target: &str) -> Option<String> {
    let url = url::Url::parse(target).ok()?;
    url.host_str().map(str::to_ascii_lowercase)
}

/// Headers beyond this many are an error: no real client request has them.
const MAX_HEADERS: usize = 96;

/// Every request in what a client wrote on an HTTP/1.x connection, in
/// order: requests may be pipelined, several in one write. Bytes after a
/// whole request that are no request's start are one request that cannot be
/// read, to the first one's host.
pub fn parse_pipelined(bytes: &[u8]) -> Result<Vec<Request>, ParseError> {
    let (first, mut used) = http1(bytes)?;
    let host = first.host.clone();
    let mut requests = vec![first];
    while used < bytes.len() && requests.last().is_some_and(|r| r.body_complete) {
        // Empty lines between requests are allowed (RFC 9112 2.2).
        if bytes[used..].iter().all(u8::is_ascii_whitespace) {
            break;
        }
        match http1(&bytes[used..]) {
            Ok((request, more)) => {
                requests.push(request);
                used += more.max(1);
            }
            Err(_) => {
                requests.push(Request::unreadable(host));
                break;
            }
        }
    }
    Ok(requests)
}

/// One request from the start of `bytes`, and the bytes it took (all of
/// them when its head or body is cut).
fn http1(bytes: &[u8]) -> Result<(Request, usize), ParseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let bad = |e: httparse::Error| ParseError::NotHttp(e.to_string());
    let (head_len, mut request) = match req.parse(bytes).map_err(bad)? {
        httparse::Status::Complete(len) => (Some(len), convert(&req)),
        httparse::Status::Partial => {
            // Cut inside the head: end it after its last whole line and read that.
            let line_end = bytes
                .windows(2)
                .rposition(|w| w == b"\r\n")
                .ok_or(ParseError::Truncated("request line ends"))?;
            let mut head = bytes[..line_end + 2].to_vec();
            head.extend_from_slice(b"\r\n");
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&head).map_err(bad)? {
                httparse::Status::Complete(_) => (None, convert(&req)),
                httparse::Status::Partial => return Err(ParseError::Truncated("request line")),
            }
        }
    };
    let mut used = bytes.len();
    if let Some(len) = head_len {
        let (body, complete, body_len) = http1_body(&request, &bytes[len..]);
        request.body = body;
        request.body_complete = complete;
        if complete {
            used = len + body_len;
        }
    }
    Ok((request, used))
}

fn convert(req: &httparse::Request<'_, '_>) -> Request {
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let target = req.path.unwrap_or_default().to_string();
    let host = absolute_host(&target).or_else(|| {
        let value = headers.iter().find(|(n, _)| n == "host")?;
        authority_host(&value.1)
    });
    Request {
        method: req.method.unwrap_or_default().to_string(),
        target,
        host,
        headers,
        body: Vec::new(),
        body_complete: false,
    }
}

/// The body after a complete head: by `Content-Length`, or chunks as far as
/// they are there; whether it is whole, and the bytes it took.
fn http1_body(request: &Request, rest: &[u8]) -> (Vec<u8>, bool, usize) {
    let chunked = request
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return dechunk(rest);
    }
    match request
        .header("content-length")
        .and_then(|cl| cl.trim().parse::<usize>().ok())
    {
        Some(len) => {
            let taken = len.min(rest.len());
            (rest[..taken].to_vec(), rest.len() >= len, taken)
        }
        // A request without either has no body.
        None => (Vec::new(), true, 0),
    }
}

fn dechunk(chunks: &[u8]) -> (Vec<u8>, bool, usize) {
    let mut body = Vec::new();
    let mut rest = chunks;
    loop {
        let Ok(httparse::Status::Complete((used, size))) = httparse::parse_chunk_size(rest) else {
            return (body, false, chunks.len());
        };
        rest = &rest[used..];
        if size == 0 {
            // The last chunk, then (trailers and) the empty line.
            let end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(rest.len(), |at| at + 2);
            return (body, true, chunks.len() - rest.len() + end);
        }
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if rest.len() < size {
            body.extend_from_slice(rest);
            return (body, false, chunks.len());
        }
        body.extend_from_slice(&rest[..size]);
        rest = rest[size..].strip_prefix(b"\r\n").unwrap_or_default();
    }
}

/// What a client writes first on an HTTP/2 connection.
pub const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// The first request stream of a connection: its header block (HEADERS and CONTINUATION
/// frames) and its DATA frames, complete or not.
fn http2(frames: &[u8]) -> Result<Request, ParseError> {
    let mut connection = Http2Connection::new();
    // Nothing follows: a frame cut at the end is read as far as it goes.
    let mut requests = connection.requests(frames, Some(0))?;
    if requests.is_empty() {
        requests.extend(
            connection
                .open
                .into_values()
                .next()
                .map(|open| open.request),
        );
    }
    requests
        .into_iter()
        .next()
        .ok_or(ParseError::Truncated("first HEADERS frame"))
}

/// Bytes of one stream's body kept until it ends.
const STREAM_BODY_CAP: usize = 64 << 10;
/// Streams of one connection whose body is still to come, at most.
const OPEN_STREAMS_CAP: usize = 64;
/// The largest HPACK dynamic table a client may ask for (the default is
/// 4 KiB; a peer that allows more is rare).
const HPACK_TABLE_CAP: usize = 64 << 10;
/// A frame longer than this is no frame a client sends (2^24 - 1 is the
/// protocol's bound; 16 KiB the default most peers keep).
const FRAME_CAP: usize = 1 << 24;

/// The client side of one HTTP/2 connection, as seen write by write from its
/// preface on: every header block goes through one HPACK decoder, so a
/// request that refers to an earlier one's headers (its `:authority`, most
/// often) is read as the server reads it.
pub struct Http2Connection {
    decoder: Decoder<'static>,
    /// The end of the last write, when it ended inside a frame.
    carry: Vec<u8>,
    /// Requests whose header block was seen and whose body is still coming.
    open: HashMap<u32, OpenStream>,
    /// The header block being read when a write ended inside it.
    block: Option<(u32, Vec<u8>, bool)>,
    /// The host the connection's first request named: a later request that
    /// names none goes there too.
    host: Option<String>,
    /// Bytes of the connection went unseen (a write cut by the kernel's
    /// bound): its HPACK state is unknown, and so is every later header block.
    lost: bool,
}

struct OpenStream {
    request: Request,
}

impl Default for Http2Connection {
    fn default() -> Self {
        Self::new()
    }
}

impl Http2Connection {
    pub fn new() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(HPACK_TABLE_CAP);
        Self {
            decoder,
            carry: Vec::new(),
            open: HashMap::new(),
            block: None,
            host: None,
            lost: false,
        }
    }

    /// Whether `bytes`, written on a connection whose start was not seen,
    /// are HTTP/2 frames carrying a request: whole frames to the last byte,
    /// a HEADERS frame among them. (Other binary protocols rarely frame that
    /// way by chance.)
    pub fn looks_like_a_request(mut bytes: &[u8]) -> bool {
        let mut headers = false;
        while !bytes.is_empty() {
            let Some((header, rest)) = bytes.split_first_chunk::<9>() else {
                return false;
            };
            let len =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            if header[3] > CONTINUATION || header[5] & 0x80 != 0 || rest.len() < len {
                return false;
            }
            headers |= header[3] == HEADERS;
            bytes = &rest[len..];
        }
        headers
    }

    /// The requests the next write on the connection completes, in order:
    /// each once its header block and body are whole (or its body reached
    /// the cap, or the write was `cut`: the kernel's bound ended it early,
    /// with `unseen` bytes of it never shown). A request whose headers
    /// cannot be read (the connection's HPACK state is lost, or frames went
    /// unseen after the cut) comes with no method and the connection's host.
    pub fn requests(
        &mut self,
        write: &[u8],
        cut: Option<usize>,
    ) -> Result<Vec<Request>, ParseError> {
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.extend_from_slice(write);
        let mut done = Vec::new();
        let mut frames = bytes.as_slice();
        // Bytes of the frame the cut fell in that were never shown.
        let mut cut_frame_missing = None;
        while frames.len() >= 9 {
            let len =
                usize::from(frames[0]) << 16 | usize::from(frames[1]) << 8 | usize::from(frames[2]);
            if len >= FRAME_CAP {
                return Err(ParseError::Http2(format!("a frame of {len} bytes")));
            }
            if frames.len() < 9 + len && cut.is_none() {
                break;
            }
            let (kind, flags) = (frames[3], frames[4]);
            let id = u32::from_be_bytes([frames[5], frames[6], frames[7], frames[8]]) & 0x7fff_ffff;
            let whole = frames.len() >= 9 + len;
            if !whole {
                cut_frame_missing = Some(9 + len - frames.len());
            }
            let payload = &frames[9..frames.len().min(9 + len)];
            frames = if whole { &frames[9 + len..] } else { &[] };
            match kind {
                HEADERS => {
                    let fragment = unpad(payload, flags, whole)?;
                    let fragment = if flags & PRIORITY != 0 {
                        fragment.get(5..).unwrap_or_default()
                    } else {
                        fragment
                    };
                    let ends = flags & END_STREAM != 0;
                    self.block = Some((id, fragment.to_vec(), ends));
                    if flags & END_HEADERS != 0 || !whole {
                        self.end_block(whole, &mut done)?;
                    }
                }
                CONTINUATION => {
                    if let Some((stream, block, _)) = &mut self.block
                        && *stream == id
                    {
                        block.extend_from_slice(payload);
                        if flags & END_HEADERS != 0 || !whole {
                            self.end_block(whole, &mut done)?;
                        }
                    }
                }
                DATA => {
                    let data = unpad(payload, flags, whole)?;
                    let ends = whole && flags & END_STREAM != 0;
                    if let Some(open) = self.open.get_mut(&id) {
                        let room = STREAM_BODY_CAP.saturating_sub(open.request.body.len());
                        open.request
                            .body
                            .extend_from_slice(&data[..data.len().min(room)]);
                        if ends || !whole || open.request.body.len() >= STREAM_BODY_CAP {
                            let mut open = self.open.remove(&id).expect("an open stream");
                            open.request.body_complete = ends;
                            done.push(open.request);
                        }
                    }
                }
                // SETTINGS, WINDOW_UPDATE, PING, RST_STREAM, GOAWAY, PRIORITY:
                // nothing a request does.
                _ => {}
            }
        }
        let Some(unseen) = cut else {
            self.carry = frames.to_vec();
            return Ok(done);
        };
        // What came after the bound never reached us: later header blocks
        // cannot be read, and neither can the frames' bounds.
        self.lost = true;
        for (_, open) in self.open.drain() {
            done.push(open.request);
        }
        // Frames beyond the one the cut fell in (or beyond the last whole
        // one) may hold requests of their own.
        if unseen > cut_frame_missing.unwrap_or(0) {
            done.push(Request::unreadable(self.host.clone()));
        }
        Ok(done)
    }

    /// A request on this connection whose headers could not be read: it
    /// goes where the connection does, doing what cannot be seen. The
    /// connection's later header blocks cannot be read either.
    pub fn unreadable(&mut self) -> Request {
        self.lost = true;
        Request::unreadable(self.host.clone())
    }

    /// Decodes the header block just read; a request without a body to come
    /// is done, one with a body stays open for its DATA frames.
    fn end_block(&mut self, whole: bool, done: &mut Vec<Request>) -> Result<(), ParseError> {
        let Some((stream, block, ends)) = self.block.take() else {
            return Ok(());
        };
        let mut request = Request::default();
        if !self.lost {
            let decoded = self.decoder.decode_with_cb(&block, |name, value| {
                let name = String::from_utf8_lossy(&name).to_ascii_lowercase();
                let value = String::from_utf8_lossy(&value).into_owned();
                match name.as_str() {
                    ":method" => request.method = value,
                    ":path" => request.target = value,
                    ":authority" => request.host = authority_host(&value),
                    _ if name.starts_with(':') => {}
                    _ => request.headers.push((name, value)),
                }
            });
            match decoded {
                // A block cut short still yields the fields before the cut;
                // the decoder's state after it is unknown.
                Err(_) if !whole => self.lost = true,
                Err(e) => return Err(ParseError::Http2(format!("bad header block: {e:?}"))),
                Ok(()) => {}
            }
        }
        if request.host.is_none() {
            request.host = request.header("host").and_then(authority_host);
        }
        if request.host.is_none() {
            request.host.clone_from(&self.host);
        }
        if self.host.is_none() {
            self.host.clone_from(&request.host);
        }
        if ends || !whole {
            request.body_complete = ends;
            done.push(request);
        } else if self.open.len() >= OPEN_STREAMS_CAP {
            // Too many bodies pending: judged by the head alone.
            done.push(request);
        } else {
            self.open.insert(stream, OpenStream { request });
        }
        Ok(())
    }
}

/// An HTTP/2 frame as a client writes it, for the tests.
#[cfg(test)]
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A padded frame's payload without its pad length and padding.
fn unpad(payload: &[u8], flags: u8, whole: bool) -> Result<&[u8], ParseError> {
    if flags & PADDED == 0 {
        return Ok(payload);
    }
    let (&pad, rest) = payload
        .split_first()
        .ok_or(ParseError::Truncated("pad length"))?;
    if !whole {
        // The padding is at the end, which is not here.
        return Ok(rest);
    }
    rest.len()
        .checked_sub(usize::from(pad))
        .map(|end| &rest[..end])
        .ok_or_else(|| ParseError::Http2("padding longer than the frame".into()))
}
