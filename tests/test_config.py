import pytest

from torokiki_pipe import config

BASE = {"TOROKIKI_API_KEY": "k3y", "TOROKIKI_GATEWAY_ADDRESS": "gateway@torokiki.net"}


def test_defaults():
    settings = config.load(None, dict(BASE))
    assert settings.site_url == "http://torokiki.net"
    assert settings.api_url == settings.site_url
    assert settings.sendmail == ("/usr/sbin/sendmail", "-i")
    assert settings.max_message_bytes == 25 * 1024 * 1024
    assert "k3y" not in repr(settings)


def test_file_then_environment_wins(tmp_path):
    env = tmp_path / "gateway.env"
    env.write_text("TOROKIKI_API_KEY=from-file\nTOROKIKI_GATEWAY_ADDRESS=g@torokiki.net\n"
                   "TOROKIKI_SITE_URL=https://torokiki.net/\nTOROKIKI_LOG_DIR=logs\n"
                   "TOROKIKI_SENDMAIL='/usr/bin/msmtp -C \"/etc/my rc\"'\n")
    settings = config.load(str(env), {"TOROKIKI_API_KEY": "from-env"})
    assert settings.api_key == "from-env"
    assert settings.site_url == "https://torokiki.net"
    assert settings.sendmail == ("/usr/bin/msmtp", "-C", "/etc/my rc")
    assert settings.log_dir == tmp_path / "logs"      # relative to the file, not the cwd


def test_config_file_from_environment_variable(tmp_path):
    env = tmp_path / "x.env"
    env.write_text("TOROKIKI_API_KEY=a\nTOROKIKI_GATEWAY_ADDRESS=g@torokiki.net\n")
    assert config.load(None, {"TOROKIKI_PIPE_CONFIG": str(env)}).api_key == "a"


@pytest.mark.parametrize("change, words", [
    ({"TOROKIKI_API_KEY": ""}, "TOROKIKI_API_KEY"),
    ({"TOROKIKI_GATEWAY_ADDRESS": ""}, "TOROKIKI_GATEWAY_ADDRESS"),
    ({"TOROKIKI_GATEWAY_ADDRESS": "Torokiki <g@t.net>"}, "plain address"),
    ({"TOROKIKI_SENDMAIL": "sendmail -i"}, "full path"),
    ({"TOROKIKI_SENDMAIL": "/usr/sbin/sendmail 'unclosed"}, "cannot be split"),
    ({"TOROKIKI_HTTP_TIMEOUT": "soon"}, "number"),
    ({"TOROKIKI_HTTP_TIMEOUT": "5000"}, "between"),
    ({"TOROKIKI_MAX_MESSAGE_BYTES": "-1"}, "positive"),
    ({"TOROKIKI_SITE_URL": "torokiki.net"}, "http"),
    ({"TOROKIKI_API_URL": "ftp://x"}, "http"),
])
def test_unusable_settings_are_one_clear_line(change, words):
    with pytest.raises(config.ConfigError) as error:
        config.load(None, {**BASE, **change})
    assert words in str(error.value) and "\n" not in str(error.value)


def test_missing_explicit_file(tmp_path):
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(str(tmp_path / "absent.env"), dict(BASE))
