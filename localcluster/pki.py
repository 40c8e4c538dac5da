"""Certificates and keys for the local control plane: one CA, a serving cert for the API
server, client certs per component identity, and the service-account signing key pair.

Generated with `cryptography` so no openssl CLI is needed; written once per state dir."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

API_SERVER_SANS_DNS = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
API_SERVER_SANS_IP = ("127.0.0.1", "10.0.0.1", "10.88.0.1")  # loopback, the Service IP, the containerd node


@dataclass(frozen=True)
class ClientIdentity:
    file_stem: str
    common_name: str
    organizations: tuple[str, ...] = ()


ADMIN = ClientIdentity("admin", "kubernetes-admin", ("system:masters",))
CONTROLLER_MANAGER = ClientIdentity("controller-manager", "system:kube-controller-manager")
SCHEDULER = ClientIdentity("scheduler", "system:kube-scheduler")
# One process serves every local node, so it cannot use per-node `system:node:<name>`
# identities under the Node authorizer; it is an admin of the local cluster instead.
KUBELET = ClientIdentity("process-kubelet", "localcluster:process-kubelet", ("system:masters",))


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


class PKI:
    """Files under <dir>: ca.{crt,key}, apiserver.{crt,key}, sa.{key,pub}, <client>.{crt,key}."""

    def __init__(self, directory: Path):
        self.dir = directory

    def path(self, name: str) -> Path:
        return self.dir / name

    def ensure(self) -> PKI:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.path("ca.crt").exists():
            return self
        now = dt.datetime.now(dt.timezone.utc)
        ca_key = _key()
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localcluster-ca")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .sign(ca_key, hashes.SHA256())
        )

        def issue(stem: str, cn: str, orgs: tuple[str, ...], server: bool) -> None:
            key = _key()
            attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
            attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
            builder = (
                x509.CertificateBuilder()
                .subject_name(x509.Name(attrs))
                .issuer_name(ca_name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(hours=1))
                .not_valid_after(now + dt.timedelta(days=365))
                .add_extension(
                    x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                    critical=False,
                )
            )
            if server:
                sans = [x509.DNSName(d) for d in API_SERVER_SANS_DNS]
                sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in API_SERVER_SANS_IP]
                builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            cert = builder.sign(ca_key, hashes.SHA256())
            _write(self.path(f"{stem}.key"), _pem_key(key), private=True)
            _write(self.path(f"{stem}.crt"), cert.public_bytes(serialization.Encoding.PEM))

        issue("apiserver", "kube-apiserver", (), server=True)
        for ident in (ADMIN, CONTROLLER_MANAGER, SCHEDULER, KUBELET):
            issue(ident.file_stem, ident.common_name, ident.organizations, server=False)
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write(self.path("sa.key"), _pem_key(sa_key), private=True)
        _write(
            self.path("sa.pub"),
            sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        )
        _write(self.path("ca.key"), _pem_key(ca_key), private=True)
        _write(self.path("ca.crt"), ca_cert.public_bytes(serialization.Encoding.PEM))  # last: marks completion
        return self
