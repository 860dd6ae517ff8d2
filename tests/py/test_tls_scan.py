"""The TLS listener, scanned with sslyze: only TLS 1.2 and 1.3, every accepted suite
forward-secret (ECDHE) with an AEAD cipher, no compression, no client-initiated
renegotiation; and plain HTTP on the TLS port gets a closed connection."""

import socket
from urllib.parse import urlparse

from sslyze import (
    ScanCommand,
    ScanCommandAttemptStatusEnum,
    Scanner,
    ServerNetworkLocation,
    ServerScanRequest,
    ServerScanStatusEnum,
)

PROTOCOLS = {
    ScanCommand.SSL_2_0_CIPHER_SUITES: "ssl_2_0_cipher_suites",
    ScanCommand.SSL_3_0_CIPHER_SUITES: "ssl_3_0_cipher_suites",
    ScanCommand.TLS_1_0_CIPHER_SUITES: "tls_1_0_cipher_suites",
    ScanCommand.TLS_1_1_CIPHER_SUITES: "tls_1_1_cipher_suites",
    ScanCommand.TLS_1_2_CIPHER_SUITES: "tls_1_2_cipher_suites",
    ScanCommand.TLS_1_3_CIPHER_SUITES: "tls_1_3_cipher_suites",
}
AEAD = ("_GCM_", "CHACHA20_POLY1305")


def _scan(port):
    location = ServerNetworkLocation(hostname="localhost", port=port, ip_address="127.0.0.1")
    commands = set(PROTOCOLS) | {ScanCommand.TLS_COMPRESSION, ScanCommand.SESSION_RENEGOTIATION}
    scanner = Scanner()
    scanner.queue_scans([ServerScanRequest(server_location=location, scan_commands=commands)])
    (result,) = list(scanner.get_results())
    assert result.scan_status == ServerScanStatusEnum.COMPLETED, result.connectivity_error_trace
    return result.scan_result


def _attempt(scan, attr):
    attempt = getattr(scan, attr)
    assert attempt.status == ScanCommandAttemptStatusEnum.COMPLETED, (attr, attempt.error_trace)
    return attempt.result


def test_only_modern_tls_with_forward_secret_aead_suites(daemon):
    scan = _scan(urlparse(daemon.url).port)
    accepted = {attr: _attempt(scan, attr).accepted_cipher_suites for attr in PROTOCOLS.values()}
    for old in ("ssl_2_0_cipher_suites", "ssl_3_0_cipher_suites",
                "tls_1_0_cipher_suites", "tls_1_1_cipher_suites"):
        assert accepted[old] == [], f"{old}: {[s.cipher_suite.name for s in accepted[old]]}"
    assert accepted["tls_1_3_cipher_suites"], "TLS 1.3 must be offered"
    assert accepted["tls_1_2_cipher_suites"], "TLS 1.2 must be offered"
    for s in accepted["tls_1_2_cipher_suites"]:
        name = s.cipher_suite.name
        assert name.startswith("TLS_ECDHE_"), name
        assert any(a in name for a in AEAD), name
        assert s.ephemeral_key is not None, name
    for s in accepted["tls_1_3_cipher_suites"]:
        # TLS 1.3 suites are all AEAD with (EC)DHE key exchange.
        assert any(a in s.cipher_suite.name for a in AEAD), s.cipher_suite.name
    assert not _attempt(scan, "tls_compression").supports_compression
    reneg = _attempt(scan, "session_renegotiation")
    assert not reneg.is_vulnerable_to_client_renegotiation_dos


def test_plain_http_on_the_tls_port_is_closed(daemon):
    port = urlparse(daemon.url).port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        except ConnectionResetError:
            pass
    # No HTTP answer: at most a TLS alert record (content type 21), then the close.
    assert not got.startswith(b"HTTP/"), got[:80]
    assert got == b"" or got[0] == 21, got[:80]
