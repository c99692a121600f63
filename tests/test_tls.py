"""
HTTPS: the real server on an C{ssl:} endpoint with a self-signed certificate.
"""

import datetime
import ipaddress
import os

import treq
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from twisted.internet import reactor, ssl
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from tests.support import LOCALHOST, ServerProcess


def self_signed(directory: str) -> tuple[str, str, bytes]:
    """
    Write a key and a certificate for 127.0.0.1; return their paths and the
    certificate's PEM.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LOCALHOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(LOCALHOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path = os.path.join(directory, "key.pem")
    cert_path = os.path.join(directory, "cert.pem")
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    with open(cert_path, "wb") as f:
        f.write(pem)
    return key_path, cert_path, pem


class TLSTests(TestCase):
    """
    C{--port ssl:...} serves the API over HTTPS.
    """

    timeout = 60

    async def test_https(self) -> None:
        """A client trusting the self-signed certificate logs in, posts and reads
        the list over HTTPS, and the relay answers there too."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        key_path, cert_path, pem = self_signed(directory)
        server = ServerProcess(
            [
                "-n",
                "--pidfile=",
                "gameserver",
                "--port",
                f"ssl:0:interface={LOCALHOST}:privateKey={key_path}:certKey={cert_path}",
            ]
        )
        await server.start()
        self.addCleanup(server.stop)

        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        trust = ssl.Certificate.loadPEM(pem)
        agent = Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=trust), pool=pool)
        http = treq.client.HTTPClient(agent)
        url = f"https://{LOCALHOST}:{server.port}"

        response = await http.get(url + "/4711/login")
        key = (await response.content()).decode()
        self.assertEqual(response.code, 200)
        response = await http.post(f"{url}/2/score?sessionkey={key}", data=b"1500")
        self.assertEqual(response.code, 200)
        response = await http.get(url + "/2/highscorelist")
        self.assertEqual(await response.content(), b"4711=1500")
        response = await http.post(url + "/relay", data=b"0,alice,*,*,*")
        self.assertTrue((await response.content()).startswith(b"0/0/"))
