//! How the service meets the network: every accepted connection sends small writes at once,
//! has a bounded send buffer, and has hyper's own bare error answers (a malformed request, a
//! URI or headers too long) rewritten as problem documents, like every other error.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Each connection's kernel send buffer: a large snapshot or two.
pub const SEND_BUFFER: usize = 64 << 10;

/// The service's listener.
pub struct Listener(TcpListener);

impl Listener {
    pub fn new(tcp: TcpListener) -> Self {
        Self(tcp)
    }
}

impl axum::serve::Listener for Listener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        loop {
            match self.0.accept().await {
                Ok((tcp, address)) => return (Connection::new(tcp), address),
                // The client gave up before we got to it: nothing to do.
                Err(error) if is_connection_error(&error) => {}
                // Out of file descriptors, say: wait rather than spin.
                Err(error) => {
                    tracing::error!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The client's address, as requests see it (`ConnectInfo<ClientAddress>`).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub SocketAddr);

impl Connected<IncomingStream<'_, Listener>> for ClientAddress {
    fn connect_info(stream: IncomingStream<'_, Listener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// An accepted connection.
pub struct Connection {
    tcp: TcpStream,
    /// A problem document being written in place of hyper's bare answer, and how many of
    /// hyper's bytes it stands for.
    replacing: Option<(Vec<u8>, usize)>,
}

impl Connection {
    fn new(tcp: TcpStream) -> Self {
        // Stream events and small answers go out at once, not when Nagle's algorithm allows.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::warn!(%error, "could not set TCP_NODELAY");
        }
        // Left to itself, the kernel grows a connection's send buffer up to tcp_wmem's maximum
        // (4 MiB by default) even when the peer reads nothing, and the fan-out copies every new
        // snapshot into it: 2,000 stalled stream subscribers would hold 8 GiB of kernel memory.
        if let Err(error) = socket2::SockRef::from(&tcp).set_send_buffer_size(SEND_BUFFER) {
            tracing::warn!(%error, "could not set SO_SNDBUF");
        }
        Self { tcp, replacing: None }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_none()
            && let Some(problem) = bufs.first().and_then(|head| problem_for(head))
        {
            this.replacing = Some((problem, bufs.iter().map(|buf| buf.len()).sum()));
        }
        let Some((problem, stands_for)) = &mut this.replacing else {
            return Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        };
        while !problem.is_empty() {
            let written = ready!(Pin::new(&mut this.tcp).poll_write(cx, problem))?;
            problem.drain(..written);
        }
        let stands_for = *stands_for;
        this.replacing = None;
        Poll::Ready(Ok(stands_for))
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// For hyper's own answer to a request it could not read (no body, no content type, and one of
/// these statuses), the same status as a problem document; the connection closes after it.
fn problem_for(head: &[u8]) -> Option<Vec<u8>> {
    let (status, title, detail) = match head.get(..13)? {
        b"HTTP/1.1 400 " => (400, "Bad request", "the request is not well-formed HTTP/1.1"),
        b"HTTP/1.1 414 " => (414, "URI too long", "the request's URI is over 64 KiB"),
        b"HTTP/1.1 431 " => (
            431,
            "Request header fields too large",
            "the request has over 100 headers, or they are over 64 KiB",
        ),
        _ => return None,
    };
    let end = head.windows(4).position(|window| window == b"\r\n\r\n")?;
    let headers = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
    if headers.contains("\r\ncontent-type:") || !headers.contains("\r\ncontent-length: 0") {
        return None;
    }
    let body = serde_json::json!({"type": "about:blank", "title": title, "status": status, "detail": detail})
        .to_string();
    let answer = format!(
        "HTTP/1.1 {status} {title}\r\ncontent-type: application/problem+json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    Some(answer.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bare_error_answers_are_rewritten() {
        let bare = b"HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let rewritten = String::from_utf8(problem_for(bare).unwrap()).unwrap();
        assert!(
            rewritten
                .starts_with("HTTP/1.1 414 URI too long\r\ncontent-type: application/problem+json")
        );
        let body = rewritten.split("\r\n\r\n").nth(1).unwrap();
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["status"], 414);
        assert!(rewritten.contains(&format!("content-length: {}\r\n", body.len())));
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 80\r\n\r\n";
        assert_eq!(problem_for(ours), None, "the service's own problems pass as they are");
        assert_eq!(problem_for(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"), None);
        assert_eq!(problem_for(b"HTTP/1.1 304 Not Modified\r\n\r\n"), None);
    }
}
