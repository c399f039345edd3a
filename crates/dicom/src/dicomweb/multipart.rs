//! `multipart/related` bodies (RFC 2046 section 5.1, RFC 2387) as DICOMweb sends them: a
//! streaming parser for WADO-RS responses and a writer for STOW-RS requests.
//!
//! The parser takes the body in pieces of any size as they arrive and hands back each part
//! once it is complete, so a study is never buffered whole (one part, one instance, is).
//! Per RFC 2046: a preamble before the first delimiter and an epilogue after the closing
//! one are ignored; a delimiter is CRLF, `--`, the boundary, optional transport padding
//! (spaces, tabs) and CRLF (`--` instead for the closing one); a part is its header lines,
//! an empty line and its body. A part with a `Content-Length` is read by its length (and
//! must end at a delimiter), one without by finding the next delimiter. A body that ends
//! before the closing delimiter is an error ([`Parser::finish`]), never a silently short
//! list.

use memchr::memmem;

use super::Error;

/// Longest boundary accepted. RFC 2046 allows 70 characters, but servers send longer ones
/// (Orthanc 1.10's are 72), so the parser takes what a sane server could send; the
/// writer's are 38.
const MAX_BOUNDARY: usize = 256;
/// Largest header block of one part.
const MAX_HEADERS: usize = 64 * 1024;
/// Most bytes reserved for a part's body on its Content-Length alone (the rest as it
/// arrives): the fuzzer sent 999999999999 and the reservation aborted the process.
const RESERVE_AT_MOST: usize = 16 << 20;

/// One part: its headers (names lower-cased, in order) and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// `(name, value)`, names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The part's bytes.
    pub body: Vec<u8>,
}

impl Part {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The part's Content-Type, if it has one.
    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
    }
}

/// The parameter `name` of a header value such as a Content-Type (`type/subtype; a=b;
/// c="d e"`), unquoted (backslash escapes resolved); case-insensitive name.
pub fn parameter(value: &str, name: &str) -> Option<String> {
    let mut rest = value.split_once(';')?.1;
    loop {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim();
        let after = after.trim_start();
        let (val, next) = if let Some(q) = after.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            out.push(e);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            let end = end?;
            let next = q[end..].split_once(';').map(|(_, n)| n);
            (out, next)
        } else {
            match after.split_once(';') {
                Some((v, n)) => (v.trim().to_string(), Some(n)),
                None => (after.trim().to_string(), None),
            }
        };
        if key.eq_ignore_ascii_case(name) {
            return Some(val);
        }
        rest = next?;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first delimiter.
    Preamble,
    /// Just after a delimiter's boundary: `--` (closing) or padding and CRLF.
    AfterBoundary,
    /// In a part's header lines.
    Headers,
    /// In a body of known length: this many bytes left.
    Sized(usize),
    /// In a body that ends at the next delimiter.
    Scanning,
    /// After the closing delimiter: the epilogue, ignored.
    Done,
}

/// A streaming `multipart/*` parser: [`Parser::feed`] the body as it arrives, then
/// [`Parser::finish`].
#[derive(Debug)]
pub struct Parser {
    /// CRLF `--` boundary.
    delimiter: Vec<u8>,
    state: State,
    /// Bytes received and not yet consumed.
    buf: Vec<u8>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    max_part: usize,
    parts: usize,
}

impl Parser {
    /// A parser for parts separated by `boundary` (1 to 256 characters; RFC 2046 says
    /// at most 70, some servers send more).
    pub fn new(boundary: &str) -> Result<Self, Error> {
        if boundary.is_empty() || boundary.len() > MAX_BOUNDARY {
            return Err(Error::Multipart(format!(
                "a boundary of {} characters: 1 to {MAX_BOUNDARY} are accepted",
                boundary.len()
            )));
        }
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        Ok(Parser {
            delimiter,
            state: State::Preamble,
            // The first delimiter may open the body without a CRLF before it.
            buf: b"\r\n".to_vec(),
            headers: Vec::new(),
            body: Vec::new(),
            max_part: usize::MAX,
            parts: 0,
        })
    }

