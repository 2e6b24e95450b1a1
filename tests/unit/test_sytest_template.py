"""The SyTest config template is a config trioserver accepts.

SyTest's plugin fills in the placeholders and starts the server; an unknown or misspelt key
stops trioserver at start, which SyTest reports as every test failing. This keeps the
template in step with `trioserver.config`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from trioserver.config import config_from_mapping

TEMPLATE = Path(__file__).parents[2] / "tools" / "sytest" / "trioserver.toml.in"
PLACEHOLDERS = {
    "@NAME@": "localhost:39100",
    "@HS_DIR@": "/tmp/sytest-hs-0",
    "@BIND@": "127.0.0.1",
    "@PORT@": "39100",
    "@CERT@": "/tmp/sytest-hs-0/tls.crt",
    "@KEY@": "/tmp/sytest-hs-0/tls.key",
    "@CA@": "/tmp/sytest/keys/ca.crt",
    "@IDX@": "0",
}


def test_sytest_template_is_a_valid_config(tmp_path: Path) -> None:
    text = TEMPLATE.read_text()
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    assert "@" not in text.replace("reg_secret", "")
    config = config_from_mapping(tomllib.loads(text), base_dir=tmp_path)
    # 51media's URL-preview test fetches from SyTest's own HTTPS server on loopback.
    assert config.media.url_preview_enabled
    assert config.media.url_preview_ip_range_blocklist == ()
    assert not config.media.url_preview_verify_tls
