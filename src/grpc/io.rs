//! The gRPC server's connections: TCP streams that tell HTTP/2 they take no vectored writes.
//!
//! h2 keeps a data frame of 256 bytes or more out of its write buffer when the connection
//! writes vectored, and then must write it out before it can buffer the next frame (the
//! response's trailers, other streams' frames): every response of that size costs its own
//! `writev`. Without vectored writes the bound is 1 KiB, so a typical entity is copied into the
//! buffer and the responses of many streams leave in one write, as Health/Check's do. `bench
//! lookup` measured GetUser at ~1.8 `writev` per call before and the server's CPU per call with
//! it (BENCHMARKS.md, #24).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A TCP stream whose writes are never vectored.
pub struct Unvectored(pub TcpStream);

impl Connected for Unvectored {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.connect_info()
    }
}

impl AsyncRead for Unvectored {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Unvectored {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}
