"""Self-signed CA, a server certificate for 127.0.0.1, and the token issuer's signing key.

Made with python3-cryptography so the tests need no openssl command lines. Go's TLS stack
(docker-registry) ignores the CN, so the server certificate carries IP and DNS SANs.
"""
import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _validity(builder):
    now = datetime.datetime.now(datetime.timezone.utc)
    return builder.not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(
        now + datetime.timedelta(days=7))


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def make_ca_and_server_cert(ca_path, cert_path, key_path, hosts=("127.0.0.1", "localhost")):
    """Write a CA cert (ca_path) and a server cert+key signed by it, valid for hosts."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _validity(x509.CertificateBuilder()
                        .subject_name(_name("aishell test CA"))
                        .issuer_name(_name("aishell test CA"))
                        .public_key(ca_key.public_key())
                        .serial_number(x509.random_serial_number())
                        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                        .add_extension(x509.KeyUsage(
                            digital_signature=True, key_cert_sign=True, crl_sign=True,
                            content_commitment=False, key_encipherment=False,
                            data_encipherment=False, key_agreement=False,
                            encipher_only=False, decipher_only=False), critical=True)
                        ).sign(ca_key, hashes.SHA256())
    key = ec.generate_private_key(ec.SECP256R1())
    sans = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = _validity(x509.CertificateBuilder()
                     .subject_name(_name(hosts[0]))
                     .issuer_name(ca_cert.subject)
                     .public_key(key.public_key())
                     .serial_number(x509.random_serial_number())
                     .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                     .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                     .add_extension(x509.ExtendedKeyUsage(
                         [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                     ).sign(ca_key, hashes.SHA256())
    _write(ca_path, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    _write(key_path, _pem_key(key))


def make_signing_cert(cert_path):
    """A self-signed EC P-256 certificate for signing registry tokens.

    Returns (private_key, der_cert). The registry's rootcertbundle is this certificate; tokens
    carry it in their x5c header, and distribution verifies that chain against the bundle.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _validity(x509.CertificateBuilder()
                     .subject_name(_name("aishell test token issuer"))
                     .issuer_name(_name("aishell test token issuer"))
                     .public_key(key.public_key())
                     .serial_number(x509.random_serial_number())
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     ).sign(key, hashes.SHA256())
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return key, cert.public_bytes(serialization.Encoding.DER)
