"""Incomplete multipart uploads of an S3 store: listed and aborted with boto3.

obstore has no API for ListMultipartUploads or AbortMultipartUpload, so these two requests
go through boto3, imported only here (cleaning up after a killed writer: cron, delete) and
configured from the same :class:`~walvault.storage.s3config.S3Settings` as the driver.
obstore itself aborts an upload whose source fails, so only a killed writer leaves uploads
behind.  Without boto3 the error says how else to clean them (a bucket lifecycle rule).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from walvault.storage.base import StorageError, check_prefix
from walvault.storage.s3 import count

if TYPE_CHECKING:
    from walvault.storage.s3 import S3Storage


def abort_incomplete_uploads(storage: S3Storage, prefix: str) -> int:
    """Abort every incomplete multipart upload under ``prefix``; return how many."""
    check_prefix(prefix)
    location = storage.location
    full = f"{location.prefix}/{prefix}" if location.prefix else prefix
    try:
        client = _boto_client(storage)
        aborted = 0
        pages = client.get_paginator("list_multipart_uploads").paginate(
            Bucket=location.bucket, Prefix=full
        )
        for page in pages:
            for upload in page.get("Uploads", []):
                client.abort_multipart_upload(
                    Bucket=location.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                aborted += 1
                count("ABORT")
            count("LIST")
    except StorageError:
        raise
    except Exception as exc:  # botocore's ClientError, EndpointConnectionError...
        count("LIST", ok=False)
        raise StorageError(
            f"S3 ListMultipartUploads/AbortMultipartUpload {storage.url(prefix)} failed: "
            f"{storage.reason(exc) if str(exc) else type(exc).__name__}"
        ) from None
    return aborted


def _boto_client(storage: S3Storage) -> Any:
    """A boto3 S3 client with the driver's endpoint, region, credentials and timeouts."""
    try:
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]
    except ImportError:
        raise StorageError(
            f"cannot clean incomplete uploads under {storage.url()}: boto3 is not installed "
            "(pip install boto3, or give the bucket a lifecycle rule that aborts "
            "incomplete multipart uploads)"
        ) from None
    settings = storage.settings
    config = Config(
        region_name=settings.region,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        retries={"max_attempts": settings.retries + 1, "mode": "standard"},
        s3={"addressing_style": "virtual" if settings.virtual_hosted else "path"},
        user_agent_extra="walvault",
    )
    kwargs: dict[str, Any] = {"config": config}
    if settings.endpoint is not None:
        kwargs["endpoint_url"] = settings.endpoint
    if settings.access_key_id is not None:
        kwargs["aws_access_key_id"] = settings.access_key_id
        kwargs["aws_secret_access_key"] = settings.secret_access_key
        kwargs["aws_session_token"] = settings.session_token or None
    return boto3.session.Session().client("s3", **kwargs)
