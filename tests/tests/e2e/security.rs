//! TLS, mTLS, certificate reload and bearer-token auth of the real binaries: refused
//! without credentials (401 / UNAUTHENTICATED, TLS handshake failure), served with them,
//! the agent ships over TLS with a token, and no token ever shows in logs or `/metrics`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lookout_proto::otlp::collector::logs::v1::logs_service_client::LogsServiceClient;
use lookout_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use lookout_tests::otlp::log_request;
use lookout_tests::{metric_value, poll, write_agent_config, Agent, Collector, ProtobufBody};
use prost::Message;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

const INGEST_TOKEN: &str = "ingest-0123456789abcdef";
const API_TOKEN: &str = "api-token-fedcba9876543210";

fn logs(mark: &str, n: usize) -> ExportLogsServiceRequest {
    log_request("vault", (0..n).map(|i| format!("{mark} n{i}")))
}

/// Total hits of `q` through the query API.
async fn hits(client: &reqwest::Client, api: &str, q: &str) -> u64 {
    let r = client
        .get(format!("{api}/api/v1/logs?q={q}&from=1h&limit=1"))
        .send()
        .await
        .expect("GET /api/v1/logs");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.expect("json");
    v["total"].as_u64().unwrap_or(0)
}

/// The text of `/metrics` at `url`, fetched with `client` (a token, TLS).
async fn metrics_with(client: &reqwest::Client, url: &str) -> String {
    let r = client.get(url).send().await.expect("GET /metrics");
    r.text().await.unwrap()
}

fn bearer(token: &str) -> reqwest::header::HeaderMap {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header"),
    );
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_guard_otlp_and_the_api_and_never_leak() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("ingest-tokens");
    std::fs::write(&tokens, format!("# agents\n{INGEST_TOKEN}\n")).expect("write");
    let c = Collector::start_with_config(
        dir.path(),
        &format!(
            "[otlp.auth]\ntokens_file = {:?}\n\n[api.auth]\ntokens = [\"{API_TOKEN}\"]\n",
            tokens.display().to_string()
        ),
    );
    let plain = reqwest::Client::new();
    let body = logs("tokenized", 3).encode_to_vec();

    // OTLP/HTTP: no token, a wrong token, then the right one.
    let r = plain
        .post(c.http_url("/v1/logs"))
        .protobuf(body.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    assert_eq!(r.headers()["content-type"], "application/x-protobuf");
    let status = tonic_types::Status::decode(r.bytes().await.unwrap()).expect("a Status body");
    assert_eq!(status.code, tonic::Code::Unauthenticated as i32);
    let r = plain
        .post(c.http_url("/v1/logs"))
        .headers(bearer("wrong-token-0123456789"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 401);
    let v: serde_json::Value = r.json().await.expect("json Status");
    assert_eq!(v["code"], 16);
    let r = plain
        .post(c.http_url("/v1/logs"))
        .headers(bearer(INGEST_TOKEN))
        .protobuf(body)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 200);

    // OTLP/gRPC.
    let mut grpc = LogsServiceClient::connect(c.grpc_url())
        .await
        .expect("connect");
    let err = grpc
        .export(logs("tokenized", 2))
        .await
        .expect_err("no token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    let mut req = tonic::Request::new(logs("tokenized", 2));
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {INGEST_TOKEN}").parse().unwrap(),
    );
    grpc.export(req).await.expect("with the token");

    // The query API: health is open, everything else needs the API token (not the
    // ingest one).
    for path in ["/healthz", "/readyz"] {
        let r = plain.get(c.api_url(path)).send().await.expect("GET");
        assert_eq!(r.status(), 200, "{path}");
    }
    for (path, token) in [
        ("/api/v1/logs?q=tokenized", None),
        ("/metrics", None),
        ("/api/v1/services", Some(INGEST_TOKEN)),
    ] {
        let mut req = plain.get(c.api_url(path));
        if let Some(t) = token {
            req = req.headers(bearer(t));
        }
        let r = req.send().await.expect("GET");
        assert_eq!(r.status(), 401, "{path}");
        let v: serde_json::Value = r.json().await.expect("json error");
        assert!(v["error"].as_str().unwrap().contains("bearer token"), "{v}");
    }
    let api = reqwest::Client::builder()
        .default_headers(bearer(API_TOKEN))
        .build()
        .unwrap();
    let base = format!("http://{}", c.api);
    poll(Duration::from_secs(15), "5 logs searchable", || async {
        (hits(&api, &base, "tokenized").await == 5).then_some(())
    })
    .await;

    // The agent ships with its token file.
    let token_file = dir.path().join("agent-token");
    std::fs::write(&token_file, format!("{INGEST_TOKEN}\n")).expect("write");
    let agent_cfg = write_agent_config(
        dir.path(),
        &format!(
            "[exporter]\nbearer_token_file = {:?}\nbatch_timeout = \"50ms\"\n",
            token_file.display().to_string()
        ),
    );
    let agent = Agent::start(
        &dir.path().join("buffer"),
        &c.grpc_url(),
        &["--config", &agent_cfg],
    );
    agent
        .post_ok("/v1/logs", logs("shipped", 7).encode_to_vec())
        .await;
    poll(Duration::from_secs(20), "7 shipped logs", || async {
        (hits(&api, &base, "shipped").await == 7).then_some(())
    })
    .await;

    let metrics = metrics_with(&api, &c.api_url("/metrics")).await;
    let refused = |l: &str| {
        metric_value(
            &metrics,
            &format!("lookout_unauthenticated_requests_total{{listener=\"{l}\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(refused("otlp_http"), 2.0);
    assert_eq!(refused("otlp_grpc"), 1.0);
    assert_eq!(refused("api"), 3.0);
    for secret in [INGEST_TOKEN, API_TOKEN] {
        assert!(!metrics.contains(secret), "a token in /metrics");
        assert!(!c.output().contains(secret), "a token in the collector log");
        assert!(!agent.output().contains(secret), "a token in the agent log");
    }
}

/// A CA and certificates signed by it, as PEM files in `dir`.
struct Pki {
    dir: PathBuf,
    ca_params: CertificateParams,
    ca_key: KeyPair,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        let ca_key = KeyPair::generate().expect("key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        let ca = ca_params.self_signed(&ca_key).expect("CA");
        let pki = Pki {
            dir: dir.to_path_buf(),
            ca_params,
            ca_key,
        };
        std::fs::write(pki.ca_file(name), ca.pem()).expect("write CA");
        pki
    }

    fn ca_file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-ca.pem"))
    }

    /// Issue a certificate for `sans` (server names, or a client's name); returns the
    /// certificate and key files and the certificate's DER.
    fn issue(&self, file: &str, cn: &str, sans: &[&str]) -> (PathBuf, PathBuf, Vec<u8>) {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).expect("sign");
        let (cert_file, key_file) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}-key.pem")),
        );
        // Key first: a reload between the two writes sees a mismatch, keeps the old
        // pair and picks up the new one on the next change.
        std::fs::write(&key_file, key.serialize_pem()).expect("write key");
        std::fs::write(&cert_file, cert.pem()).expect("write cert");
        (cert_file, key_file, cert.der().to_vec())
    }
}

