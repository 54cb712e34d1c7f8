"""S3 locations and settings: URL rules, endpoint and http rules, region and credential chain,
encryption options, and what obstore is given (pure: nothing here opens a connection)."""

from __future__ import annotations

import base64
import os
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from walvault.config.options import OPTIONS_BY_NAME
from walvault.errors import ConfigError
from walvault.storage.s3config import (
    DEFAULT_READ_TIMEOUT,
    S3_OPTIONS,
    S3Location,
    S3Settings,
    obstore_arguments,
    parse_s3_url,
)

KEYS = {"AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": "env-secret-value"}


def settings(options: dict[str, object] | None = None, **env: str) -> S3Settings:
    return S3Settings.from_options(options or {}, {"HOME": "/nonexistent", **env})


# ---------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://my-bucket", "my-bucket", ""),
        ("s3://my-bucket/", "my-bucket", ""),
        ("s3://my.bucket.01/barman", "my.bucket.01", "barman"),
        ("s3://abc/a/b/c/", "abc", "a/b/c"),
        ("S3://abc/x", "abc", "x"),
    ],
)
def test_valid_s3_urls(url: str, bucket: str, prefix: str) -> None:
    location = parse_s3_url(url)
    assert (location.bucket, location.prefix) == (bucket, prefix)
    assert location.key_url("pg/wals/x") == (
        f"s3://{bucket}/{prefix + '/' if prefix else ''}pg/wals/x"
    )


