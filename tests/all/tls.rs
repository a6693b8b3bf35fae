//! TLS and mutual TLS with a real rustls client and certificates made at run time (rcgen):
//! requests over TLS, plain HTTP to a TLS port refused cleanly, certificate renewal without a
//! restart, client certificates on every listener or only on the admin listener, and bad
//! certificate files refused before binding.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use edgeinfer_server::security::tls::{ClientAuthScope, TlsSettings};
use edgeinfer_server::{ModelRegistry, ServerConfig};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::common::*;
use crate::http::*;
use crate::server::{TestServer, digits_request};

/// A certificate authority made for one test.
struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Authority { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA") }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names` and its key, both PEM.
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes the server's certificate files into `dir` and returns the settings.
fn server_files(
    dir: &Path,
    authority: &Authority,
    client_ca: Option<&Authority>,
    scope: ClientAuthScope,
) -> TlsSettings {
    let (cert, key) = authority.leaf(&["localhost", "127.0.0.1"]);
    std::fs::write(dir.join("server.pem"), cert).expect("cert");
    std::fs::write(dir.join("server.key"), key).expect("key");
    let client_ca = client_ca.map(|ca| {
        std::fs::write(dir.join("clients-ca.pem"), ca.pem()).expect("ca");
        dir.join("clients-ca.pem")
    });
    TlsSettings { cert: dir.join("server.pem"), key: dir.join("server.key"), client_ca, client_auth: scope }
}

/// A TLS client trusting `ca`, presenting `identity` (certificate and key PEM) if given.
fn client(ca: &Authority, identity: Option<&(String, String)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).expect("ca pem")).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert")],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
            )
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// One request over TLS; an error when the handshake or the exchange fails.
fn tls_request(addr: SocketAddr, config: &Arc<rustls::ClientConfig>, raw: &[u8]) -> Result<Reply, String> {
    let name = ServerName::try_from("localhost").expect("name");
    let connection = rustls::ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(20))).map_err(|e| e.to_string())?;
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    stream.write_all(raw).map_err(|e| e.to_string())?;
    let mut buffer = Vec::new();
    match stream.read_to_end(&mut buffer) {
        Ok(_) => {}
        // Servers may close without close_notify after `Connection: close`.
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof && !buffer.is_empty() => {}
        Err(error) => return Err(error.to_string()),
    }
    if buffer.is_empty() {
        return Err("no answer".into());
    }
    Ok(parse_reply(buffer))
}

fn health() -> Vec<u8> {
    build("GET", "/v2/health/ready", &[], b"")
}

fn tls_server(settings: TlsSettings, admin_listen: bool) -> TestServer {
    let admin_listen = admin_listen.then(|| "127.0.0.1:0".parse().expect("addr"));
    TestServer::start(&fixtures().repo, ServerConfig { tls: Some(settings), admin_listen, ..ServerConfig::default() })
}

#[test]
fn requests_over_tls_work_and_plain_http_is_refused_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let authority = Authority::new("edgeinfer test CA");
    let server = tls_server(server_files(dir.path(), &authority, None, ClientAuthScope::All), false);
    let trusting = client(&authority, None);
    let reply = tls_request(server.addr, &trusting, &health()).expect("TLS");
    assert_eq!(reply.status, 200);
    let body = digits_request(1).to_string();
    let reply = tls_request(server.addr, &trusting, &build("POST", "/v2/models/digits/infer", &[], body.as_bytes()))
        .expect("TLS");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["model_name"], "digits");

    // Plain HTTP to the TLS port: no HTTP answer, the connection is closed, the server stays up.
    let mut plain = TcpStream::connect(server.addr).expect("connect");
    plain.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    plain.write_all(&health()).expect("write");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "plain HTTP was served over the TLS port");
    // A client that does not trust the certificate fails its handshake.
    let stranger = client(&Authority::new("someone else"), None);
    assert!(tls_request(server.addr, &stranger, &health()).is_err());
    assert_eq!(tls_request(server.addr, &trusting, &health()).expect("still up").status, 200);

    // And curl, where it is installed.
    std::fs::write(dir.path().join("ca.pem"), authority.pem()).expect("ca");
    if std::process::Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let out = std::process::Command::new("curl")
            .args(["-s", "--noproxy", "*", "--cacert"])
            .arg(dir.path().join("ca.pem"))
            .arg(format!("https://localhost:{}/v2/health/live", server.addr.port()))
            .output()
            .expect("curl");
        assert!(String::from_utf8_lossy(&out.stdout).contains("live"), "curl: {out:?}");
    } else {
        eprintln!("curl not installed: checked with the rustls client only");
    }
}

