"""Where an S3 store is and how to reach it: ``s3://`` URLs and :class:`S3Settings`.

Pure logic (no network, no obstore): :func:`parse_s3_url` checks a location, and
:meth:`S3Settings.from_options` turns configuration options plus the environment into one
typed record, which :func:`obstore_arguments` translates for obstore's ``S3Store``.  Every
S3 default lives here (the option table in :mod:`walvault.config.options` declares the
names with no default: "None" means "the driver's default").

Options (Barman 3.20's names where Barman has one, so a Barman configuration keeps working):

==========================  =============================================================
``aws_endpoint_url``        the endpoint of an S3-compatible store (walvault); else the
                            ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` variables, else
                            the profile's ``endpoint_url``, else AWS itself
``aws_allow_http``          plain http to a non-loopback endpoint (walvault, default off)
``aws_addressing_style``    ``auto`` (virtual-hosted for AWS, path-style for a custom
                            endpoint), ``path`` or ``virtual`` (barman-cloud's
                            ``--addressing-style``)
``aws_region``              (Barman) else ``AWS_REGION``, ``AWS_DEFAULT_REGION``, the
                            profile's ``region``, ``us-east-1``
``aws_profile``             (Barman) a profile of ``~/.aws/credentials``/``~/.aws/config``
``aws_connect_timeout``     seconds to connect (walvault, default 5)
``aws_read_timeout``        (Barman) seconds a request may go without receiving a byte
                            (default 60, botocore's)
``aws_request_timeout``     seconds one request may take, body included (walvault, 900)
``aws_retries``             retries of a failed request, with exponential back-off and
                            jitter (walvault, default 5)
``aws_retry_timeout``       seconds after the first try past which nothing is retried
                            (walvault, default 120)
``aws_checksum_algorithm``  ``sha256`` (default), ``crc64nvme`` or ``none``: the
                            ``x-amz-checksum-*`` sent with every upload (walvault)
``aws_encryption``          (Barman) ``AES256`` or ``aws:kms`` server-side encryption
``aws_sse_kms_key_id``      (Barman) the KMS key, with ``aws_encryption = aws:kms``
``aws_sse_customer_key``    (Barman) SSE-C: ``file:///abs/path`` of a base64 256-bit key
``cloud_delete_batch_size`` (Barman) keys per DeleteObjects request, 1-1000 (1000)
==========================  =============================================================

Credentials, in this order (the first that applies wins):

1. ``aws_profile`` set in the configuration: that profile's static keys (it must have them);
2. ``AWS_ACCESS_KEY_ID`` + ``AWS_SECRET_ACCESS_KEY`` (+ ``AWS_SESSION_TOKEN``);
3. the profile named by ``AWS_PROFILE``, else a ``[default]`` profile with static keys;
4. obstore's own chain: web identity (``AWS_WEB_IDENTITY_TOKEN_FILE`` + ``AWS_ROLE_ARN``,
   i.e. EKS IRSA), ECS/EKS container credentials (``AWS_CONTAINER_CREDENTIALS_*``), then
   the EC2 instance metadata service (IMDSv2 only).

Profiles are read with :mod:`configparser` (``AWS_SHARED_CREDENTIALS_FILE``,
``AWS_CONFIG_FILE``): static keys, ``region`` and ``endpoint_url`` only.  A profile that
relies on SSO, ``credential_process``, ``role_arn``/``source_profile`` or
``web_identity_token_file`` is refused with one line saying so (not supported yet).
Secrets never appear in ``repr``, messages or logs.
"""

from __future__ import annotations

import base64
import configparser
import ipaddress
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from walvault.errors import ConfigError
from walvault.storage.base import KEY_CHARACTERS

#: defaults of the options above
DEFAULT_REGION = "us-east-1"
DEFAULT_CONNECT_TIMEOUT = 5
DEFAULT_READ_TIMEOUT = 60
DEFAULT_REQUEST_TIMEOUT = 900
DEFAULT_RETRIES = 5
DEFAULT_RETRY_TIMEOUT = 120
DEFAULT_CHECKSUM = "sha256"
MAX_DELETE_BATCH = 1000
#: objects up to this size are one PUT (with ``If-None-Match: *`` when create-only, held in
#: memory); bigger ones, and streams that grow past it, are multipart uploads
DEFAULT_MULTIPART_THRESHOLD = 64 << 20
#: part size and parts in flight of a multipart upload (memory: about size x concurrency)
DEFAULT_PART_SIZE = 16 << 20
DEFAULT_UPLOAD_CONCURRENCY = 4
#: S3's floor for every part but the last
MIN_PART_SIZE = 5 << 20

