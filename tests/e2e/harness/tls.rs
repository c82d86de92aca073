//! Certificates for the TLS tests, made with the `openssl` CLI (which
//! [`openssl`] runs for other tests' keys too): a CA
//! (`ca.pem`) and a server certificate for `127.0.0.1` and `localhost`
//! (`server.pem`, key `server.key`) signed by it.

use std::path::Path;

/// Runs `openssl ARGS` in `dir`, failing the test with its stderr.
pub(crate) fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The RSA key `key.pem` in `dir` as PKCS#1 DER, which is what
/// `jsonwebtoken::EncodingKey::from_rsa_der` takes.
pub(crate) fn rsa_der(dir: &Path) -> Vec<u8> {
    openssl(
        dir,
        &[
            "rsa",
            "-in",
            "key.pem",
            "-traditional",
            "-outform",
            "DER",
            "-out",
            "key.der",
        ],
    );
    std::fs::read(dir.join("key.der")).expect("reading key.der")
}

/// Writes `ca.pem`, `ca.key`, `server.pem` and `server.key` into `dir`.
pub(crate) fn make_certs(dir: &Path) {
    let run = |args: &[&str]| openssl(dir, args);
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=trellis test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("writing ext.cnf");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}
