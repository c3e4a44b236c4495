//! The nginx upstream's certificates, made with the `openssl` CLI at bench start: RSA-2048
//! throughout, shaped like the chain Amazon API Gateway presents (about 5 KB): a leaf for
//! `*.execute-api.us-east-1.amazonaws.com` (also `localhost` and `127.0.0.1`) with the usual
//! extensions and an SCT-sized one, an intermediate, the root cross-signed by an older root,
//! and that older root. The client trusts the root alone, so it builds a path of three and
//! ignores the last two certificates, as clients do with API Gateway's chain.
//! (rcgen cannot make RSA keys with ring, hence the CLI.)

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// What nginx needs and what the client trusts.
pub(crate) struct Pki {
    /// Leaf, intermediate, cross-signed root, old root (PEM), for `ssl_certificate`.
    pub(crate) chain: PathBuf,
    /// The leaf's key (PEM), for `ssl_certificate_key`.
    pub(crate) key: PathBuf,
    /// The root the client trusts.
    pub(crate) root: CertificateDer<'static>,
    /// DER bytes of the certificates the server sends.
    pub(crate) chain_bytes: usize,
}

const EXTENSIONS: &str = "[ca]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[inter]
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
certificatePolicies = 2.23.140.1.2.1
crlDistributionPoints = URI:http://crl.rootca.bench.invalid/rootca.crl
authorityInfoAccess = OCSP;URI:http://ocsp.rootca.bench.invalid, caIssuers;URI:http://crt.rootca.bench.invalid/rootca.cer
[leaf]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:*.execute-api.us-east-1.amazonaws.com, DNS:*.execute-api.us-east-1.vpce.amazonaws.com, DNS:localhost, IP:127.0.0.1
certificatePolicies = 2.23.140.1.2.1
crlDistributionPoints = URI:http://crl.intermediate.bench.invalid/intermediate.crl
authorityInfoAccess = OCSP;URI:http://ocsp.intermediate.bench.invalid, caIssuers;URI:http://crt.intermediate.bench.invalid/intermediate.cer
";

/// Makes the chain in `dir` (a few hundred ms: four RSA keys).
pub(crate) fn make(dir: &Path) -> io::Result<Pki> {
    std::fs::create_dir_all(dir)?;
    // A signed certificate timestamp list is about 360 bytes of opaque data to a client.
    let mut sct = String::from("0482016c");
    for i in 0..364u32 {
        let _ = write!(sct, "{:02x}", (i * 37 + 11) % 251);
    }
    let ext = format!("{EXTENSIONS}1.3.6.1.4.1.11129.2.4.2 = DER:{sct}\n");
    std::fs::write(dir.join("ext.cnf"), ext)?;
    let subj = |cn: &str| format!("/C=US/O=splitway bench/CN={cn}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "oldroot.key",
            "-out",
            "oldroot.pem",
            "-days",
            "3650",
            "-subj",
            &subj("splitway bench old root CA"),
        ],
    )?;
    for (name, cn) in [
        ("root", "splitway bench root CA 1"),
        ("inter", "splitway bench RSA 2048 M02"),
        ("leaf", "*.execute-api.us-east-1.amazonaws.com"),
    ] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &subj(cn),
            ],
        )?;
    }
    let sign = |csr: &str, ca: Option<(&str, &str)>, serial: &str, out: &str, section: &str| {
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            csr,
            "-out",
            out,
            "-days",
            "398",
            "-set_serial",
            serial,
        ];
        match ca {
            Some((cert, key)) => args.extend(["-CA", cert, "-CAkey", key]),
            None => args.extend(["-key", "root.key"]),
        }
        args.extend(["-extfile", "ext.cnf", "-extensions", section]);
        openssl(dir, &args)
    };
    sign("root.csr", None, "1", "root.pem", "ca")?;
    sign(
        "root.csr",
        Some(("oldroot.pem", "oldroot.key")),
        "2",
        "root-cross.pem",
        "inter",
    )?;
    sign("inter.csr", Some(("root.pem", "root.key")), "3", "inter.pem", "inter")?;
    sign("leaf.csr", Some(("inter.pem", "inter.key")), "4", "leaf.pem", "leaf")?;
    let mut chain = Vec::new();
    let mut chain_bytes = 0;
    for f in ["leaf.pem", "inter.pem", "root-cross.pem", "oldroot.pem"] {
        let pem = std::fs::read(dir.join(f))?;
        chain_bytes += CertificateDer::from_pem_slice(&pem).map_err(io::Error::other)?.len();
        chain.extend_from_slice(&pem);
    }
    std::fs::write(dir.join("chain.pem"), chain)?;
    let root = CertificateDer::from_pem_file(dir.join("root.pem")).map_err(io::Error::other)?;
    Ok(Pki {
        chain: dir.join("chain.pem"),
        key: dir.join("leaf.key"),
        root,
        chain_bytes,
    })
}

fn openssl(dir: &Path, args: &[&str]) -> io::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::other(format!("openssl (needed for the nginx upstream's certificates): {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}
