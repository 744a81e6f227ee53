"""``[[webhooks]]`` and ``[webhook_delivery]``: a wrong setting is one line naming the file, the
endpoint and the key; a good one is read as written."""

from __future__ import annotations

import pytest

from pvekvm.config import ConfigError, load_settings
from pvekvm.webhooks.signing import new_secret

GOOD = new_secret()
BASE = ('[database]\nurl = "mysql://root@127.0.0.1/x"\n[amqp]\nurl = "amqp://127.0.0.1/"\n'
        '[api.tokens]\nbrand = "sha256:00"\n')


def _load(tmp_path, text: str):
    path = tmp_path / "pvekvm.toml"
    path.write_text(BASE + text)
    return load_settings(path)


def test_endpoints_and_delivery_settings_are_read(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("AMQP_URL", raising=False)
    old = new_secret()
    s = _load(tmp_path, f'[[webhooks]]\nname = "w"\nurl = "http://127.0.0.1:9/h"\n'
              f'secrets = ["{GOOD}", "{old}"]\nevent_types = ["service.*"]\nscope = "brand"\n'
              '[webhook_delivery]\ntimeout_s = 3\napi_allowed_networks = ["10.0.0.0/8"]\n')
    (ep,) = s.webhooks.endpoints
    assert (ep.name, ep.secrets, ep.event_types, ep.scope) == ("w", (GOOD, old),
                                                               ("service.*",), "brand")
    assert s.webhooks.delivery.timeout_s == 3.0
    assert s.webhooks.delivery.api_allowed_networks == ("10.0.0.0/8",)


@pytest.mark.parametrize("text, says", [
    ('[[webhooks]]\nname = "w"\nurl = "http://h/"\nsecret = "whsec_c2hvcnQ="\n',
     "[[webhooks]] w secrets: a secret must hold 24 to 64 random bytes"),
    ('[[webhooks]]\nname = "w"\nurl = "http://h/"\nsecret = "abc"\n', "'whsec_'"),
    (f'[[webhooks]]\nname = "w"\nurl = "http://h/"\nsecret = "{GOOD}"\ncolour = 1\n',
     "unknown key 'colour'"),
    (f'[[webhooks]]\nname = "w"\nurl = "gopher://h/"\nsecret = "{GOOD}"\n', "w url:"),
    (f'[[webhooks]]\nname = "w"\nurl = "http://h/"\nsecret = "{GOOD}"\nscope = "nobody"\n',
     "w scope: expected the name of a billing token"),
    (f'[[webhooks]]\nname = "w"\nurl = "http://h/"\nsecret = "{GOOD}"\n'
     f'event_types = ["Service READY"]\n', "w event_types"),
    (f'[[webhooks]]\nname = "w"\nurl = "http://h/"\nsecret = "{GOOD}"\n' * 2,
     "a second endpoint of that name"),
    ('[webhook_delivery]\ntimeout_s = 10\nlease_s = 5\n', "[webhook_delivery] lease_s"),
    ('[webhook_delivery]\napi_allowed_networks = ["nope"]\n', "'nope' is not a network"),
    ('[webhook_delivery]\nretries = 3\n', "unknown key 'retries'"),
])
def test_a_wrong_webhook_setting_names_file_endpoint_and_key(tmp_path, text, says):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    assert "pvekvm.toml" in str(err.value) and says in str(err.value), str(err.value)

