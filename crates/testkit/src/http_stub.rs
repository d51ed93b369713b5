//! A loopback HTTP/1.1 stub server: it reads each request (request line, headers, a body of
//! `content-length` bytes), waits a set delay, records the request and answers `200 OK` with
//! a fixed body. Keep-alive connections are served one request after another, each
//! connection on its own thread; a malformed request closes its connection. The accept
//! thread lives as long as the process.
//!
//! A request is recorded before its answer is written, so a client that has the answer
//! always finds its request in [`HttpStub::received`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// One request as the stub read it.
#[derive(Debug, Clone)]
pub struct StubRequest {
    /// The method, e.g. `POST`.
    pub method: String,
    /// The request target as sent, e.g. `/v1/traces`.
    pub path: String,
    /// The header lines, names as sent and in order; values without surrounding blanks.
    pub headers: Vec<(String, String)>,
    /// The body (`content-length` bytes; none without that header).
    pub body: Vec<u8>,
    /// When its head had been read.
    pub started: Instant,
    /// When the stub was about to answer it (after the delay).
    pub answered: Instant,
}

impl StubRequest {
    /// The values of every header named `name` (in any case), in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }
}

/// The stub server; see the [module](self) documentation.
#[derive(Debug)]
pub struct HttpStub {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<StubRequest>>>,
}

impl HttpStub {
    /// Starts one on a free loopback port that answers every request, `delay` after reading
    /// it, with `200 OK`, this `content-type` and `body`.
    pub fn start(delay: Duration, content_type: &str, body: &[u8]) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let mut answer =
            format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n", body.len())
                .into_bytes();
        answer.extend_from_slice(body);
        let answer: Arc<[u8]> = answer.into();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&received);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (sink, answer) = (Arc::clone(&sink), Arc::clone(&answer));
                std::thread::spawn(move || serve(stream, &sink, &answer, delay));
            }
        });
        Ok(Self { addr, received })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, without a trailing slash (an OTLP endpoint).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://ADDR/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    /// The requests answered so far (or being answered), oldest first.
    pub fn received(&self) -> Vec<StubRequest> {
        lock(&self.received).clone()
    }

    /// Takes the requests answered so far, oldest first: the next call starts afresh.
    pub fn take(&self) -> Vec<StubRequest> {
        std::mem::take(&mut *lock(&self.received))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A request's head: the request line's method and target, and the header lines.
struct Head {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

/// The next request's head; `None` at the end of the connection or on a malformed head.
fn read_head(reader: &mut impl BufRead) -> Option<Head> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut words = line.split_whitespace();
    let (method, path) = (words.next()?.to_owned(), words.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            return Some(Head { method, path, headers });
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.to_owned(), v.trim_matches([' ', '\t']).to_owned()));
    }
}

fn serve(stream: TcpStream, sink: &Mutex<Vec<StubRequest>>, answer: &[u8], delay: Duration) {
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    while let Some(Head { method, path, headers }) = read_head(&mut reader) {
        let started = Instant::now();
        let length = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length")).map(|(_, v)| v.parse());
        let Ok(length) = length.unwrap_or(Ok(0)) else { return };
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        std::thread::sleep(delay);
        let answered = Instant::now();
        lock(sink).push(StubRequest { method, path, headers, body, started, answered });
        if writer.write_all(answer).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HttpStub;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    /// Reads one answer of the stub (its body is `ok`) from `s`.
    fn read_answer(s: &mut TcpStream) -> String {
        let mut buf = Vec::new();
        let mut byte = [0u8];
        while !buf.ends_with(b"\r\n\r\nok") {
            s.read_exact(&mut byte).unwrap();
            buf.push(byte[0]);
        }
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn requests_on_one_connection_are_recorded_in_order_and_answered() {
        let stub = HttpStub::start(Duration::ZERO, "text/plain", b"ok").unwrap();
        let mut s = TcpStream::connect(stub.addr()).unwrap();
        s.write_all(b"POST /a HTTP/1.1\r\nHost: x\r\nX-Two: 1\r\nx-two:  2 \r\nContent-Length: 5\r\n\r\nhello")
            .unwrap();
        let answer = read_answer(&mut s);
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("content-type: text/plain\r\n") && answer.contains("content-length: 2\r\n"));
        // The first request is recorded by the time its answer arrives.
        assert_eq!(stub.received().len(), 1);
        s.write_all(b"GET /b HTTP/1.1\r\n\r\n").unwrap();
        read_answer(&mut s);

        let got = stub.take();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].method.as_str(), got[0].path.as_str(), got[0].body.as_slice()),
            ("POST", "/a", &b"hello"[..])
        );
        assert_eq!(got[0].header_values("x-two"), ["1", "2"]);
        assert_eq!(got[0].headers[0], ("Host".to_owned(), "x".to_owned()));
        assert_eq!((got[1].method.as_str(), got[1].path.as_str(), got[1].body.len()), ("GET", "/b", 0));
        assert!(got[0].started <= got[0].answered && got[0].answered <= got[1].started);
        assert!(stub.take().is_empty(), "take starts afresh");
        assert_eq!(stub.url("x"), format!("{}/x", stub.base_url()));
    }

    #[test]
    fn a_malformed_content_length_closes_the_connection_unanswered() {
        let stub = HttpStub::start(Duration::ZERO, "text/plain", b"ok").unwrap();
        let mut s = TcpStream::connect(stub.addr()).unwrap();
        s.write_all(b"POST / HTTP/1.1\r\ncontent-length: many\r\n\r\n").unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        assert!(stub.received().is_empty());
    }
}