fn tls_client(ca: &Path, identity: Option<(&Path, &Path)>) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let mut b = reqwest::Client::builder()
        .tls_certs_only([ca])
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10));
    if let Some((cert, key)) = identity {
        let mut pem = std::fs::read(cert).unwrap();
        pem.extend(std::fs::read(key).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates_reload_and_an_agent_shipping_over_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "lookout");
    let rogue = Pki::new(dir.path(), "rogue");
    let (cert, key, _) = pki.issue("server", "lookout-1", &["localhost", "127.0.0.1"]);
    let (api_cert, api_key, _) = pki.issue("api", "lookout-api-1", &["localhost", "127.0.0.1"]);
    let (client_cert, client_key, _) = pki.issue("client", "agent", &["agent"]);
    let (rogue_cert, rogue_key, _) = rogue.issue("rogue-client", "agent", &["agent"]);
    let ca = pki.ca_file("lookout");
    let s = |p: &Path| p.display().to_string();
    let config = lookout_tests::write_config(
        dir.path(),
        &format!(
            "[otlp.tls]\ncert_file = {:?}\nkey_file = {:?}\nclient_ca_file = {:?}\n\n\
             [api.tls]\ncert_file = {:?}\nkey_file = {:?}\nreload_interval = \"1s\"\n",
            s(&cert),
            s(&key),
            s(&ca),
            s(&api_cert),
            s(&api_key)
        ),
    );
    let c = Collector::launch(
        &dir.path().join("data"),
        &["--config", &config.display().to_string()],
    );
    c.wait_for_log(" ready");
    let otlp = format!("https://127.0.0.1:{}/v1/logs", c.http.port());
    let body = logs("secured", 4).encode_to_vec();
    let post = |client: reqwest::Client, url: String, body: Vec<u8>| async move {
        client.post(url).protobuf(body).send().await
    };

    // mTLS on OTLP: no client certificate, or one from another CA, is refused in the
    // handshake; plain HTTP gets nothing.
    let err = post(tls_client(&ca, None), otlp.clone(), body.clone())
        .await
        .expect_err("no client certificate");
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    post(
        tls_client(&ca, Some((&rogue_cert, &rogue_key))),
        otlp.clone(),
        body.clone(),
    )
    .await
    .expect_err("a client certificate of another CA");
    let plain = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/v1/logs", c.http.port()))
        .protobuf(body.clone())
        .timeout(Duration::from_secs(15))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.as_ref().is_ok_and(|r| r.status() != 200),
        "plain HTTP served on a TLS port"
    );
    let r = post(
        tls_client(&ca, Some((&client_cert, &client_key))),
        otlp.clone(),
        body,
    )
    .await
    .expect("with the client certificate");
    assert_eq!(r.status(), 200);

    // The API over TLS (no client certificate needed there).
    let api_client = tls_client(&ca, None);
    let api = format!("https://127.0.0.1:{}", c.api.port());
    poll(Duration::from_secs(15), "4 logs over TLS", || async {
        (hits(&api_client, &api, "secured").await == 4).then_some(())
    })
    .await;

    // The agent ships over gRPC+TLS with the CA and its client certificate.
    let agent_cfg = write_agent_config(
        dir.path(),
        &format!(
            "[exporter]\nbatch_timeout = \"50ms\"\n\n[exporter.tls]\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n",
            s(&ca),
            s(&client_cert),
            s(&client_key)
        ),
    );
    let agent = Agent::start(
        &dir.path().join("buffer"),
        &format!("https://127.0.0.1:{}", c.grpc.port()),
        &["--config", &agent_cfg],
    );
    agent
        .post_ok("/v1/logs", logs("tunnelled", 6).encode_to_vec())
        .await;
    poll(
        Duration::from_secs(20),
        "6 logs shipped over TLS",
        || async { (hits(&api_client, &api, "tunnelled").await == 6).then_some(()) },
    )
    .await;

    // Certificate rotation without a restart: new handshakes present the new one.
    let (_, _, new_der) = pki.issue("api", "lookout-api-2", &["localhost", "127.0.0.1"]);
    poll(
        Duration::from_secs(15),
        "the rotated certificate",
        || async {
            let r = api_client.get(format!("{api}/healthz")).send().await.ok()?;
            let info = r.extensions().get::<reqwest::tls::TlsInfo>()?;
            (info.peer_certificate() == Some(new_der.as_slice())).then_some(())
        },
    )
    .await;
    c.wait_for_log("TLS certificate reloaded");

    let metrics = metrics_with(&api_client, &format!("{api}/metrics")).await;
    let failures = metric_value(
        &metrics,
        "lookout_tls_handshake_failures_total{listener=\"otlp_http\"}",
    )
    .unwrap_or(0.0);
    assert!(failures >= 2.0, "handshake failures counted: {failures}");
}

