"""``stackgate restart``: what it refuses before it sends anything (the restart itself: tests/e2e/test_workers_restart.py)."""

from __future__ import annotations

import subprocess
import sys

from gateway.cli import main


def test_a_missing_pid_file_is_named_with_what_writes_it(tmp_path, capsys):
    assert main(["restart", "--pid-file", str(tmp_path / "none.pid")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'none.pid'}: cannot read the pid file" in err and "stackgate run --pid-file" in err


def test_a_pid_file_without_a_process_id_is_refused(tmp_path, capsys):
    pid_file = tmp_path / "x.pid"
    pid_file.write_text("hello\n")
    assert main(["restart", "--pid-file", str(pid_file)]) == 1
    assert f'{pid_file}: holds "hello", not a process id' in capsys.readouterr().err


def test_a_process_that_is_not_stackgate_is_never_signalled(capsys):
    # By default SIGUSR2 ends a process: a stale pid file naming another program must not.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert main(["restart", "--pid", str(other.pid)]) == 1
        assert f"process {other.pid} is not stackgate run" in capsys.readouterr().err
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_process_that_is_gone_is_reported(capsys):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert main(["restart", "--pid", str(gone.pid)]) == 1
    assert f"no process {gone.pid}: is the gateway running?" in capsys.readouterr().err
