"""config.py: every value the gateway reads is checked once, and every problem is one ConfigError line.

The hostile values here are also fed through the installed pipe and `check`
in test_check.py; this file pins what each one means.
"""
import math

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from torokiki_pipe import config

BASE = {"TOROKIKI_API_KEY": "k3y", "TOROKIKI_GATEWAY_ADDRESS": "gateway@torokiki.net"}
FEW = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def load_with(**change):
    return config.load(None, {**BASE, **change})


def refused(**change) -> str:
    with pytest.raises(config.ConfigError) as error:
        load_with(**change)
    text = str(error.value)
    assert "\n" not in text and len(text) < 300, text      # one line, whole in Postfix's 300 characters
    return text


def test_defaults():
    settings = config.load(None, dict(BASE))
    assert settings.site_url == "http://torokiki.net"
    assert settings.api_url == settings.site_url
    assert settings.sendmail == ("/usr/sbin/sendmail", "-i")
    assert settings.max_message_bytes == 25 * 1024 * 1024
    assert settings.http_timeout == 30
    assert settings.give_up_after == 2 * 86400 and settings.journal_expire == 10 * 86400
    assert settings.reply_limit == config.ReplyLimit(20, 3600)
    assert settings.unknown_keys == ()
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
    assert words in refused(**change)


def test_missing_explicit_file(tmp_path):
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(str(tmp_path / "absent.env"), dict(BASE))


# --------------------------------------------------------------------------- numbers

# Every form Python's int() or float() would take but a person would not write,
# and every value outside a key's sane range.  nan once made the first 503 give up.
NOT_NUMBERS = ["nan", "NaN", "inf", "-inf", "infinity", "1e-300", "1e3", "1_000", "0x10", "0o7", "-5",
               "+5", "5.", ".5", "٣", "5 5", "½"]


@pytest.mark.parametrize("key", ["TOROKIKI_GIVE_UP_AFTER", "TOROKIKI_JOURNAL_EXPIRE", "TOROKIKI_HTTP_TIMEOUT",
                                 "TOROKIKI_MAX_MESSAGE_BYTES"])
@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_numbers_are_plain_decimals(key, value):
    text = refused(**{key: value})
    assert text.startswith(key + " ") and "must be" in text


@pytest.mark.parametrize("key, value", [
    ("TOROKIKI_GIVE_UP_AFTER", "0min"), ("TOROKIKI_GIVE_UP_AFTER", "0s"), ("TOROKIKI_GIVE_UP_AFTER", "0.5"),
    ("TOROKIKI_GIVE_UP_AFTER", "101d"), ("TOROKIKI_GIVE_UP_AFTER", "99999999999999999999d"),
    ("TOROKIKI_JOURNAL_EXPIRE", "59m"), ("TOROKIKI_JOURNAL_EXPIRE", "367d"),
    ("TOROKIKI_HTTP_TIMEOUT", "0"), ("TOROKIKI_HTTP_TIMEOUT", "0.5"), ("TOROKIKI_HTTP_TIMEOUT", "121"),
    ("TOROKIKI_MAX_MESSAGE_BYTES", "0"), ("TOROKIKI_MAX_MESSAGE_BYTES", "1023"),
    ("TOROKIKI_MAX_MESSAGE_BYTES", "1073741825"), ("TOROKIKI_MAX_MESSAGE_BYTES", "99999999999999999999"),
])
def test_numbers_outside_their_sane_range(key, value):
    assert refused(**{key: value}).startswith(key + " must be")


@pytest.mark.parametrize("text, seconds", [
    ("90", 90), ("1s", 1), ("30m", 1800), ("10min", 600), ("1.5h", 5400), ("2d", 172800), ("2 d", 172800),
    ("2D", 172800), ("1w", 604800), ("3 hours", 10800), (" 5 ", 5),
])
def test_durations(text, seconds):
    assert config.parse_duration(text) == seconds


def test_values_the_tests_and_tools_use_stay_valid():
    # grep tests/ bench/ devtools: every number they set.
    settings = load_with(TOROKIKI_GIVE_UP_AFTER="1s", TOROKIKI_HTTP_TIMEOUT="1", TOROKIKI_MAX_MESSAGE_BYTES="2000",
                         TOROKIKI_REPLY_LIMIT="2/hour")
    assert (settings.give_up_after, settings.http_timeout, settings.max_message_bytes) == (1, 1, 2000)
    assert load_with(TOROKIKI_HTTP_TIMEOUT="60", TOROKIKI_MAX_MESSAGE_BYTES=str(40 * 1024 * 1024)).http_timeout == 60
    assert load_with(TOROKIKI_REPLY_LIMIT="5/hour").reply_limit == config.ReplyLimit(5, 3600)
    assert load_with(TOROKIKI_REPLY_LIMIT="off").reply_limit.replies == 0