#: every option this module reads (declared in walvault.config.options)
S3_OPTIONS = (
    "aws_endpoint_url",
    "aws_allow_http",
    "aws_addressing_style",
    "aws_region",
    "aws_profile",
    "aws_connect_timeout",
    "aws_read_timeout",
    "aws_request_timeout",
    "aws_retries",
    "aws_retry_timeout",
    "aws_checksum_algorithm",
    "aws_encryption",
    "aws_sse_kms_key_id",
    "aws_sse_customer_key",
    "cloud_delete_batch_size",
)

_LOOPBACK_NAMES = ("localhost",)
_REGION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
_BUCKET_RULES = (
    "3 to 63 lower-case letters, digits, '.' and '-', starting and ending with a letter or "
    "a digit, no '..', not an IP address"
)
_BAD_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BAD_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
#: profile settings that need a credential provider walvault does not have
_UNSUPPORTED_PROFILE_KEYS = (
    "sso_session",
    "sso_start_url",
    "sso_account_id",
    "credential_process",
    "role_arn",
    "source_profile",
    "web_identity_token_file",
)
#: environment variables obstore's own chain reads, passed on explicitly from ``environ``
_CHAIN_VARIABLES = {
    "AWS_WEB_IDENTITY_TOKEN_FILE": "web_identity_token_file",
    "AWS_ROLE_ARN": "role_arn",
    "AWS_ROLE_SESSION_NAME": "role_session_name",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "container_credentials_relative_uri",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI": "container_credentials_full_uri",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": "container_authorization_token_file",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT": "metadata_endpoint",
}


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/prefix``: a bucket and the key prefix (no slashes at its ends)."""

    bucket: str
    prefix: str = ""

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key_url(self, key: str = "") -> str:
        """The ``s3://`` URL of a key relative to the prefix (for messages)."""
        base = self.url
        return f"{base}/{key}" if key else base


def is_s3_url(text: str) -> bool:
    """True when ``text`` is meant as an S3 location (starts with ``s3://``)."""
    return text[:5].lower() == "s3://"


def parse_s3_url(text: str) -> S3Location:
    """``s3://BUCKET[/PATH]`` -> :class:`S3Location`; :class:`ConfigError` when invalid."""
    if not is_s3_url(text):
        raise ConfigError(f"invalid S3 URL '{text}': accepted: s3://BUCKET[/PATH]")
    rest = text[5:]
    if any(c in rest for c in "?#@:\\") or any(c.isspace() for c in rest):
        raise ConfigError(
            f"invalid S3 URL '{_shown_url(text)}': accepted: s3://BUCKET[/PATH] with no "
            "credentials, port, query or fragment"
        )
    bucket, _, path = rest.partition("/")
    check_bucket_name(bucket)
    path = path.strip("/")
    if path:
        parts = path.split("/")
        if not KEY_CHARACTERS.issuperset(path) or any(p in ("", ".", "..") for p in parts):
            raise ConfigError(
                f"invalid path '{path}' in S3 URL '{text}': accepted: letters, digits and "
                "._-@+= in '/'-separated parts (no empty, '.' or '..' part)"
            )
    return S3Location(bucket, path)


def check_bucket_name(bucket: str) -> str:
    """``bucket`` if it follows S3's rules for general-purpose buckets, else ConfigError."""
    bad = (
        not _BUCKET.match(bucket)
        or ".." in bucket
        or bucket.startswith(_BAD_BUCKET_PREFIXES)
        or bucket.endswith(_BAD_BUCKET_SUFFIXES)
        or _is_ip_address(bucket)
    )
    if bad:
        raise ConfigError(f"invalid S3 bucket name '{bucket}': accepted: {_BUCKET_RULES}")
    return bucket


