//! Integration test: TLS (rustls, through `tokio-rustls`) over a ringio
//! TCP stream, via the tokio-io traits on `io::Compat` (feature
//! `tokio-io`), against a real ring. The certificate is self-signed and
//! made here.

mod common;
use common::*;

use std::sync::Arc;

use ringio::io::Compat;
use ringio::net::{TcpListener, TcpStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName,
};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig, crypto};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A server config for "localhost" and a client config that trusts only
/// its self-signed certificate.
fn configs() -> (ServerConfig, ClientConfig) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
    let provider = Arc::new(crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (server, client)
}

/// A TLS handshake, a request and a large reply, and close_notify, over
/// loopback TCP; the client verifies the server's certificate.
#[test]
fn tls_round_trip_over_a_ringio_stream() {
    let (server_cfg, client_cfg) = configs();
    let reply = pattern(3, 1 << 20);
    let expected = reply.clone();
    block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(server_cfg));
        let server = ringio::create_task(async move {
            let (stream, _) = listener.accept().await?;
            let mut tls = acceptor.accept(Compat::new(stream)).await?;
            let mut req = [0u8; 5];
            tls.read_exact(&mut req).await?;
            assert_eq!(&req, b"hello");
            tls.write_all(&reply).await?;
            // close_notify, then the TCP write half.
            tls.shutdown().await?;
            Ok::<_, ringio::Error>(())
        });

        let connector = TlsConnector::from(Arc::new(client_cfg));
        let stream = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, Compat::new(stream)).await?;
        tls.write_all(b"hello").await?;
        tls.flush().await?;
        let mut got = Vec::new();
        tls.read_to_end(&mut got).await?;
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "decrypted reply differs");
        let (_, conn) = tls.get_ref();
        assert!(conn.protocol_version().is_some());
        server.await?;
        Ok::<_, ringio::Error>(())
    })
    .unwrap();
}

/// A client that trusts another certificate refuses the server: the
/// verification really happens.
#[test]
fn tls_client_rejects_an_unknown_certificate() {
    let (server_cfg, _) = configs();
    let (_, other_client) = configs();
    block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(server_cfg));
        let server = ringio::create_task(async move {
            let (stream, _) = listener.accept().await?;
            // The client aborts the handshake: an error here.
            Ok::<_, ringio::Error>(acceptor.accept(Compat::new(stream)).await.is_err())
        });
        let connector = TlsConnector::from(Arc::new(other_client));
        let stream = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").unwrap();
        let r = connector.connect(name, Compat::new(stream)).await;
        let Err(e) = r else {
            panic!("the handshake must fail");
        };
        assert!(e.to_string().contains("certificate"), "{e}");
        assert!(server.await?);
        Ok::<_, ringio::Error>(())
    })
    .unwrap();
}
