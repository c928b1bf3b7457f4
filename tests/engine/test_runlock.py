"""RunLock: one writer per run folder, stale locks taken over, failed starts leave no folder."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from pointclora.engine.runlock import LOCK_NAME, RunLock, RunLockedError, run_lock


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid  # exited and reaped: no process has this PID (until the kernel reuses it, far later)


def test_second_writer_gets_an_error_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pointclora.engine.runlock import RunLock
            lock = RunLock({str(run)!r}, command="trainer A").acquire()
            print("locked", flush=True)
            sys.stdin.readline()
            lock.release()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError) as info:
            RunLock(run, command="trainer B --resume").acquire()
        msg = str(info.value)
        assert f"is being written by process {holder.pid} on" in msg and "'trainer A'" in msg
        assert "use another --output" in msg
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=30) == 0
    finally:
        holder.kill()
    with RunLock(run, command="trainer B") as lock:  # free again once the holder released it
        assert json.loads((run / LOCK_NAME).read_text())["command"] == "trainer B" and lock.held
    assert not (run / LOCK_NAME).exists()


def test_same_process_twice_and_release_only_own_lock(tmp_path):
    a = RunLock(tmp_path).acquire()
    with pytest.raises(RunLockedError, match="already locked by this process"):
        RunLock(tmp_path).acquire()
    a.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    pid = _dead_pid()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": os.uname().nodename, "command": "old run"}))
    with pytest.warns(UserWarning, match=rf"taking over the lock of process {pid} \('old run'"):
        lock = RunLock(tmp_path).acquire()
    assert lock.took_over["pid"] == pid and json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()


def test_pid_reused_by_another_process_is_stale_but_other_hosts_are_not(tmp_path):
    me = {"pid": os.getppid(), "host": os.uname().nodename, "proc_start": 1}  # alive, but started at another time
    assert RunLock.is_stale(me)
    other = {"pid": _dead_pid(), "host": "elsewhere.example", "command": "x"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(other))
    with pytest.raises(RunLockedError, match=r"on elsewhere.example .*If you are sure it no longer runs, delete"):
        RunLock(tmp_path).acquire()
    (tmp_path / LOCK_NAME).write_text("{garbage")
    with pytest.raises(RunLockedError, match="unreadable lock file"):
        RunLock(tmp_path).acquire()


def test_failed_start_leaves_no_run_folder(tmp_path):
    run = tmp_path / "runs" / "exp1"
    with pytest.raises(ValueError, match="bad data"):
        with run_lock(run) as lock:
            (run / "config.yaml").write_text("x: 1\n")
            assert lock.created
            raise ValueError("bad data")
    assert not run.exists()
    # after mark_started a failure keeps the folder (its logs explain the failure) and frees the lock
    with pytest.raises(KeyboardInterrupt):
        with run_lock(run) as lock:
            (run / "history.jsonl").write_text("{}\n")
            lock.mark_started()
            raise KeyboardInterrupt
    assert (run / "history.jsonl").exists() and not (run / LOCK_NAME).exists()
    # a folder that existed before (a --resume) is never removed
    with pytest.raises(RuntimeError):
        with run_lock(run):
            raise RuntimeError("resume failed")
    assert (run / "history.jsonl").exists()