@dataclass(frozen=True)
class S3Settings:
    """Everything the S3 driver needs besides the location; build it with :meth:`from_options`.

    Secrets (``secret_access_key``, ``session_token``, ``sse_customer_key``) are kept out of
    ``repr``; :meth:`secrets` lists them for masking.
    """

    endpoint: str | None
    region: str
    allow_http: bool
    virtual_hosted: bool
    connect_timeout: float
    read_timeout: float
    request_timeout: float
    retries: int
    retry_timeout: float
    checksum_algorithm: str | None
    delete_batch_size: int
    #: where the credentials come from, for messages: "environment", "profile 'x' (file)",
    #: "obstore's chain (web identity, container, instance metadata)"
    credentials_source: str
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    encryption: str | None = None
    sse_kms_key_id: str | None = None
    sse_customer_key: str | None = field(default=None, repr=False)
    #: obstore configuration keys for the credential chain (web identity, containers, IMDS)
    chain: Mapping[str, str] = field(default_factory=dict)
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD
    part_size: int = DEFAULT_PART_SIZE
    upload_concurrency: int = DEFAULT_UPLOAD_CONCURRENCY

    def secrets(self) -> list[str]:
        """Every secret value held, for masking free text."""
        return [s for s in (self.secret_access_key, self.session_token, self.sse_customer_key) if s]

    @classmethod
    def from_options(
        cls,
        options: Mapping[str, object],
        environ: Mapping[str, str] | None = None,
    ) -> S3Settings:
        """Settings from configuration ``options`` and ``environ`` (default: ``os.environ``).

        ``options`` maps option names (see the module docstring) to raw text as written in
        the configuration, or to values already parsed by the option table's parsers (what
        the configuration loader produces); missing or None means "the default".  Raises
        :class:`ConfigError` with one line naming the option and what is accepted.
        """
        env = os.environ if environ is None else environ
        opt = _Options(options)
        profile = _select_profile(opt, env)
        explicit_endpoint = opt.text("aws_endpoint_url")
        endpoint_source = "aws_endpoint_url"
        endpoint = explicit_endpoint
        for variable in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
            if endpoint is None and env.get(variable):
                endpoint, endpoint_source = env[variable], variable
        if endpoint is None and profile is not None and profile.values.get("endpoint_url"):
            endpoint = profile.values["endpoint_url"]
            endpoint_source = f"endpoint_url of AWS profile '{profile.name}'"
        allow_http_option = bool(opt.value("aws_allow_http"))
        if endpoint is not None:
            endpoint = _check_endpoint(endpoint, endpoint_source, allow_http_option)
        style = opt.text("aws_addressing_style") or "auto"
        virtual = endpoint is None if style == "auto" else style == "virtual"

        region = opt.text("aws_region")
        for variable in ("AWS_REGION", "AWS_DEFAULT_REGION"):
            if region is None and env.get(variable):
                region = env[variable]
        if region is None and profile is not None:
            region = profile.values.get("region") or None
        region = region or DEFAULT_REGION
        if not _REGION.match(region):
            raise ConfigError(
                f"invalid AWS region '{region}': accepted: letters, digits, '-' and '_'"
            )

        creds = _credentials(opt, env, profile)
        checksum = opt.text("aws_checksum_algorithm") or DEFAULT_CHECKSUM
        encryption, kms_key, customer_key = _encryption(opt)
        batch = opt.value("cloud_delete_batch_size")
        batch_size = MAX_DELETE_BATCH if batch is None else int(str(batch))
        if not 1 <= batch_size <= MAX_DELETE_BATCH:
            raise ConfigError(
                f"invalid value '{batch_size}' for option 'cloud_delete_batch_size': "
                f"accepted: 1 to {MAX_DELETE_BATCH}"
            )
        chain = {} if creds.access_key_id else _chain(env)
        return cls(
            endpoint=endpoint,
            region=region,
            allow_http=endpoint is not None and endpoint.startswith("http://"),
            virtual_hosted=virtual,
            connect_timeout=opt.number("aws_connect_timeout", DEFAULT_CONNECT_TIMEOUT),
            read_timeout=opt.number("aws_read_timeout", DEFAULT_READ_TIMEOUT),
            request_timeout=opt.number("aws_request_timeout", DEFAULT_REQUEST_TIMEOUT),
            retries=int(opt.number("aws_retries", DEFAULT_RETRIES)),
            retry_timeout=opt.number("aws_retry_timeout", DEFAULT_RETRY_TIMEOUT),
            checksum_algorithm=None if checksum == "none" else checksum,
            delete_batch_size=batch_size,
            credentials_source=creds.source,
            access_key_id=creds.access_key_id,
            secret_access_key=creds.secret_access_key,
            session_token=creds.session_token,
            encryption=encryption,
            sse_kms_key_id=kms_key,
            sse_customer_key=customer_key,
            chain=chain,
        )