def test_journal_must_outlive_the_give_up_time():
    assert "TOROKIKI_JOURNAL_EXPIRE must be longer" in refused(TOROKIKI_GIVE_UP_AFTER="20d")
    assert load_with(TOROKIKI_GIVE_UP_AFTER="20d", TOROKIKI_JOURNAL_EXPIRE="20d").journal_expire == 20 * 86400


# --------------------------------------------------------------------------- reply limit

@pytest.mark.parametrize("text, limit", [
    ("20/hour", (20, 3600)), ("100/day", (100, 86400)), ("5/10min", (5, 600)), ("3/2h", (3, 7200)),
    ("5 / hour", (5, 3600)), ("1000/30d", (1000, 30 * 86400)), ("OFF", (0, 3600)), ("none", (0, 3600)),
])
def test_reply_limits(text, limit):
    assert config.parse_limit(text) == config.ReplyLimit(*limit)


@pytest.mark.parametrize("text, words", [
    ("99999999999/hour", "between 1 and 1000"), ("1001/day", "between 1 and 1000"),
    ("0/hour", "off: no limit"),           # once silently "no limit": say off
    ("5/0min", "between 1min and 30d"), ("5/30s", "between 1min and 30d"), ("5/31d", "between 1min and 30d"),
    ("5/nan", "like 20/hour"), ("5/1e-300s", "like 20/hour"), ("-1/hour", "like 20/hour"),
    ("inf/hour", "like 20/hour"), ("٣/hour", "like 20/hour"), ("5/1h2", "like 20/hour"), ("5", "like 20/hour"),
    ("1_0/hour", "like 20/hour"), ("5/fortnight", "like 20/hour"),
])
def test_reply_limits_refused(text, words):
    message = refused(TOROKIKI_REPLY_LIMIT=text)
    assert message.startswith("TOROKIKI_REPLY_LIMIT ") and words in message, message


# --------------------------------------------------------------------------- URLs

@pytest.mark.parametrize("key", ["TOROKIKI_SITE_URL", "TOROKIKI_API_URL"])
@pytest.mark.parametrize("value, words", [
    ("http://torokiki.net:99999", "out of range"),       # urlsplit(...).port raised later: a crash
    ("http://torokiki.net:65536", "out of range"),
    ("http://torokiki.net:-1", "not a usable URL"),
    ("http://torokiki.net:abc", "not a usable URL"),
    ("http://torokiki.net:0", "port 0"),
    ("http://[::1", "not a usable URL"),
    ("http://:80", "http://"),
    ("http://user:secret@torokiki.net", "user name or password"),
    ("http://torokiki.net/?x=1", "?query"),
    ("http://torokiki.net/#top", "#fragment"),
    ("http://torokïki.net", "xn--"),
    ("http://toro kiki.net", "without spaces"),
    ("http://toro\tkiki.net", "control or invisible"),     # inside: surrounding white space is trimmed
])
def test_unusable_urls(key, value, words):
    message = refused(**{key: value})
    assert message.startswith(key) and words in message, message
    assert "secret" not in message


def test_site_url_has_no_path_and_api_url_may():
    assert "without a path" in refused(TOROKIKI_SITE_URL="http://torokiki.net/gateway")
    settings = load_with(TOROKIKI_SITE_URL="https://torokiki.net:8443/", TOROKIKI_API_URL="http://127.0.0.1:8080/api/")
    assert (settings.site_url, settings.api_url) == ("https://torokiki.net:8443", "http://127.0.0.1:8080/api")


# --------------------------------------------------------------------------- text values

@pytest.mark.parametrize("key", config.SETTING_NAMES)
@pytest.mark.parametrize("bad", ["\n", "\r", "\t", "\x00", "\x7f", "\u200b", "\u00a0", "\u2028", "\x1b[31m"])
def test_no_value_holds_a_control_or_invisible_character(key, bad):
    value = {"TOROKIKI_API_KEY": "k3y", "TOROKIKI_SENDMAIL": "/usr/sbin/sendmail", "TOROKIKI_LOG_DIR": "/tmp/logs",
             "TOROKIKI_GATEWAY_ADDRESS": "g@torokiki.net", "TOROKIKI_SITE_URL": "http://torokiki.net"}.get(key, "xyz")
    message = refused(**{key: value[:2] + bad + value[2:]})
    assert message.startswith(key), message


