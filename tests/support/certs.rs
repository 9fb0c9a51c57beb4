//! Test PKI with rcgen 0.13: a fresh CA per broker and a server certificate for `localhost` and
//! 127.0.0.1 (ECDSA P-256, PKCS#8 key: both OpenSSL/Mosquitto and rustls accept it).

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// A throwaway certificate authority.
pub struct TestCa {
    pub cert: Certificate,
    pub key: KeyPair,
}

/// A PEM certificate and its PEM (PKCS#8) private key.
#[derive(Clone, Debug)]
pub struct PemPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Paths of the files written by [`write_server_certs`].
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl TestCa {
    pub fn new(common_name: &str) -> Result<TestCa, String> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err("CA params"))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(err("CA key"))?;
        let cert = params.self_signed(&key).map_err(err("CA self-sign"))?;
        Ok(TestCa { cert, key })
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate; each SAN is an IP SAN if it parses as an IP, else a DNS SAN.
    pub fn issue_server(&self, sans: &[&str]) -> Result<PemPair, String> {
        self.issue(sans, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate (for mutual-TLS tests).
    pub fn issue_client(&self, common_name: &str) -> Result<PemPair, String> {
        self.issue(&[common_name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, sans: &[&str], eku: ExtendedKeyUsagePurpose) -> Result<PemPair, String> {
        let names: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).map_err(err("leaf params"))?;
        if let Some(first) = sans.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![eku];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(err("leaf key"))?;
        let cert = params.signed_by(&key, &self.cert, &self.key).map_err(err("leaf signing"))?;
        Ok(PemPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// Writes `contents` to `path`, with mode 0600 when `private`.
pub fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), String> {
    std::fs::write(path, contents).map_err(|e| format!("write {}: {e}", path.display()))?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Makes a fresh CA and a server certificate for `localhost` and 127.0.0.1, and writes
/// `ca.crt`, `server.crt` and `server.key` into `dir`.
pub fn write_server_certs(dir: &Path) -> Result<CertFiles, String> {
    let ca = TestCa::new("twinrt test CA")?;
    let server = ca.issue_server(&["localhost", "127.0.0.1"])?;
    let files = CertFiles { ca: dir.join("ca.crt"), cert: dir.join("server.crt"), key: dir.join("server.key") };
    write_file(&files.ca, &ca.cert_pem(), false)?;
    write_file(&files.cert, &server.cert_pem, false)?;
    write_file(&files.key, &server.key_pem, true)?;
    Ok(files)
}

/// Writes the certificate of a brand-new, unrelated CA to `path` (for "wrong CA is refused").
pub fn write_unrelated_ca(path: &Path) -> Result<(), String> {
    let ca = TestCa::new("unrelated test CA")?;
    write_file(path, &ca.cert_pem(), false)
}