def obstore_arguments(location: S3Location, settings: S3Settings) -> dict[str, Any]:
    """The keyword arguments of ``obstore.store.S3Store`` for ``location`` and ``settings``.

    Everything is explicit (obstore would otherwise also read ``AWS_*`` variables itself,
    and these win over them).
    """
    config: dict[str, Any] = {
        "region": settings.region,
        "virtual_hosted_style_request": settings.virtual_hosted,
        "imdsv1_fallback": False,
    }
    if settings.endpoint is not None:
        config["endpoint"] = settings.endpoint
    if settings.checksum_algorithm is not None:
        config["checksum_algorithm"] = settings.checksum_algorithm
    if settings.access_key_id is not None:
        config["access_key_id"] = settings.access_key_id
        config["secret_access_key"] = settings.secret_access_key
        if settings.session_token:
            config["token"] = settings.session_token
    else:
        config.update(settings.chain)
    if settings.encryption is not None:
        config["server_side_encryption"] = settings.encryption
    if settings.sse_kms_key_id is not None:
        config["sse_kms_key_id"] = settings.sse_kms_key_id
    if settings.sse_customer_key is not None:
        config["server_side_encryption"] = "sse-c"
        config["sse_customer_key_base64"] = settings.sse_customer_key
    return {
        "bucket": location.bucket,
        "prefix": location.prefix or None,
        "config": config,
        "client_options": {
            "allow_http": settings.allow_http,
            "connect_timeout": timedelta(seconds=settings.connect_timeout),
            "read_timeout": timedelta(seconds=settings.read_timeout),
            "timeout": timedelta(seconds=settings.request_timeout),
            "user_agent": "walvault",
        },
        "retry_config": {
            "max_retries": settings.retries,
            "retry_timeout": timedelta(seconds=settings.retry_timeout),
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=15),
                "base": 2,
            },
        },
    }


# ---------------------------------------------------------------- helpers


class _Options:
    """Option values, raw text parsed with the option table's own parsers."""

    def __init__(self, options: Mapping[str, object]) -> None:
        self._options = options

    def value(self, name: str) -> object:
        raw = self._options.get(name)
        if not isinstance(raw, str):
            return raw
        raw = raw.strip()
        if raw == "":
            return None
        from walvault.config.options import OPTIONS_BY_NAME

        parser = OPTIONS_BY_NAME[name].parser
        if parser is None:
            return raw
        try:
            return parser(raw)
        except ValueError as exc:
            raise ConfigError(f"invalid value '{raw}' for option '{name}': {exc}") from None

    def text(self, name: str) -> str | None:
        value = self.value(name)
        return None if value is None else str(value)

    def number(self, name: str, default: float) -> float:
        value = self.value(name)
        return default if value is None else float(str(value))


def _shown_url(text: str) -> str:
    """``text`` with any ``user:password@`` replaced (never echo credentials)."""
    return re.sub(r"//[^/@]*@", "//*****@", text)


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_endpoint(endpoint: str, source: str, allow_http: bool) -> str:
    shown = _shown_url(endpoint)
    try:
        parts = urllib.parse.urlsplit(endpoint.strip())
        port = parts.port
    except ValueError:
        parts, port = None, None
    accepted = "accepted: http(s)://HOST[:PORT] with no path, credentials, query or fragment"
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise ConfigError(f"invalid S3 endpoint '{shown}' ({source}): {accepted}")
    host = parts.hostname
    if parts.scheme == "http" and not allow_http and not _is_loopback(host):
        raise ConfigError(
            f"S3 endpoint '{shown}' ({source}) is plain http: allowed only for a loopback "
            "host (127.0.0.1, ::1, localhost) or with 'aws_allow_http = on'"
        )
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    return f"{parts.scheme}://{netloc}"


@dataclass(frozen=True)
class _Profile:
    name: str
    values: Mapping[str, str]
    files: str


@dataclass(frozen=True)
class _Credentials:
    source: str
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None


def _aws_files(env: Mapping[str, str]) -> tuple[str, str]:
    home = env.get("HOME") or os.path.expanduser("~")
    credentials = env.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.join(
        home, ".aws", "credentials"
    )
    config = env.get("AWS_CONFIG_FILE") or os.path.join(home, ".aws", "config")
    return os.path.expanduser(credentials), os.path.expanduser(config)


def _read_ini(path: str) -> configparser.RawConfigParser | None:
    if not os.path.exists(path):
        return None
    parser = configparser.RawConfigParser(default_section="\x00none")
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        # configparser quotes the offending line, which may hold a key: say where only
        raise ConfigError(f"cannot read AWS file '{path}': {first.split(':')[0]}") from None
    return parser