/// Every early refusal reaches the client whole, over TLS with HTTP/2 as over plain
/// HTTP/1.1, even while the client is still sending its body: 401 without a token, 413
/// for an oversize body, 415 for a wrong content type; a hundred times each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_refusals_always_reach_the_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "lookout");
    let (cert, key, _) = pki.issue("server", "lookout-1", &["localhost", "127.0.0.1"]);
    let ca = pki.ca_file("lookout");
    let config = lookout_tests::write_config(
        dir.path(),
        &format!(
            "[otlp.tls]\ncert_file = {:?}\nkey_file = {:?}\n\n[otlp.auth]\ntokens = [\"{INGEST_TOKEN}\"]\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
    );
    let c = Collector::launch(
        &dir.path().join("data"),
        &["--config", &config.display().to_string()],
    );
    c.wait_for_log(" ready");
    let url = format!("https://localhost:{}/v1/traces", c.http.port());
    let h2 = tls_client(&ca, None);
    let h1 = {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .http1_only()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    };
    let big = vec![b' '; 3 << 20];
    let huge = vec![b' '; 5 << 20];
    for (name, client) in [("HTTP/2", &h2), ("HTTP/1.1", &h1)] {
        for i in 0..100 {
            for (body, content_type, auth, want) in [
                (b"{}".to_vec(), "application/json", false, 401),
                (big.clone(), "application/json", false, 401),
                (huge.clone(), "application/json", true, 413),
                (big.clone(), "text/plain", true, 415),
            ] {
                let mut req = client
                    .post(&url)
                    .header("content-type", content_type)
                    .body(body);
                if auth {
                    req = req.bearer_auth(INGEST_TOKEN);
                }
                let r = req
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{name} request {i} ({want}): no answer: {e:?}"));
                assert_eq!(r.status().as_u16(), want, "{name} request {i}");
                if name == "HTTP/2" {
                    assert_eq!(r.version(), reqwest::Version::HTTP_2);
                }
            }
        }
    }
}
