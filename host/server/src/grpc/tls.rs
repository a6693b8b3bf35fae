//! TLS for the gRPC listener: connections accepted and handshaken with the server's `[tls]`
//! settings (the main listener's certificate and client authentication, followed when the
//! files change, with HTTP/2 negotiated), handed to tonic as a stream.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::super::security::tls::TlsReloader;

/// How long a client gets to finish its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// One handshaken TLS connection.
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    info: TcpConnectInfo,
}

impl Connected for TlsConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Accepts on `listener` and hands over each connection whose TLS handshake succeeds (a
/// failed or slow handshake only ends that connection), until the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<TlsReloader>,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<TlsConnection>> {
    let (connections, stream) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "gRPC accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                () = connections.closed() => return,
            };
            let (acceptor, connections) = (tls.grpc_acceptor(), connections.clone());
            let local = tcp.local_addr().ok();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let info = TcpConnectInfo { local_addr: local, remote_addr: Some::<SocketAddr>(remote) };
                        let _ = connections.send(Ok(TlsConnection { stream, info })).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%error, %remote, "gRPC TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "gRPC TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(stream)
}