def _load_profile(name: str, env: Mapping[str, str]) -> _Profile | None:
    """The settings of profile ``name`` from both AWS files (credentials file first)."""
    cred_path, config_path = _aws_files(env)
    values: dict[str, str] = {}
    found: list[str] = []
    config = _read_ini(config_path)
    section = name if name == "default" else f"profile {name}"
    if config is not None:
        for candidate in (section, name):
            if config.has_section(candidate):
                values.update(config.items(candidate))
                found.append(config_path)
                break
    credentials = _read_ini(cred_path)
    if credentials is not None and credentials.has_section(name):
        values.update(credentials.items(name))
        found.append(cred_path)
    if not found:
        return None
    return _Profile(name, values, " and ".join(found))


def _select_profile(opt: _Options, env: Mapping[str, str]) -> _Profile | None:
    explicit = opt.text("aws_profile")
    named = explicit or env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE")
    if named:
        profile = _load_profile(named, env)
        if profile is None:
            cred_path, config_path = _aws_files(env)
            how = "aws_profile" if explicit else "AWS_PROFILE"
            raise ConfigError(
                f"AWS profile '{named}' ({how}) is in neither '{cred_path}' nor '{config_path}'"
            )
        return profile
    return _load_profile("default", env)


def _credentials(opt: _Options, env: Mapping[str, str], profile: _Profile | None) -> _Credentials:
    explicit = opt.text("aws_profile") is not None
    if not explicit and env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return _Credentials(
            "environment (AWS_ACCESS_KEY_ID)",
            env["AWS_ACCESS_KEY_ID"],
            env["AWS_SECRET_ACCESS_KEY"],
            env.get("AWS_SESSION_TOKEN") or env.get("AWS_SECURITY_TOKEN") or None,
        )
    if profile is not None:
        key = profile.values.get("aws_access_key_id")
        secret = profile.values.get("aws_secret_access_key")
        unsupported = [k for k in _UNSUPPORTED_PROFILE_KEYS if k in profile.values]
        if key and secret:
            return _Credentials(
                f"AWS profile '{profile.name}' ({profile.files})",
                key,
                secret,
                profile.values.get("aws_session_token") or None,
            )
        named = explicit or bool(env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE"))
        if unsupported:
            raise ConfigError(
                f"AWS profile '{profile.name}' ({profile.files}) uses {', '.join(unsupported)}, "
                "which walvault does not support: give the profile static keys, or use "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, web identity "
                "(AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN), container or instance "
                "credentials"
            )
        if named and (key or secret):
            raise ConfigError(
                f"AWS profile '{profile.name}' ({profile.files}) has only one of "
                "aws_access_key_id and aws_secret_access_key"
            )
    return _Credentials("obstore's chain (web identity, container, instance metadata)")


def _chain(env: Mapping[str, str]) -> dict[str, str]:
    return {key: env[var] for var, key in _CHAIN_VARIABLES.items() if env.get(var)}


def _encryption(opt: _Options) -> tuple[str | None, str | None, str | None]:
    encryption = opt.text("aws_encryption")
    kms_key = opt.text("aws_sse_kms_key_id")
    customer = opt.text("aws_sse_customer_key")
    if kms_key and encryption != "aws:kms":
        raise ConfigError("aws_sse_kms_key_id needs 'aws_encryption = aws:kms'")
    if customer and (kms_key or encryption):
        raise ConfigError(
            "aws_sse_customer_key (SSE-C) cannot be used together with aws_encryption "
            "or aws_sse_kms_key_id"
        )
    key_b64 = _customer_key(customer) if customer else None
    if encryption == "aes256":
        encryption = "AES256"  # the option table folds choices to lower case
    return encryption, kms_key, key_b64


def _customer_key(uri: str) -> str:
    accepted = "accepted: file:///ABSOLUTE/PATH of a file holding a base64 256-bit key"
    if not uri.startswith("file://"):
        raise ConfigError(f"invalid aws_sse_customer_key '{uri}': {accepted}")
    path = uri[len("file://") :]
    if not os.path.isabs(path):
        raise ConfigError(f"invalid aws_sse_customer_key '{uri}': {accepted}")
    try:
        with open(path, "rb") as handle:
            raw = handle.read().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read aws_sse_customer_key '{path}': {exc.strerror}") from None
    try:
        key = base64.b64decode(raw, validate=True)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigError(f"aws_sse_customer_key '{path}' does not hold a base64 256-bit key")
    return base64.b64encode(key).decode("ascii")
