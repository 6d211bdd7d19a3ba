//! Node identities, trust files and mutual TLS 1.3 over real TCP on
//! 127.0.0.1: who is admitted, who is refused, and what each side learns.
#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use meshwire::security::tls::{self, rustls, ClientTlsStream, ServerTlsStream};
use meshwire::security::{
    node_id_of, node_name, Authority, HandshakeError, Identity, NodeId, Refusal, SecurityError,
    Trust,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The handshake timeout in these tests; every wait is bounded by it.
const HANDSHAKE: Duration = Duration::from_secs(5);
/// A bound on anything else a test waits for.
const BOUND: Duration = Duration::from_secs(10);

type ServerSide = Result<(ServerTlsStream<tls::Rewound<TcpStream>>, NodeId), HandshakeError>;
type ClientSide = Result<(ClientTlsStream<TcpStream>, NodeId), HandshakeError>;

fn trusting(ids: &[&Identity]) -> Trust {
    Trust::default().with_nodes(ids.iter().map(|i| i.node_id()))
}

async fn listener() -> (TcpListener, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Runs one handshake between a server and a client configuration over a
/// fresh loopback connection; returns what each side got.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
) -> (ServerSide, ClientSide) {
    let (listener, addr) = listener().await;
    let accepting = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        tls::accept(&server, tcp, HANDSHAKE).await
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let client_side = tls::connect(&client, tcp, HANDSHAKE).await;
    let server_side = tokio::time::timeout(BOUND, accepting)
        .await
        .unwrap()
        .unwrap();
    (server_side, client_side)
}

/// What the client sees after a server refused it: TLS 1.3 lets the client
/// finish its side first, so the refusal comes as an alert on the first
/// read (or, if the alert is lost, as the connection closing).
async fn assert_client_was_refused(client: ClientSide) {
    let (mut stream, _) = match client {
        Ok(s) => s,
        Err(e) => {
            assert!(
                matches!(e, HandshakeError::RefusedByPeer(_) | HandshakeError::Io(_)),
                "{e}"
            );
            return;
        }
    };
    let mut buf = [0u8; 64];
    match tokio::time::timeout(BOUND, stream.read(&mut buf))
        .await
        .unwrap()
    {
        Ok(0) => {}
        Ok(n) => panic!("a refused client read {n} bytes"),
        Err(e) => {
            let tls = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
            assert!(
                matches!(tls, Some(rustls::Error::AlertReceived(_))) || tls.is_none(),
                "unexpected error {e}"
            );
        }
    }
}

#[tokio::test]
async fn trusted_nodes_complete_mutual_tls_and_exchange_bytes() {
    let a = Identity::generate().unwrap();
    let b = Identity::generate().unwrap();
    let server = tls::server_config(&a, &trusting(&[&b])).unwrap();
    let client = tls::client_config(&b, &trusting(&[&a]), Some(a.node_id())).unwrap();
    let (server_side, client_side) = handshake(server, client).await;
    let (mut s, client_id) = server_side.unwrap();
    let (mut c, server_id) = client_side.unwrap();
    assert_eq!(client_id, b.node_id(), "the server learns the client's id");
    assert_eq!(server_id, a.node_id(), "the client learns the server's id");
    assert_eq!(
        c.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );

    c.write_all(b"ping from b").await.unwrap();
    c.flush().await.unwrap();
    let mut buf = [0u8; 11];
    tokio::time::timeout(BOUND, s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping from b");
    s.write_all(b"pong").await.unwrap();
    s.flush().await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(BOUND, c.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"pong");
}

#[tokio::test]
async fn any_admitted_server_is_accepted_without_an_expected_id() {
    let a = Identity::generate().unwrap();
    let b = Identity::generate().unwrap();
    let server = tls::server_config(&a, &trusting(&[&b])).unwrap();
    let client = tls::client_config(&b, &trusting(&[&a]), None).unwrap();
    let (server_side, client_side) = handshake(server, client).await;
    assert_eq!(server_side.unwrap().1, b.node_id());
    assert_eq!(client_side.unwrap().1, a.node_id());
}

#[tokio::test]
async fn default_trust_admits_only_the_own_key() {
    // Two processes sharing one key (a node and a CLI tool run with --key).
    let a = Identity::generate().unwrap();
    let server = tls::server_config(&a, &Trust::default()).unwrap();
    let client = tls::client_config(&a, &Trust::default(), None).unwrap();
    let (server_side, client_side) = handshake(server.clone(), client).await;
    assert_eq!(server_side.unwrap().1, a.node_id());
    assert_eq!(client_side.unwrap().1, a.node_id());

    let stranger = Identity::generate().unwrap();
    let client = tls::client_config(&stranger, &trusting(&[&a]), None).unwrap();
    let (server_side, _) = handshake(server, client).await;
    assert_eq!(server_side.unwrap_err().peer(), Some(stranger.node_id()));
}

#[tokio::test]
async fn an_unknown_client_key_is_refused_and_named() {
    let a = Identity::generate().unwrap();
    let friend = Identity::generate().unwrap();
    let stranger = Identity::generate().unwrap();
    let server = tls::server_config(&a, &trusting(&[&friend])).unwrap();
    let client = tls::client_config(&stranger, &trusting(&[&a]), Some(a.node_id())).unwrap();
    let (server_side, client_side) = handshake(server, client).await;

    let err = server_side.unwrap_err();
    match &err {
        HandshakeError::Refused(Refusal::NotTrusted { node }) => {
            assert_eq!(*node, stranger.node_id())
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.peer(), Some(stranger.node_id()));
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(text.contains(&stranger.node_id().to_string()), "{text}");
    assert!(
        text.contains("--trust"),
        "the message says what to do: {text}"
    );
    assert_client_was_refused(client_side).await;
}

#[tokio::test]
async fn an_unknown_server_key_is_refused_by_the_client() {
    let a = Identity::generate().unwrap();
    let b = Identity::generate().unwrap();
    let impostor = Identity::generate().unwrap();
    let server = tls::server_config(&impostor, &trusting(&[&b])).unwrap();
    let client = tls::client_config(&b, &trusting(&[&a]), None).unwrap();
    let (server_side, client_side) = handshake(server, client).await;
    match client_side.unwrap_err() {
        HandshakeError::Refused(Refusal::NotTrusted { node }) => {
            assert_eq!(node, impostor.node_id())
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        matches!(server_side.unwrap_err(), HandshakeError::RefusedByPeer(_)),
        "the server hears the client's alert"
    );
}

#[tokio::test]
async fn a_key_that_is_not_the_expected_node_is_refused() {
    let a = Identity::generate().unwrap();
    let b = Identity::generate().unwrap();
    let c = Identity::generate().unwrap();
    // `a` answers, is trusted, but the client dialled `c`.
    let server = tls::server_config(&a, &trusting(&[&b])).unwrap();
    let client = tls::client_config(&b, &trusting(&[&a, &c]), Some(c.node_id())).unwrap();
    let (_, client_side) = handshake(server, client).await;
    let err = client_side.unwrap_err();
    match &err {
        HandshakeError::Refused(Refusal::WrongNode {
            expected,
            presented,
        }) => {
            assert_eq!(*expected, c.node_id());
            assert_eq!(*presented, a.node_id());
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.peer(), Some(a.node_id()));
}

/// Sends `bytes` in clear to a TLS server; returns what the server's
/// accept said and what the client read before the connection closed.
async fn plaintext_client(bytes: &[u8]) -> (HandshakeError, Vec<u8>) {
    let a = Identity::generate().unwrap();
    let server = tls::server_config(&a, &Trust::default()).unwrap();
    let (listener, addr) = listener().await;
    let accepting = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        tls::accept(&server, tcp, HANDSHAKE).await.map(|(_, id)| id)
    });
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let err = tokio::time::timeout(BOUND, accepting)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    let mut seen = Vec::new();
    // A reset is as good as a close here; the timeout is what would fail.
    let _ = tokio::time::timeout(BOUND, tcp.read_to_end(&mut seen))
        .await
        .unwrap();
    (err, seen)
}

#[tokio::test]
async fn a_plaintext_meshwire_client_is_refused_with_a_clear_error_on_both_sides() {
    use meshwire::proto::wire::{CloseCode, Decoder, Frame, Limits};
    // The opening of a plaintext MWIR Hello frame: length, type, magic.
    let mut hello = vec![0, 0, 0, 40, 0x01];
    hello.extend_from_slice(b"MWIR");
    hello.extend_from_slice(&[0; 36]);
    let (err, seen) = plaintext_client(&hello).await;
    assert!(matches!(err, HandshakeError::NotTls(_)), "{err:?}");
    assert!(err.to_string().contains("--insecure"), "{err}");
    // The client is told in its own framing: a Close saying TLS is needed.
    let mut buf = bytes::BytesMut::from(&seen[..]);
    match Decoder::new(Limits::default()).decode(&mut buf) {
        Ok(Some(Frame::Close(c))) => {
            assert_eq!(c.code, CloseCode::Refused);
            assert!(c.reason.contains("requires TLS"), "{}", c.reason);
        }
        other => panic!("expected a Close frame, got {other:?} from {seen:?}"),
    }
}

#[tokio::test]
async fn an_http_client_is_refused_without_an_answer() {
    let (err, seen) = plaintext_client(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(matches!(err, HandshakeError::NotTls(_)), "{err:?}");
    assert!(err.to_string().contains("GET"), "{err}");
    assert!(seen.is_empty(), "{seen:?}");
}

#[tokio::test]
async fn a_tls12_only_client_is_refused() {
    let a = Identity::generate().unwrap();
    let server = tls::server_config(&a, &Trust::default()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let (server_side, client_side) = handshake(server, Arc::new(client)).await;
    match server_side.unwrap_err() {
        HandshakeError::Tls(rustls::Error::PeerIncompatible(_)) => {}
        other => panic!("unexpected {other:?}"),
    }
    let err = client_side.unwrap_err();
    assert!(
        matches!(
            err,
            HandshakeError::RefusedByPeer(_) | HandshakeError::Io(_)
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_client_that_never_speaks_is_dropped_at_the_handshake_timeout() {
    let a = Identity::generate().unwrap();
    let server = tls::server_config(&a, &Trust::default()).unwrap();
    let (listener, addr) = listener().await;
    let _silent = TcpStream::connect(addr).await.unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let timeout = Duration::from_millis(200);
    let started = std::time::Instant::now();
    let err = tls::accept(&server, tcp, timeout)
        .await
        .map(|(_, id)| id)
        .unwrap_err();
    assert!(
        matches!(err, HandshakeError::Timeout(t) if t == timeout),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(started.elapsed() < BOUND);
}

// ---- CA mode -------------------------------------------------------------

/// A CA that certifies keys under whatever names it is given (a careless
/// or hostile one, which `Authority` never is): each identity with its
/// names, and the trust in that CA.
fn certify_as(requests: Vec<(Identity, Vec<String>)>) -> (Vec<Identity>, Trust) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let root = params.self_signed(&key).unwrap();
    let certified = requests
        .into_iter()
        .map(|(identity, names)| {
            let leaf = rcgen::CertificateParams::new(names)
                .unwrap()
                .signed_by(&Ed25519Key(*identity.public_key()), &root, &key)
                .unwrap();
            identity
                .with_certificate_chain(vec![leaf.der().clone()])
                .unwrap()
        })
        .collect();
    (certified, Trust::Ca(vec![root.der().clone()]))
}

/// A bare Ed25519 public key, as rcgen signs it (what a CA gets from a CSR).
struct Ed25519Key([u8; 32]);

impl rcgen::PublicKeyData for Ed25519Key {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

#[tokio::test]
async fn nodes_certified_by_the_same_ca_connect() {
    let ca = Authority::generate("acme mesh CA").unwrap();
    let a = ca.issue().unwrap();
    let b = ca.issue().unwrap();
    let server = tls::server_config(&a, &ca.trust()).unwrap();
    let client = tls::client_config(&b, &ca.trust(), Some(a.node_id())).unwrap();
    let (server_side, client_side) = handshake(server, client).await;
    assert_eq!(server_side.unwrap().1, b.node_id());
    assert_eq!(client_side.unwrap().1, a.node_id());
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_in_ca_mode() {
    let ours = Authority::generate("acme mesh CA").unwrap();
    let theirs = Authority::generate("someone else's CA").unwrap();
    let a = ours.issue().unwrap();
    let b = theirs.issue().unwrap();

    // A client certified by the other CA (that would accept our server),
    // against our server.
    let server = tls::server_config(&a, &ours.trust()).unwrap();
    let client = tls::client_config(&b, &ours.trust(), None).unwrap();
    let (server_side, client_side) = handshake(server, client).await;
    let err = server_side.unwrap_err();
    assert!(
        matches!(&err, HandshakeError::Refused(Refusal::NotCertified { node, .. }) if *node == b.node_id()),
        "{err:?}"
    );
    assert!(err.to_string().contains(&b.node_id().to_string()), "{err}");
    assert_client_was_refused(client_side).await;

    // Our client, against a server certified by the other CA.
    let server = tls::server_config(&b, &ours.trust()).unwrap();
    let client = tls::client_config(&a, &ours.trust(), None).unwrap();
    let (_, client_side) = handshake(server, client).await;
    let err = client_side.unwrap_err();
    assert!(
        matches!(&err, HandshakeError::Refused(Refusal::NotCertified { node, .. }) if *node == b.node_id()),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_ca_certificate_must_name_the_node_of_its_key() {
    let other = Identity::generate().unwrap();
    // Certified by the trusted CA, but for a name that is not its NodeId.
    let a = Identity::generate().unwrap();
    let a_name = vec![node_name(a.node_id())];
    let (ids, trust) = certify_as(vec![
        (a, a_name),
        (
            Identity::generate().unwrap(),
            vec![node_name(other.node_id())],
        ),
    ]);
    let (a, b) = (&ids[0], &ids[1]);
    let server = tls::server_config(a, &trust).unwrap();
    let client = tls::client_config(b, &trust, None).unwrap();
    let (server_side, _) = handshake(server, client).await;
    let err = server_side.unwrap_err();
    assert!(
        matches!(&err, HandshakeError::Refused(Refusal::NotCertified { node, .. }) if *node == b.node_id()),
        "{err:?}"
    );
}

// ---- identity and trust files -------------------------------------------

#[test]
fn identity_save_load_round_trip_keeps_the_node_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.key");
    let id = Identity::generate().unwrap();
    id.save(&path).unwrap();
    let loaded = Identity::load(&path).unwrap();
    assert_eq!(loaded.node_id(), id.node_id());
    assert_eq!(loaded.public_key(), id.public_key());
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{text}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
}

#[cfg(unix)]
#[test]
fn key_files_are_private_and_loose_ones_still_load() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.key");
    let id = Identity::generate().unwrap();
    id.save(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let log = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || Captured(sink.clone()))
        .with_ansi(false)
        .finish();
    let loaded = tracing::subscriber::with_default(subscriber, || Identity::load(&path));
    assert_eq!(
        loaded.unwrap().node_id(),
        id.node_id(),
        "a warning, not an error"
    );
    let log = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    assert!(log.contains("WARN") && log.contains("chmod 600"), "{log}");
}

/// A log sink for one test: what a tracing subscriber writes, kept.
#[cfg(unix)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(unix)]
impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn load_or_create_creates_once_then_reuses() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = Identity::load_or_create(&data).unwrap();
    assert!(data.join(Identity::KEY_FILE).exists());
    let second = Identity::load_or_create(&data).unwrap();
    assert_eq!(first.node_id(), second.node_id());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("node.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn node_id_is_stable_and_derived_from_the_public_key() {
    let id = Identity::generate().unwrap();
    assert_eq!(id.node_id(), node_id_of(id.public_key()));
    assert_eq!(id.node_id(), id.clone().node_id());
    let other = Identity::generate().unwrap();
    assert_ne!(id.node_id(), other.node_id());
    assert!(format!("{id:?}").contains(&id.node_id().to_string()));
    assert!(
        !format!("{id:?}").contains("PRIVATE"),
        "Debug never shows the key"
    );
}

#[test]
fn a_corrupt_key_file_is_a_typed_error_that_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.key");
    std::fs::write(
        &path,
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = Identity::load(&path).unwrap_err();
    assert!(matches!(err, SecurityError::BadKey { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(
        text.contains("move it away") && text.contains("backup"),
        "{text}"
    );
    let err = Identity::load_or_create(dir.path()).unwrap_err();
    assert!(
        matches!(err, SecurityError::BadKey { .. }),
        "never replaced: {err:?}"
    );
}

#[test]
fn trust_files_take_ids_comments_and_blank_lines() {
    let dir = tempfile::tempdir().unwrap();
    let a = Identity::generate().unwrap().node_id();
    let b = Identity::generate().unwrap().node_id();
    let path = dir.path().join("peers.trust");
    std::fs::write(
        &path,
        format!("# the mesh\n{a}\n\n   {b}   # router 2\n#{a}\n"),
    )
    .unwrap();
    match Trust::load(&path).unwrap() {
        Trust::Nodes(set) => assert_eq!(set, [a, b].into_iter().collect()),
        other => panic!("unexpected {other:?}"),
    }

    std::fs::write(&path, format!("{a}\n# ok so far\n{b}x\n")).unwrap();
    match Trust::load(&path).unwrap_err() {
        SecurityError::BadTrustLine { line, text, .. } => {
            assert_eq!(line, 3);
            assert_eq!(text, format!("{b}x"));
        }
        other => panic!("unexpected {other:?}"),
    }
    let missing = Trust::load(dir.path().join("nope")).unwrap_err();
    assert!(matches!(missing, SecurityError::Io { .. }), "{missing:?}");
}
