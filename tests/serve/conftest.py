"""A server on 127.0.0.1 (a free port) around the shared tiny bundle (tests/conftest.py);
its limits and the HTTP helpers are in tests/support/http.py. Every request in
tests/serve goes to the loopback address."""

import pytest

from tests.support.http import TEST_LIMITS


@pytest.fixture(scope="session")
def stamper(tmp_path_factory):
    """C2PA signing with a test chain of this test session's own."""
    from omni_img.provenance.chain import local_chain_credentials
    from omni_img.provenance.stamp import Stamper

    return Stamper(local_chain_credentials(tmp_path_factory.mktemp("chain")))


@pytest.fixture(scope="session")
def server_url(bundle, stamper):
    from omni_img.serve.app import create_app
    from omni_img.serve.running import background_server

    with background_server(create_app(bundle, stamper, TEST_LIMITS)) as url:
        yield url


@pytest.fixture
def client(server_url):
    import httpx

    with httpx.Client(base_url=server_url, timeout=120) as http:
        yield http
