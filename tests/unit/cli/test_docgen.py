"""The bash completion and the man page come from the parser: every command, every option."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from walvault.cli.docgen import bash_script, man_page_text
from walvault.cli.main import COMMANDS

WALVAULT = str(Path(sys.executable).parent / "walvault")


def test_the_man_page_names_every_command_and_option() -> None:
    page = man_page_text()
    assert page.startswith(".TH WALVAULT 1 ")
    for command in COMMANDS:
        assert command.replace("-", "\\-") in page, command
    for option in ("--recovery-owner", "--bwlimit", "--target-time", "--socket"):
        assert option.replace("-", "\\-") in page, option
    assert "\n." + "." not in page  # no line that roff would take for a request by accident


def _complete(script: Path, *words: str) -> list[str]:
    quoted = " ".join(f"'{w}'" for w in words)
    program = (
        f"source '{script}'; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; _walvault; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash_completes_commands_options_choices_and_servers(tmp_path: Path) -> None:
    script = tmp_path / "walvault.bash"
    script.write_text(bash_script())
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert {"recover", "restore"} <= set(_complete(script, WALVAULT, "re"))
    assert "--recovery-owner" in _complete(script, WALVAULT, "recover", "--rec")
    assert _complete(script, WALVAULT, "list-files", "--target", "s") == ["standalone"]
    conf = tmp_path / "w.conf"
    conf.write_text(
        f"[walvault]\nwalvault_home = {tmp_path}\n\n[main]\nconninfo = host=x\n\n"
        "[other]\nconninfo = host=y\n"
    )
    assert _complete(script, WALVAULT, "-c", str(conf), "check", "") == ["main", "other", "all"]
    assert "latest" in _complete(script, WALVAULT, "-c", str(conf), "keep", "main", "")


def test_diagnose_masks_secret_options_and_passwords_in_text() -> None:
    from walvault.cli.diagnose import mask_secrets

    document = {
        "config": {
            "aws_sse_customer_key": "c2VjcmV0LWtleQ==",
            "aws_sse_kms_key_id": "arn:aws:kms:key/1",
            "conninfo": "host=h password=*****",
            "description": "main",
        },
        "status": {"last_line": {"message": ["FATAL: password hunter2 refused", "ok"]}},
    }
    masked = mask_secrets(document, ["hunter2"])
    assert masked["config"]["aws_sse_customer_key"] == "*****"
    assert masked["config"]["aws_sse_kms_key_id"] == "arn:aws:kms:key/1"  # an id, not a secret
    assert masked["config"]["description"] == "main"
    assert masked["status"]["last_line"]["message"] == ["FATAL: password ***** refused", "ok"]
