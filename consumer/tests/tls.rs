//! TLS to the broker (`amqps://`) and to Postgres (`sslmode=verify-full`), verified against a
//! throwaway CA made here. The local RabbitMQ and Postgres speak plain TCP, so each gets a TLS
//! listener on a spare port in front of it: a terminating proxy holding a certificate signed by
//! that CA (for Postgres it first answers the protocol's SSLRequest, as the server would).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pokeapi_stub::StubConfig;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::proxy::upstream;
use support::{TestEnv, spawn_consumer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

const SETTLE: Duration = Duration::from_secs(60);
/// The first message of a Postgres client that wants TLS: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 4, 210, 22, 47];

struct Pki {
    ca_pem: String,
    acceptor: TlsAcceptor,
}

/// A CA and a server certificate for 127.0.0.1 and localhost, signed by it.
fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "pokeq throwaway test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let server_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let server_cert = server_params.signed_by(&server_key, &ca).unwrap();

    let chain = vec![
        CertificateDer::from(server_cert.der().to_vec()),
        CertificateDer::from(ca.der().to_vec()),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        acceptor: TlsAcceptor::from(Arc::new(config)),
    }
}

/// Accepts TLS on a spare port and forwards the plain bytes to `upstream`. With `postgres`,
/// the client's SSLRequest is answered `S` before the handshake.
async fn tls_listener(acceptor: TlsAcceptor, upstream: SocketAddr, postgres: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if postgres {
                    let mut request = [0u8; 8];
                    if inbound.read_exact(&mut request).await.is_err() || request != SSL_REQUEST {
                        return;
                    }
                    if inbound.write_all(b"S").await.is_err() {
                        return;
                    }
                }
                let Ok(mut tls) = acceptor.accept(inbound).await else {
                    return;
                };
                let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut outbound).await;
            });
        }
    });
    addr
}

/// The test's services behind TLS; the CA file is removed when this drops, passed or not.
struct TlsEnv {
    env: TestEnv,
    amqps_url: String,
    postgres_tls_url: String,
    ca_file: std::path::PathBuf,
}

impl Drop for TlsEnv {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ca_file);
    }
}

async fn tls_env(count: u32) -> TlsEnv {
    let env = TestEnv::start(StubConfig {
        count,
        ..StubConfig::default()
    })
    .await;
    let pki = pki();
    let amqp = tls_listener(pki.acceptor.clone(), upstream(&env.amqp_url), false).await;
    let pg = tls_listener(pki.acceptor.clone(), upstream(&env.database_url), true).await;
    let mut amqps = url::Url::parse(&env.amqp_url).unwrap();
    amqps.set_scheme("amqps").unwrap();
    amqps.set_port(Some(amqp.port())).unwrap();
    let mut postgres = url::Url::parse(&env.database_url).unwrap();
    postgres.set_port(Some(pg.port())).unwrap();
    postgres.set_query(Some("sslmode=verify-full"));
    let ca_file = std::env::temp_dir().join(format!("{}-ca.pem", env.prefix));
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    TlsEnv {
        env,
        amqps_url: amqps.to_string(),
        postgres_tls_url: postgres.to_string(),
        ca_file,
    }
}

#[tokio::test]
async fn the_pipeline_runs_over_verified_tls_to_broker_and_database() {
    let tls = tls_env(30).await;
    let env = &tls.env;
    let ca = tls.ca_file.to_str().unwrap();

    let mut producer = env.producer_config(&["--ca-file", ca]);
    producer.common.amqp_url = tls.amqps_url.clone().into();
    producer.common.database = pokeq_shared::store::parse_url(&tls.postgres_tls_url).unwrap();
    producer.common.database_url = tls.postgres_tls_url.clone().into();
    let summary = pokeq_producer::run(producer, Default::default())
        .await
        .expect("producer over TLS");
    assert_eq!(summary.published, 30);

    let consumer = spawn_consumer(env.consumer_config_via(
        &tls.amqps_url,
        &tls.postgres_tls_url,
        &["--ca-file", ca],
    ));
    let counts = env.wait_settled(30, SETTLE).await;
    assert_eq!((counts.done, counts.failed), (30, 0));
    consumer.stop().await.unwrap();
}

#[tokio::test]
async fn a_server_signed_by_an_unknown_ca_is_refused() {
    let tls = tls_env(1).await;
    let broker = pokeq_shared::broker::connect_once(&tls.amqps_url, "pokeq-tls-test", None).await;
    let error = broker
        .expect_err("untrusted broker certificate refused")
        .to_string();
    assert!(!error.contains("guest:guest"), "password masked: {error}");

    let config = pokeq_shared::store::parse_url(&tls.postgres_tls_url).unwrap();
    let store = pokeq_shared::store::Store::open(&config, &tls.postgres_tls_url, 1, None).await;
    assert!(store.is_err(), "untrusted database certificate refused");

    // The same servers are accepted once their CA is trusted.
    let ca = std::fs::read_to_string(&tls.ca_file).unwrap();
    let connection =
        pokeq_shared::broker::connect_once(&tls.amqps_url, "pokeq-tls-test", Some(&ca))
            .await
            .expect("trusted with --ca-file");
    let _ = connection.close(200, "ok".into()).await;
    let store = pokeq_shared::store::Store::open(&config, &tls.postgres_tls_url, 1, Some(&ca))
        .await
        .expect("trusted with --ca-file");
    drop(store);
}

#[test]
fn a_bad_ca_file_is_a_configuration_error_naming_the_setting() {
    let path = std::env::temp_dir().join(format!("pokeq-not-a-ca-{}.pem", std::process::id()));
    std::fs::write(&path, "hello").unwrap();
    let cli = <pokeq_consumer::Cli as clap::Parser>::try_parse_from([
        "consumer",
        "--ca-file",
        path.to_str().unwrap(),
    ])
    .unwrap();
    let error = cli.validate().unwrap_err().to_string();
    assert!(error.contains("POKEQ_CA_FILE"), "{error}");
    std::fs::remove_file(&path).unwrap();
}
