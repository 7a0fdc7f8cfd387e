"""Every libpq parameter that carries a secret is masked, wherever a DSN is shown."""

from __future__ import annotations

import pytest

from hacontrol.io.dsn_params import SECRET_KEYS
from hacontrol.redact import MASK, is_secret_key, redact_dsn, redact_mapping, redact_text


@pytest.mark.parametrize("key", sorted(SECRET_KEYS))
def test_libpq_secret_parameters_are_masked(key: str) -> None:
    dsn = f"host=db.example {key}=c2VjcmV0LXZhbHVl port=5432"
    assert redact_dsn(dsn) == f"host=db.example {key}={MASK} port=5432"
    assert redact_text(f"connecting with {key}='c2VjcmV0LXZhbHVl'") == (
        f"connecting with {key}={MASK}"
    )
    assert is_secret_key(key)
    assert redact_mapping({key: "c2VjcmV0LXZhbHVl"}) == {key: MASK}


def test_paths_to_key_files_are_not_secrets() -> None:
    dsn = "host=h sslkey=/etc/hacontrol/client.key sslcert=/etc/hacontrol/client.crt"
    assert redact_dsn(dsn) == dsn
