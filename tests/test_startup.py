"""What a run loads is decided by how far its message gets (pipeline.py's cost tiers).

Every message pays the start-up of its own process, so a module loaded on a
path that does not use it is paid by every such message.  These tests run the
installed pipe with Python's own import report (PYTHONPROFILEIMPORTTIME) and
name what must stay unloaded on the cheap paths; the benchmark (bench/) says
what each module costs.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

GATEWAY = "gateway@torokiki.net"

# Never for a mail decided from its headers or answered with the help text.
NOT_FOR_HELP = ("requests", "urllib3", "mailparser", "torokiki_pipe.stages.s5_understand.mime",
                "torokiki_pipe.stages.s5_understand.body", "torokiki_pipe.stages.s5_understand.htmltext",
                "torokiki_pipe.adapters.website", "http.client", "ssl", "html.parser", "mimetypes",
                "difflib", "torokiki_pipe.stages.s3_auth")    # the verdict on the From: off here
# Nor, for ignored mail, anything that answering takes.
NOT_FOR_IGNORED = NOT_FOR_HELP + ("filelock", "torokiki_pipe.adapters.journal", "torokiki_pipe.adapters.sendmail",
                                  "subprocess", "torokiki_pipe.stages.s5_understand.command",
                                  "torokiki_pipe.stages.s6_act", "torokiki_pipe.stages.s7_reply",
                                  "email.generator", "email.headerregistry", "json")


def mail(subject: str, *headers: str, msgid: str) -> bytes:
    lines = ["From: Kiri Tane <kiri@example.net>", f"To: {GATEWAY}", f"Subject: {subject}",
             f"Message-ID: {msgid}", "Date: Tue, 14 May 2024 08:12:24 +1200", *headers]
    return ("\n".join(lines) + "\n\nhello\n").encode()


def loaded(run_pipe, message: bytes) -> set[str]:
    done = run_pipe(message, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    names = set()
    for line in done.stderr.decode().splitlines():
        found = re.match(r"import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", line)
        if found:
            names.add(found[1])
    assert "torokiki_pipe.pipeline" in names, "the import report is empty: the test proves nothing"
    return names


def top_level(names: set[str]) -> set[str]:
    return names | {name.split(".")[0] for name in names}


@pytest.mark.parametrize("subject, headers, unwanted", [
    ("Out of office", ("Auto-Submitted: auto-replied",), NOT_FOR_IGNORED),
    ("help", (), NOT_FOR_HELP),
], ids=["ignored", "help"])
def test_a_cheap_path_loads_only_what_it_uses(run_pipe, pipe_env, smtp_sink, website, subject, headers, unwanted):
    names = top_level(loaded(run_pipe, mail(subject, *headers, msgid=f"<startup-{subject[:3]}@example.net>")))
    assert sorted(set(unwanted) & names) == []


def test_the_help_path_does_load_the_journal_and_the_reply(run_pipe, pipe_env, smtp_sink, website):
    # The other side of the same line: a help mail is answered exactly once.
    names = loaded(run_pipe, mail("help", msgid="<startup-journal@example.net>"))
    assert {"filelock", "torokiki_pipe.adapters.journal", "torokiki_pipe.stages.s7_reply"} <= names


def test_report_loads_nothing_of_the_pipe(pipe_program, tmp_path):
    # report reads logs/ only: its argparse comes from arguments.py, not from the pipe's modules.
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TOROKIKI_")}
    done = subprocess.run([pipe_program, "report", "--log-dir", str(tmp_path)], capture_output=True,
                          timeout=60, env={**environ, "PYTHONPROFILEIMPORTTIME": "1"})
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    names = set(re.findall(r"\|\s+(\S+)$", done.stderr.decode(), re.M))
    # cli loads the program with import_module, which the import report does not list: what
    # report itself imports (gzip, for rotated logs) shows that it ran and was reported.
    assert "gzip" in names
    assert sorted(n for n in names if n.startswith(("torokiki_pipe.stages.s", "torokiki_pipe.pipeline",
                                                    "torokiki_pipe.run", "torokiki_pipe.adapters"))
                  and n != "torokiki_pipe.stages.s8_record") == []