    /// A parser for a response whose Content-Type is `content_type` (`multipart/related;
    /// type="application/dicom"; boundary=...`, the boundary quoted or not).
    pub fn for_content_type(content_type: &str) -> Result<Self, Error> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        if !media.to_ascii_lowercase().starts_with("multipart/") {
            return Err(Error::Multipart(format!(
                "the response is {media:?}, not a multipart body"
            )));
        }
        let boundary = parameter(content_type, "boundary").ok_or_else(|| {
            Error::Multipart(format!("Content-Type {content_type:?} has no boundary"))
        })?;
        Self::new(&boundary)
    }

    /// Refuse parts larger than `bytes` (default: no limit).
    pub fn with_max_part(mut self, bytes: usize) -> Self {
        self.max_part = bytes;
        self
    }

    /// Parts completed so far.
    pub fn parts(&self) -> usize {
        self.parts
    }

    /// Take the next piece of the body; returns the parts it completed, in order.
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<Part>, Error> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(part) = self.step()? {
            if let Some(p) = part {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// The body has ended: an error unless the closing delimiter was seen.
    pub fn finish(self) -> Result<(), Error> {
        let at = match self.state {
            State::Done => return Ok(()),
            State::Preamble => "before its first boundary".to_string(),
            State::AfterBoundary | State::Headers => {
                format!("in the headers of part {}", self.parts + 1)
            }
            State::Sized(left) => format!(
                "in part {}, {left} bytes short of its Content-Length",
                self.parts + 1
            ),
            State::Scanning => format!(
                "in part {} after {} bytes",
                self.parts + 1,
                self.body.len() + self.buf.len()
            ),
        };
        Err(Error::Truncated(format!(
            "the multipart body ended {at}, without its closing boundary"
        )))
    }

    /// One transition. `Ok(None)`: more bytes needed; `Ok(Some(part))`: progress, with a
    /// part when one was completed.
    #[allow(clippy::option_option)]
    fn step(&mut self) -> Result<Option<Option<Part>>, Error> {
        let d = self.delimiter.len();
        match self.state {
            State::Done => {
                self.buf.clear();
                Ok(None)
            }
            State::Preamble => match memmem::find(&self.buf, &self.delimiter) {
                Some(i) => {
                    self.buf.drain(..i + d);
                    self.state = State::AfterBoundary;
                    Ok(Some(None))
                }
                None => {
                    let keep = self.buf.len().min(d - 1);
                    self.buf.drain(..self.buf.len() - keep);
                    Ok(None)
                }
            },
            State::AfterBoundary => {
                if self.buf.len() < 2 {
                    return Ok(None);
                }
                if self.buf.starts_with(b"--") {
                    self.state = State::Done;
                    self.buf.clear();
                    return Ok(Some(None));
                }
                let pad = self
                    .buf
                    .iter()
                    .take_while(|&&b| b == b' ' || b == b'\t')
                    .count();
                if self.buf.len() < pad + 2 {
                    if pad > 1024 {
                        return Err(Error::Multipart("endless padding after a boundary".into()));
                    }
                    return Ok(None);
                }
                if &self.buf[pad..pad + 2] != b"\r\n" {
                    return Err(Error::Multipart(format!(
                        "a boundary of part {} is followed by {:?}, not a line end",
                        self.parts + 1,
                        String::from_utf8_lossy(&self.buf[pad..(pad + 8).min(self.buf.len())])
                    )));
                }
                self.buf.drain(..pad + 2);
                self.state = State::Headers;
                Ok(Some(None))
            }
            State::Headers => {
                let end = if self.buf.starts_with(b"\r\n") {
                    Some((0, 2))
                } else {
                    memmem::find(&self.buf, b"\r\n\r\n").map(|i| (i, i + 4))
                };
                let Some((at, skip)) = end else {
                    if self.buf.len() > MAX_HEADERS {
                        return Err(Error::Multipart(format!(
                            "the headers of part {} exceed {MAX_HEADERS} bytes",
                            self.parts + 1
                        )));
                    }
                    return Ok(None);
                };
                let block = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..skip);
                self.headers = block
                    .split("\r\n")
                    .filter(|l| !l.is_empty())
                    .map(|l| {
                        let (n, v) = l.split_once(':').ok_or_else(|| {
                            Error::Multipart(format!(
                                "part {}: header line {l:?} has no colon",
                                self.parts + 1
                            ))
                        })?;
                        Ok((n.trim().to_ascii_lowercase(), v.trim().to_string()))
                    })
                    .collect::<Result<_, Error>>()?;
                let length = self
                    .headers
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .map(|(_, v)| {
                        v.parse::<usize>().map_err(|_| {
                            Error::Multipart(format!(
                                "part {}: Content-Length {v:?} is not a number",
                                self.parts + 1
                            ))
                        })
                    })
                    .transpose()?;
                self.body.clear();
                self.state = match length {
                    Some(n) => {
                        self.check_size(n)?;
                        // The header is the server's word, not memory to take up front:
                        // a lying length grows the body only as bytes arrive.
                        self.body.reserve(n.min(RESERVE_AT_MOST));
                        State::Sized(n)
                    }
                    None => State::Scanning,
                };
                Ok(Some(None))
            }
            State::Sized(0) => {
                if self.buf.len() < d {
                    // Not yet a whole delimiter: what is there must be its start.
                    if !self.delimiter.starts_with(&self.buf) {
                        return Err(self.not_at_boundary());
                    }
                    return Ok(None);
                }
                if !self.buf.starts_with(&self.delimiter) {
                    return Err(self.not_at_boundary());
                }
                self.buf.drain(..d);
                Ok(Some(Some(self.emit())))
            }
            State::Sized(left) => {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let n = left.min(self.buf.len());
                self.body.extend(self.buf.drain(..n));
                self.state = State::Sized(left - n);
                Ok(Some(None))
            }
            State::Scanning => match memmem::find(&self.buf, &self.delimiter) {
                Some(i) => {
                    self.check_size(self.body.len() + i)?;
                    self.body.extend(self.buf.drain(..i));
                    self.buf.drain(..d);
                    Ok(Some(Some(self.emit())))
                }
                None => {
                    let keep = self.buf.len().min(d - 1);
                    let take = self.buf.len() - keep;
                    if take == 0 {
                        return Ok(None);
                    }
                    self.check_size(self.body.len() + take)?;
                    self.body.extend(self.buf.drain(..take));
                    Ok(None)
                }
            },
        }
    }

    fn check_size(&self, n: usize) -> Result<(), Error> {
        if n > self.max_part {
            return Err(Error::Multipart(format!(
                "part {} is larger than {} bytes",
                self.parts + 1,
                self.max_part
            )));
        }
        Ok(())
    }

    fn not_at_boundary(&self) -> Error {
        Error::Multipart(format!(
            "part {} does not end at a boundary after its Content-Length",
            self.parts + 1
        ))
    }

    fn emit(&mut self) -> Part {
        self.parts += 1;
        self.state = State::AfterBoundary;
        Part {
            headers: std::mem::take(&mut self.headers),
            body: std::mem::take(&mut self.body),
        }
    }
}

