"""The status document never carries a configured password, whatever text it came in."""

from __future__ import annotations

from walvault.web.snapshot import scrub_all


def test_scrub_all_masks_every_text_and_keeps_their_number() -> None:
    conninfos = ["host=db user=a password=s3cr3t-one", "postgresql://b:pa55word@db/postgres"]
    texts = [
        "",
        "FATAL: password s3cr3t-one was rejected",
        "line with\0a NUL",
        "pa55word and s3cr3t-one twice: pa55word",
        "nothing here",
    ]
    masked = scrub_all(texts, conninfos)
    assert len(masked) == len(texts)
    assert masked[0] == "" and masked[4] == "nothing here"
    assert masked[2] == "line with a NUL"
    for text in masked:
        assert "s3cr3t-one" not in text and "pa55word" not in text
    assert masked[1] == "FATAL: password ***** was rejected"
    assert scrub_all(texts, []) == texts
