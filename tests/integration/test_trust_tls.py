"""TLS to the server over TCP (ssl-mode, ssl-ca) against a real MariaDB with a certificate
signed by a CA made here: verified against the right CA the login goes over TLS, against
another CA nothing is sent, and a server without TLS is refused where TLS is required.
"""

import os
import subprocess

import pytest

from quiesce.base.config import Target
from quiesce.base.errors import ConnectError
from quiesce.server import db

SECRET = "Tls-Secret"
ADDRESS = "127.0.0.1"


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)


def _make_ca(directory, name):
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", name + ".key", "-out", name + ".pem", "-days", "2", "-subj", "/CN=quiesce test " + name,
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=directory)
    return os.path.join(directory, name + ".pem")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """{'ca', 'other_ca', 'cert', 'key'}: a CA, a server certificate it signed for 127.0.0.1,
    and an unrelated CA."""
    directory = str(tmp_path_factory.mktemp("pki"))
    ca = _make_ca(directory, "ca")
    other = _make_ca(directory, "other")
    for name, address in (("server", ADDRESS), ("elsewhere", "192.0.2.7")):
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + address, cwd=directory)
        with open(os.path.join(directory, name + ".ext"), "w") as handle:
            handle.write("subjectAltName=IP:%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                         "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
                         % address)
        _openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", name + ".pem", "-days", "2", "-extfile", name + ".ext", cwd=directory)
    return {"ca": ca, "other_ca": other, "directory": directory}


def _serve_tls(server, pki, name="server"):
    key = os.path.join(pki["directory"], name)
    server.restart(options={"ssl-ca": pki["ca"], "ssl-cert": key + ".pem", "ssl-key": key + ".key"})
    server.create_user("qtls", SECRET, grants=("PROCESS",), host=ADDRESS)
    return server


@pytest.fixture
def tls_server(mariadb, pki):
    """The server with a certificate for 127.0.0.1 signed by pki's CA."""
    return _serve_tls(mariadb, pki)


def _target(server, **tls):
    return Target(name="default", socket=None, host=ADDRESS, port=server.port, user="qtls", password=SECRET,
                  position_file=None, **tls)


def _cipher(conn):
    return conn.query("SHOW SESSION STATUS LIKE 'Ssl_cipher'")[0]["Value"]


@pytest.mark.parametrize("mode", ("verify-ca", "verify-identity"))
def test_verified_tls_with_the_right_ca(tls_server, pki, driver, mode):
    conn = db.connect(_target(tls_server, ssl_mode=mode, ssl_ca=pki["ca"]), driver, 10.0)
    try:
        assert _cipher(conn), "the session is not encrypted"
    finally:
        conn.close()


def test_a_certificate_from_another_ca_is_refused_before_the_login(tls_server, pki, driver):
    with pytest.raises(ConnectError) as caught:
        db.connect(_target(tls_server, ssl_mode="verify-ca", ssl_ca=pki["other_ca"]), driver, 10.0)
    message = str(caught.value)
    assert "certificate" in message and "ssl-ca" in message and "\n" not in message, message
    assert SECRET not in message


def test_verify_identity_refuses_a_certificate_for_another_address(mariadb, pki, driver):
    server = _serve_tls(mariadb, pki, "elsewhere")
    db.connect(_target(server, ssl_mode="verify-ca", ssl_ca=pki["ca"]), driver, 10.0).close()
    with pytest.raises(ConnectError) as caught:
        db.connect(_target(server, ssl_mode="verify-identity", ssl_ca=pki["ca"]), driver, 10.0)
    assert "does not verify" in str(caught.value) and "host" in str(caught.value), caught.value


def test_required_tls_refuses_a_server_without_it(mariadb, driver):
    mariadb.create_user("qtls", SECRET, grants=("PROCESS",), host=ADDRESS)
    with pytest.raises(ConnectError) as caught:
        db.connect(_target(mariadb, ssl_mode="required"), driver, 10.0)
    assert "TLS" in str(caught.value) and "ssl-mode" in str(caught.value)


def test_default_mode_still_connects_without_tls(mariadb, driver):
    mariadb.create_user("qtls", SECRET, grants=("PROCESS",), host=ADDRESS)
    conn = db.connect(_target(mariadb), driver, 10.0)
    try:
        assert not _cipher(conn)
    finally:
        conn.close()