@pytest.mark.parametrize("key", ["x b", "x\nb", "x\r\nX-Other: 1", "kéy", "k\x00y", "\ufeffkey", "k" * 5000])
def test_an_unusable_api_key_is_refused_and_never_shown(key):
    message = refused(TOROKIKI_API_KEY=key)
    assert message.startswith("TOROKIKI_API_KEY") and key.strip() not in message and "k3y" not in message


def test_surrounding_white_space_is_ignored():
    settings = load_with(TOROKIKI_API_KEY="  k3y \n", TOROKIKI_HTTP_TIMEOUT=" 5 ", TOROKIKI_REPLY_LIMIT=" 5/hour ")
    assert (settings.api_key, settings.http_timeout, settings.reply_limit.replies) == ("k3y", 5, 5)


@pytest.mark.parametrize("address", ["g@t.net\nBcc: x@example.net", "g@t.net, x@example.net", "a@b@c",
                                     "g@", "@t.net", "g@-t.net", "g@t.net.", "gé@t.net", "g @t.net", "<g@t.net>"])
def test_gateway_address_is_one_plain_address(address):
    assert refused(TOROKIKI_GATEWAY_ADDRESS=address).startswith("TOROKIKI_GATEWAY_ADDRESS")


def test_gateway_address_forms_that_work():
    for address in ("gateway@torokiki.net", "g@localhost", "torokiki+pipe@mail.example.org"):
        assert load_with(TOROKIKI_GATEWAY_ADDRESS=address).gateway_address == address


def test_too_long_values_are_refused():
    assert "longer than" in refused(TOROKIKI_LOG_DIR="/" + "x" * 5000)
    assert "longer than 100" in refused(TOROKIKI_API_CALLER_ID="x" * 101)


# --------------------------------------------------------------------------- the file

def write(tmp_path, text, name="t.env"):
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return str(path)


GOOD = "TOROKIKI_API_KEY=s3cret-key\nTOROKIKI_GATEWAY_ADDRESS=g@torokiki.net\n"


@pytest.mark.parametrize("text, lines", [
    ("TOROKIKI_REPLY_LIMIT: 5/hour\n", "line 3"),               # YAML habit
    ("TOROKIKI_REPLY_LIMIT=\"5/hour\nTOROKIKI_SYSLOG=mail\n", "line 3"),
    ("TOROKIKI_REPLY_LIMIT=\"5/hour\nTOROKIKI_SYSLOG=mail\nTOROKIKI_API_CALLER_ID=\"x\" y\n", "lines 3-5"),
    ("TOROKIKI_SYSLOG=mail\nbad line one\nbad line two\n", "lines 4, 5"),
    ("=5\n", "line 3"),
])
def test_a_line_dotenv_cannot_parse_is_an_error_naming_it(tmp_path, text, lines):
    with pytest.raises(config.ConfigError) as error:
        config.load(write(tmp_path, GOOD + text), {})
    message = str(error.value)
    assert lines in message and "cannot be parsed" in message, message
    assert "s3cret" not in message and "5/hour" not in message and "bad line" not in message


def test_an_unclosed_quote_before_the_key_does_not_silently_drop_it(tmp_path):
    # python-dotenv alone would skip to the next quote and report TOROKIKI_API_KEY "not set".
    text = ("TOROKIKI_SITE_URL='http://torokiki.net\nTOROKIKI_API_KEY=s3cret-key\n"
            "TOROKIKI_API_CALLER_ID='pipe' # the quote above ends here\nTOROKIKI_GATEWAY_ADDRESS=g@t.net\n")
    with pytest.raises(config.ConfigError, match="lines 1-3 cannot be parsed"):
        config.load(write(tmp_path, text), {})


def test_a_key_without_value_is_an_error(tmp_path):
    with pytest.raises(config.ConfigError, match=r"TOROKIKI_REPLY_LIMIT \(line 3\) has no '='"):
        config.load(write(tmp_path, GOOD + "TOROKIKI_REPLY_LIMIT\n"), {})