@pytest.mark.parametrize(
    "url",
    [
        "s3://",
        "s3://ab",
        "s3://Upper",
        "s3://-start",
        "s3://end-",
        "s3://a..b",
        "s3://192.168.1.1",
        "s3://xn--bucket",
        "s3://bucket-s3alias",
        "s3://" + "a" * 64,
        "s3://under_score",
        "s3://bucket/a//b",
        "s3://bucket/a/../b",
        "s3://bucket/sp ace",
        "s3://bucket/q?x=1",
        "s3://bucket#frag",
        "s3://user:secret@bucket/p",
        "s3://bucket:9000/p",
        "http://bucket/p",
        "/var/lib/walvault",
    ],
)
def test_invalid_s3_urls_are_one_line_errors(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_s3_url(url)
    message = str(caught.value)
    assert "\n" not in message and "accepted" in message
    assert "secret" not in message


# ---------------------------------------------------------------- options


def test_every_s3_option_is_declared_and_defaults_to_the_driver() -> None:
    for name in S3_OPTIONS:
        assert name in OPTIONS_BY_NAME, name
        assert OPTIONS_BY_NAME[name].default is None, name  # defaults live in s3config


def test_raw_text_and_parsed_values_give_the_same_settings() -> None:
    raw = settings({"aws_read_timeout": "7", "aws_allow_http": "on", "aws_retries": "0"}, **KEYS)
    typed = settings({"aws_read_timeout": 7, "aws_allow_http": True, "aws_retries": 0}, **KEYS)
    assert raw == typed
    assert (raw.read_timeout, raw.retries) == (7, 0)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"aws_read_timeout": "soon"}, "aws_read_timeout"),
        ({"aws_retries": "-1"}, "aws_retries"),
        ({"aws_addressing_style": "dns"}, "aws_addressing_style"),
        ({"aws_checksum_algorithm": "md5"}, "aws_checksum_algorithm"),
        ({"cloud_delete_batch_size": "1001"}, "cloud_delete_batch_size"),
        ({"aws_region": "eu west"}, "region"),
        ({"aws_encryption": "rot13"}, "aws_encryption"),
    ],
)
def test_invalid_option_values_are_one_line_errors(options: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(options, **KEYS)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_defaults() -> None:
    s = settings(**KEYS)
    assert s.endpoint is None and s.region == "us-east-1"
    assert s.virtual_hosted and not s.allow_http
    assert s.read_timeout == DEFAULT_READ_TIMEOUT
    assert s.checksum_algorithm == "sha256" and s.delete_batch_size == 1000


# ---------------------------------------------------------------- endpoints


@pytest.mark.parametrize(
    "endpoint",
    ["http://127.0.0.1:9000", "http://localhost:9000/", "http://[::1]:9000", "http://127.0.0.2"],
)
def test_plain_http_is_allowed_for_loopback(endpoint: str) -> None:
    s = settings({"aws_endpoint_url": endpoint}, **KEYS)
    assert s.allow_http and not s.virtual_hosted  # path-style for a custom endpoint
    assert s.endpoint == endpoint.rstrip("/")


def test_plain_http_elsewhere_needs_aws_allow_http() -> None:
    with pytest.raises(ConfigError) as caught:
        settings({"aws_endpoint_url": "http://minio.internal:9000"}, **KEYS)
    assert "aws_allow_http" in str(caught.value) and "\n" not in str(caught.value)
    s = settings({"aws_endpoint_url": "http://minio.internal:9000", "aws_allow_http": "on"}, **KEYS)
    assert s.allow_http
    s = settings({"aws_endpoint_url": "https://minio.internal:9000"}, **KEYS)
    assert not s.allow_http


def test_http_rule_applies_to_the_environment_endpoint_too() -> None:
    with pytest.raises(ConfigError, match="AWS_ENDPOINT_URL"):
        settings(AWS_ENDPOINT_URL="http://10.1.2.3:9000", **KEYS)


@pytest.mark.parametrize(
    "endpoint",
    [
        "ftp://host",
        "https://",
        "https://user:hunter2@host",
        "https://host/path",
        "https://host?x=1",
        "https://host:notaport",
        "host:9000",
    ],
)
def test_invalid_endpoints_are_refused_without_echoing_credentials(endpoint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings({"aws_endpoint_url": endpoint}, **KEYS)
    assert "hunter2" not in str(caught.value) and "\n" not in str(caught.value)


def test_endpoint_precedence() -> None:
    env = {**KEYS, "AWS_ENDPOINT_URL": "https://generic", "AWS_ENDPOINT_URL_S3": "https://s3only"}
    assert settings(**env).endpoint == "https://s3only"
    assert settings({"aws_endpoint_url": "https://option"}, **env).endpoint == "https://option"
    del env["AWS_ENDPOINT_URL_S3"]
    assert settings(**env).endpoint == "https://generic"


def test_addressing_style() -> None:
    custom = {"aws_endpoint_url": "https://s3.example"}
    assert not settings(custom, **KEYS).virtual_hosted
    assert settings({**custom, "aws_addressing_style": "virtual"}, **KEYS).virtual_hosted
    assert not settings({"aws_addressing_style": "path"}, **KEYS).virtual_hosted


# ---------------------------------------------------------------- region


def test_region_precedence(tmp_path: Path) -> None:
    aws = _aws_files(tmp_path, config="[default]\nregion = ap-south-1\n")
    assert settings(**aws, **KEYS).region == "ap-south-1"
    assert settings(AWS_DEFAULT_REGION="eu-west-1", **aws, **KEYS).region == "eu-west-1"
    env = {"AWS_REGION": "eu-west-3", "AWS_DEFAULT_REGION": "eu-west-1", **aws, **KEYS}
    assert settings(**env).region == "eu-west-3"
    assert settings({"aws_region": "fr-par"}, **env).region == "fr-par"


# ---------------------------------------------------------------- credentials


def _aws_files(tmp_path: Path, credentials: str = "", config: str = "") -> dict[str, str]:
    cred = tmp_path / "credentials"
    conf = tmp_path / "config"
    cred.write_text(textwrap.dedent(credentials))
    conf.write_text(textwrap.dedent(config))
    return {"AWS_SHARED_CREDENTIALS_FILE": str(cred), "AWS_CONFIG_FILE": str(conf)}


PROFILES = """
    [default]
    aws_access_key_id = AKIDDEFAULT
    aws_secret_access_key = default-secret

    [backup]
    aws_access_key_id = AKIDBACKUP
    aws_secret_access_key = backup-secret
    aws_session_token = backup-token
"""


def test_environment_keys_come_before_profiles(tmp_path: Path) -> None:
    aws = _aws_files(tmp_path, PROFILES)
    s = settings(AWS_SESSION_TOKEN="env-token", **aws, **KEYS)
    assert (s.access_key_id, s.secret_access_key, s.session_token) == (
        "AKIDENV",
        "env-secret-value",
        "env-token",
    )
    assert s.credentials_source.startswith("environment")


def test_explicit_aws_profile_wins_over_environment_keys(tmp_path: Path) -> None:
    aws = _aws_files(tmp_path, PROFILES)
    s = settings({"aws_profile": "backup"}, **aws, **KEYS)
    assert (s.access_key_id, s.session_token) == ("AKIDBACKUP", "backup-token")
    assert "backup" in s.credentials_source


def test_aws_profile_variable_and_default_profile(tmp_path: Path) -> None:
    aws = _aws_files(tmp_path, PROFILES)
    assert settings(AWS_PROFILE="backup", **aws).access_key_id == "AKIDBACKUP"
    assert settings(**aws).access_key_id == "AKIDDEFAULT"


def test_profile_from_the_config_file_with_region_and_endpoint(tmp_path: Path) -> None:
    aws = _aws_files(
        tmp_path,
        config="""
        [profile store]
        region = garage
        endpoint_url = https://s3.garage.example
        aws_access_key_id = AKIDCONF
        aws_secret_access_key = conf-secret
        """,
    )
    s = settings({"aws_profile": "store"}, **aws)
    assert (s.region, s.endpoint, s.access_key_id) == (
        "garage",
        "https://s3.garage.example",
        "AKIDCONF",
    )


def test_missing_profile_is_an_error(tmp_path: Path) -> None:
    aws = _aws_files(tmp_path, PROFILES)
    with pytest.raises(ConfigError, match="'nope'"):
        settings({"aws_profile": "nope"}, **aws)
    with pytest.raises(ConfigError, match="AWS_PROFILE"):
        settings(AWS_PROFILE="nope", **aws)


def test_profiles_needing_sso_or_roles_are_refused_in_one_line(tmp_path: Path) -> None:
    aws = _aws_files(
        tmp_path,
        config="""
        [profile sso]
        sso_session = corp
        sso_account_id = 123456789012
        [profile role]
        role_arn = arn:aws:iam::123456789012:role/backup
        source_profile = default
        """,
    )
    for name, word in (("sso", "sso_session"), ("role", "role_arn")):
        with pytest.raises(ConfigError) as caught:
            settings({"aws_profile": name}, **aws)
        assert word in str(caught.value) and "not support" in str(caught.value)
        assert "\n" not in str(caught.value)


def test_unreadable_aws_file_does_not_echo_its_lines(tmp_path: Path) -> None:
    aws = _aws_files(tmp_path, "aws_secret_access_key = leaked-secret\n")
    with pytest.raises(ConfigError) as caught:
        settings({"aws_profile": "x"}, **aws)
    assert "leaked-secret" not in str(caught.value)


def test_without_keys_the_chain_is_passed_on(tmp_path: Path) -> None:
    env = {
        "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/token",
        "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/walvault",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x",
    }
    s = settings(**env)
    assert s.access_key_id is None and "chain" in s.credentials_source
    config = obstore_arguments(S3Location("bkt"), s)["config"]
    assert config["web_identity_token_file"] == "/var/run/secrets/token"
    assert config["role_arn"] == "arn:aws:iam::123456789012:role/walvault"
    assert config["container_credentials_relative_uri"] == "/v2/credentials/x"
    assert config["imdsv1_fallback"] is False  # IMDSv2 only
    assert "access_key_id" not in config


def test_secrets_stay_out_of_repr(tmp_path: Path) -> None:
    s = settings(AWS_SESSION_TOKEN="env-token", **KEYS)
    text = repr(s)
    assert "env-secret-value" not in text and "env-token" not in text
    assert set(s.secrets()) == {"env-secret-value", "env-token"}


# ---------------------------------------------------------------- encryption


def test_barman_encryption_options(tmp_path: Path) -> None:
    s = settings({"aws_encryption": "AES256"}, **KEYS)
    assert obstore_arguments(S3Location("b"), s)["config"]["server_side_encryption"] == "AES256"
    s = settings({"aws_encryption": "aws:kms", "aws_sse_kms_key_id": "arn:kms:k"}, **KEYS)
    config = obstore_arguments(S3Location("b"), s)["config"]
    assert (config["server_side_encryption"], config["sse_kms_key_id"]) == ("aws:kms", "arn:kms:k")
    with pytest.raises(ConfigError, match="aws:kms"):
        settings({"aws_sse_kms_key_id": "arn:kms:k"}, **KEYS)


def test_sse_c_key_from_a_file(tmp_path: Path) -> None:
    key = os.urandom(32)
    path = tmp_path / "key.b64"
    path.write_bytes(base64.b64encode(key) + b"\n")
    s = settings({"aws_sse_customer_key": f"file://{path}"}, **KEYS)
    config = obstore_arguments(S3Location("b"), s)["config"]
    assert config["server_side_encryption"] == "sse-c"
    assert base64.b64decode(config["sse_customer_key_base64"]) == key
    assert base64.b64encode(key).decode() not in repr(s)
    path.write_text("not base64!")
    with pytest.raises(ConfigError, match="256-bit"):
        settings({"aws_sse_customer_key": f"file://{path}"}, **KEYS)
    with pytest.raises(ConfigError, match="file:///"):
        settings({"aws_sse_customer_key": str(path)}, **KEYS)
    with pytest.raises(ConfigError, match="together"):
        settings({"aws_sse_customer_key": f"file://{path}", "aws_encryption": "AES256"}, **KEYS)


# ---------------------------------------------------------------- what obstore gets


def test_obstore_arguments() -> None:
    s = settings(
        {
            "aws_endpoint_url": "http://127.0.0.1:9000",
            "aws_connect_timeout": "3",
            "aws_read_timeout": "9",
            "aws_request_timeout": "30",
            "aws_retries": "4",
            "aws_retry_timeout": "40",
        },
        **KEYS,
    )
    args = obstore_arguments(S3Location("bkt", "a/b"), s)
    assert (args["bucket"], args["prefix"]) == ("bkt", "a/b")
    config = args["config"]
    assert config["endpoint"] == "http://127.0.0.1:9000"
    assert config["checksum_algorithm"] == "sha256"
    assert (config["access_key_id"], config["secret_access_key"]) == ("AKIDENV", "env-secret-value")
    assert config["virtual_hosted_style_request"] is False
    client = args["client_options"]
    assert client["allow_http"] is True
    assert client["connect_timeout"] == timedelta(seconds=3)
    assert client["read_timeout"] == timedelta(seconds=9)
    assert client["timeout"] == timedelta(seconds=30)
    retry = args["retry_config"]
    assert (retry["max_retries"], retry["retry_timeout"]) == (4, timedelta(seconds=40))
    none = settings({"aws_checksum_algorithm": "none"}, **KEYS)
    assert "checksum_algorithm" not in obstore_arguments(S3Location("bkt"), none)["config"]
    assert obstore_arguments(S3Location("bkt"), none)["prefix"] is None
