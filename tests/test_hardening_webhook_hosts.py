"""Alert webhooks on link-local and cloud metadata addresses are refused unless allowed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from driftloop.core.config import AlertsConfig


def hook(url: str) -> dict:
    return {"name": "ops", "url": url, "secret_env": "HOOK_SECRET"}


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[fe80::1]:8080/x",
    ],
)
def test_metadata_and_link_local_hosts_are_refused_by_default(url):
    with pytest.raises(ValidationError, match="link-local or cloud metadata address"):
        AlertsConfig(webhooks=[hook(url)])
    assert AlertsConfig(webhooks=[hook(url)], allow_link_local=True).webhooks[0].url == url


def test_ordinary_hosts_pass():
    for url in ("https://hooks.slack.com/services/x", "http://127.0.0.1:9000/h", "http://10.0.0.5/h"):
        assert AlertsConfig(webhooks=[hook(url)]).webhooks