/// A `multipart/related` body of `parts` (`(content type, bytes)`) with `boundary`, as
/// a STOW-RS request sends it: each part with its Content-Type, then the closing
/// delimiter. The boundary must not occur in any part ([`boundary_for`] picks one).
pub fn write(boundary: &str, parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|(_, b)| b.len() + 128).sum());
    for (ct, body) in parts {
        out.extend_from_slice(&part_head(boundary, ct));
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&close(boundary));
    out
}

/// What goes before a part's body (a streaming writer sends it, the body, then `\r\n`).
pub fn part_head(boundary: &str, content_type: &str) -> Vec<u8> {
    format!("--{boundary}\r\nContent-Type: {content_type}\r\n\r\n").into_bytes()
}

/// The close delimiter, after the last part.
pub fn close(boundary: &str) -> Vec<u8> {
    format!("--{boundary}--\r\n").into_bytes()
}

/// Whether `body` may be a part under `boundary` (the boundary does not occur in it).
pub fn fits(boundary: &str, body: &[u8]) -> bool {
    memmem::find(body, boundary.as_bytes()).is_none()
}

/// A boundary that occurs in none of `bodies`: `medfm-` and random hex.
pub fn boundary_for(bodies: &[&[u8]]) -> Result<String, Error> {
    for _ in 0..16 {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b)
            .map_err(|e| Error::Multipart(format!("no randomness for a boundary: {e}")))?;
        let boundary = format!("medfm-{}", hex(&b));
        if bodies.iter().all(|body| fits(&boundary, body)) {
            return Ok(boundary);
        }
    }
    Err(Error::Multipart(
        "no boundary found that is absent from the parts".into(),
    ))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
