//! Certificates for the HTTPS judge (a CA the checker is told to trust, and a leaf for
//! `localhost`/127.0.0.1) and an untrusted one for MITM proxies.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// TLS material of a farm.
pub struct FarmTls {
    /// PEM of the CA that signed the judge's certificate.
    pub ca_pem: String,
    /// The judge's certificate chain and key, PEM (to serve the same judge elsewhere).
    pub judge_chain_pem: String,
    pub judge_key_pem: String,
    pub judge: Arc<rustls::ServerConfig>,
    /// A self-signed certificate from no trusted CA.
    pub mitm: Arc<rustls::ServerConfig>,
}

fn server_config(chain: Vec<CertificateDer<'static>>, key: &KeyPair) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(cfg))
}

impl FarmTls {
    pub fn generate() -> anyhow::Result<Self> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "proxy-farm test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let leaf_key = KeyPair::generate()?;
        let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?
            .signed_by(&leaf_key, &ca)?;
        let judge = server_config(vec![leaf.der().clone(), ca.der().clone()], &leaf_key)?;

        let mitm_key = KeyPair::generate()?;
        let mitm_cert =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?.self_signed(&mitm_key)?;
        let mitm = server_config(vec![mitm_cert.der().clone()], &mitm_key)?;
        Ok(Self {
            ca_pem: ca.pem(),
            judge_chain_pem: format!("{}{}", leaf.pem(), ca.pem()),
            judge_key_pem: leaf_key.serialize_pem(),
            judge,
            mitm,
        })
    }
}