def test_a_byte_order_mark_is_not_part_of_the_first_key(tmp_path):
    assert config.load(write(tmp_path, b"\xef\xbb\xbf" + GOOD.encode()), {}).api_key == "s3cret-key"


def test_not_utf8_names_the_line_not_the_bytes(tmp_path):
    with pytest.raises(config.ConfigError, match="not UTF-8 text .line 2.") as error:
        config.load(write(tmp_path, GOOD.encode().replace(b"g@", b"\xff@")), {})
    assert "s3cret" not in str(error.value)


def test_a_huge_or_odd_file_is_refused(tmp_path):
    with pytest.raises(config.ConfigError, match="larger than"):
        config.load(write(tmp_path, GOOD + "#" * (2 * 1024 * 1024)), {})
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(str(tmp_path), {})                               # a folder
    with pytest.raises(config.ConfigError, match="larger than"):
        config.load("/dev/zero", {})                                 # endless: read at most 1 MB + 1


def test_interpolation_and_quotes_as_python_dotenv_reads_them(tmp_path):
    text = GOOD + "BASE=http://127.0.0.1:8080\nTOROKIKI_API_URL=${BASE}/api\nTOROKIKI_API_CALLER_ID='a # b'\n"
    settings = config.load(write(tmp_path, text), {})
    assert (settings.api_url, settings.api_caller_id) == ("http://127.0.0.1:8080/api", "a # b")


# --------------------------------------------------------------------------- unknown keys

def test_unknown_keys_are_listed_not_refused(tmp_path):
    text = GOOD + "TOROKIKI_REPLY_LIMT=5/hour\nTOROKIKI_IMAP_SERVER=imap.example\nOTHER=1\n"
    settings = config.load(write(tmp_path, text), {"TOROKIKI_PIPE_CONFIG": "x", "TOROKIKI_REFERENCE_API_KEY": "k",
                                                   "TOROKIKI_SYSLG": "mail"})
    assert settings.unknown_keys == ("TOROKIKI_REPLY_LIMT", "TOROKIKI_SYSLG")
    assert settings.reply_limit.replies == 20             # the typo left the default: `check` warns
    assert config.suggest("TOROKIKI_REPLY_LIMT") == "; did you mean TOROKIKI_REPLY_LIMIT?"
    assert config.suggest("TOROKIKI_SOMETHING_ELSE") == ""


def test_a_typo_in_a_required_key_is_named(tmp_path):
    text = "TOROKIKI_API_KY=s3cret-key\nTOROKIKI_GATEWAY_ADDRESS=g@torokiki.net\n"
    with pytest.raises(config.ConfigError, match=r"TOROKIKI_API_KEY is not set.*TOROKIKI_API_KY is: a typo") as error:
        config.load(write(tmp_path, text), {})
    assert "s3cret" not in str(error.value)


def test_the_environment_is_named_when_it_overrides_the_file(tmp_path):
    message = str(pytest.raises(config.ConfigError, config.load, write(tmp_path, GOOD),
                                {"TOROKIKI_GIVE_UP_AFTER": "nan"}).value)
    assert message.startswith("TOROKIKI_GIVE_UP_AFTER (from the environment) must be")


# --------------------------------------------------------------------------- anything at all

@FEW
@given(key=st.sampled_from(config.SETTING_NAMES), value=st.text(max_size=40))
def test_any_value_gives_settings_or_one_config_error(key, value):
    try:
        settings = load_with(**{key: value})
    except config.ConfigError as error:
        assert "\n" not in str(error) and "k3y" not in str(error)
        return
    for seconds in (settings.http_timeout, settings.give_up_after, settings.journal_expire,
                    settings.reply_limit.window):
        assert math.isfinite(seconds) and seconds >= 1
    assert 1024 <= settings.max_message_bytes <= 1024 ** 3
    assert 0 <= settings.reply_limit.replies <= 1000


@FEW
@given(text=st.text(alphabet=st.sampled_from("TOROKIKI_API_KEY=\"'\\ \n#${}x\t=:"), max_size=80))
def test_any_file_gives_settings_or_one_config_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("env") / "t.env"
    path.write_text(GOOD + text)
    try:
        config.load(str(path), {})
    except config.ConfigError as error:
        assert "\n" not in str(error)


@FEW
@given(value=st.text(max_size=30))
def test_parse_duration_is_finite_or_value_error(value):
    try:
        seconds = config.parse_duration(value)
    except ValueError:
        return
    assert math.isfinite(seconds) and seconds >= 0