#[test]
fn a_renewed_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = Authority::new("old CA");
    let server = tls_server(server_files(dir.path(), &old, None, ClientAuthScope::All), false);
    let trusts_old = client(&old, None);
    assert_eq!(tls_request(server.addr, &trusts_old, &health()).expect("old").status, 200);
    // A keep-alive connection opened before the renewal...
    let name = ServerName::try_from("localhost").expect("name");
    let tcp = TcpStream::connect(server.addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut open = rustls::StreamOwned::new(rustls::ClientConnection::new(trusts_old.clone(), name).expect("tls"), tcp);
    let keep_alive = b"GET /v2/health/live HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let read_one = |stream: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>| {
        stream.write_all(keep_alive).expect("send");
        let mut buffer = vec![0u8; 4096];
        let n = stream.read(&mut buffer).expect("answer");
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    };
    assert!(read_one(&mut open).starts_with("HTTP/1.1 200"));
    let new = Authority::new("new CA");
    let staging = tempfile::tempdir_in(dir.path()).expect("staging");
    let settings = server_files(staging.path(), &new, None, ClientAuthScope::All);
    std::fs::rename(&settings.key, dir.path().join("server.key")).expect("key");
    std::fs::rename(&settings.cert, dir.path().join("server.pem")).expect("cert");
    let trusts_new = client(&new, None);
    wait_until("the new certificate served", Duration::from_secs(5), || {
        tls_request(server.addr, &trusts_new, &health()).is_ok()
    });
    assert!(tls_request(server.addr, &trusts_old, &health()).is_err(), "the old certificate is gone");
    // ...keeps working on its session after it.
    assert!(read_one(&mut open).starts_with("HTTP/1.1 200"), "the open connection survived the renewal");
    // A broken renewal keeps the last good certificate.
    let refused_reloads = || server.server_view()["reloads"]["tls"]["refused"].as_u64().expect("refused");
    std::fs::write(dir.path().join("server.pem"), "not a certificate").expect("garbage");
    // Each new connection looks at the files (at most twice a second): wait for the refusal.
    wait_until("the broken certificate refused", Duration::from_secs(5), || {
        let _ = tls_request(server.addr, &trusts_new, &health());
        refused_reloads() == 1
    });
    assert_eq!(tls_request(server.addr, &trusts_new, &health()).expect("last good").status, 200);
}

#[test]
fn mutual_tls_on_every_listener_or_only_on_the_admin_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let authority = Authority::new("server CA");
    let clients = Authority::new("clients CA");
    let identity = clients.leaf(&["ops"]);
    let forged = Authority::new("forger").leaf(&["ops"]);
    let with_cert = client(&authority, Some(&identity));
    let without = client(&authority, None);
    let with_forged = client(&authority, Some(&forged));

    let everywhere = tls_server(server_files(dir.path(), &authority, Some(&clients), ClientAuthScope::All), false);
    assert_eq!(tls_request(everywhere.addr, &with_cert, &health()).expect("mTLS").status, 200);
    assert!(tls_request(everywhere.addr, &without, &health()).is_err(), "no client certificate");
    assert!(tls_request(everywhere.addr, &with_forged, &health()).is_err(), "a certificate from another CA");
    drop(everywhere);

    let dir = tempfile::tempdir().expect("tempdir");
    let admin_only = tls_server(server_files(dir.path(), &authority, Some(&clients), ClientAuthScope::Admin), true);
    let admin = admin_only.admin_addr.expect("admin listener");
    let traffic = build("GET", "/v2/admin/models/digits/traffic", &[], b"");
    assert_eq!(tls_request(admin_only.addr, &without, &health()).expect("public TLS").status, 200);
    let hidden = tls_request(admin_only.addr, &without, &traffic).expect("public TLS");
    assert_eq!(hidden.status, 404, "the admin API is not on the main listener");
    assert!(tls_request(admin, &without, &traffic).is_err(), "the admin listener needs a client certificate");
    let reply = tls_request(admin, &with_cert, &traffic).expect("admin mTLS");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let infer = build("POST", "/v2/models/digits/infer", &[], digits_request(1).to_string().as_bytes());
    assert_eq!(tls_request(admin, &with_cert, &infer).expect("admin mTLS").status, 404, "only admin there");
}

#[test]
fn bad_certificate_files_are_refused_before_binding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let authority = Authority::new("CA");
    let good = server_files(dir.path(), &authority, None, ClientAuthScope::All);
    let (_, other_key) = authority.leaf(&["localhost"]);
    std::fs::write(dir.path().join("other.key"), other_key).expect("key");
    let start = |tls: TlsSettings| {
        let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
        let repo = edgeinfer_runtime::ModelRepository::open(&fixtures().repo).expect("repo");
        let registry = Arc::new(ModelRegistry::new(runtime(), repo));
        let config = ServerConfig {
            tls: Some(tls),
            watch: false,
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..ServerConfig::default()
        };
        tokio.block_on(edgeinfer_server::start(registry, config)).err().map(|e| e.to_string())
    };
    let missing = start(TlsSettings { cert: dir.path().join("nope.pem"), ..good.clone() }).expect("refused");
    assert!(missing.contains("nope.pem"), "{missing}");
    let mismatched = start(TlsSettings { key: dir.path().join("other.key"), ..good.clone() }).expect("refused");
    assert!(mismatched.contains("other.key") && mismatched.contains("does not match"), "{mismatched}");
    std::fs::write(dir.path().join("empty.pem"), "").expect("empty");
    let empty = start(TlsSettings { cert: dir.path().join("empty.pem"), ..good }).expect("refused");
    assert!(empty.contains("empty.pem") && empty.contains("no certificate"), "{empty}");
}

/// The gRPC listener serves TLS with the same certificate (HTTP/2 negotiated): Python's gRPC
/// client trusting the CA gets answers; a plaintext gRPC client and one trusting another CA
/// get none, and the listener keeps serving.
#[test]
fn grpc_is_served_over_tls_with_the_same_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let authority = Authority::new("edgeinfer test CA");
    let settings = server_files(dir.path(), &authority, None, ClientAuthScope::All);
    let server = TestServer::start(
        &fixtures().repo,
        ServerConfig {
            tls: Some(settings),
            grpc_listen: Some("127.0.0.1:0".parse().expect("addr")),
            ..ServerConfig::default()
        },
    );
    let grpc = server.grpc_addr.expect("gRPC listens");
    std::fs::write(dir.path().join("ca.pem"), authority.pem()).expect("ca");
    std::fs::write(dir.path().join("other.pem"), Authority::new("someone else").pem()).expect("other ca");
    let script = r#"
import sys, grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
addr, ca, other = sys.argv[1:4]
def stub(channel):
    return service_pb2_grpc.GRPCInferenceServiceStub(channel)
def secure(pem):
    creds = grpc.ssl_channel_credentials(open(pem, "rb").read())
    return grpc.secure_channel(addr, creds, options=[("grpc.ssl_target_name_override", "localhost")])
def refused(channel):
    try:
        stub(channel).ServerLive(service_pb2.ServerLiveRequest(), timeout=5)
    except grpc.RpcError as error:
        return error.code() == grpc.StatusCode.UNAVAILABLE
    return False
trusted = stub(secure(ca))
assert trusted.ServerLive(service_pb2.ServerLiveRequest(), timeout=10).live
request = service_pb2.ModelInferRequest(model_name="digits")
request.inputs.add(name="X", datatype="FP32", shape=[1, 64]).contents.fp32_contents.extend([0.25] * 64)
answer = trusted.ModelInfer(request, timeout=10)
assert answer.model_name == "digits" and len(answer.raw_output_contents) == 2, answer
assert refused(grpc.insecure_channel(addr)), "plaintext gRPC was answered"
assert refused(secure(other)), "a client trusting another CA was answered"
assert trusted.ServerLive(service_pb2.ServerLiveRequest(), timeout=10).live
print("ok")
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(grpc.to_string())
        .arg(dir.path().join("ca.pem"))
        .arg(dir.path().join("other.pem"))
        .output()
        .expect("python3 with tests/python/requirements.txt");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("ok"), "{text}");
}
