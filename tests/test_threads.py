"""The CPU thread policy: what the user asked for wins, a resumed run keeps its count, else the idle cores."""

from __future__ import annotations

import subprocess
import sys
import time

import torch
from conftest import tiny_fit

from lit_interp.threads import available_cores, busy_elsewhere, choose_threads


def test_the_choice_follows_the_order_of_who_asked(monkeypatch):
    for name in ("LIT_INTERP_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("lit_interp.threads.busy_elsewhere", lambda: 0)  # a quiet machine
    assert choose_threads(None).threads == available_cores()
    assert choose_threads(None, world_size=available_cores() * 4).threads == 1  # cores shared by ranks
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads(None).threads == 3
    assert choose_threads(None, resumed=2).threads == 2
    monkeypatch.setenv("LIT_INTERP_THREADS", "5")
    assert choose_threads(None, resumed=2).threads == 5
    assert choose_threads(4, resumed=2).threads == 4


def test_a_run_records_its_thread_count_and_a_resume_keeps_it(capsys, monkeypatch):
    for name in ("LIT_INTERP_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    threads = torch.get_num_threads()
    try:
        tiny_fit("prev_token_digits", "--trainer.max_steps=2", "--threads=2", "--trainer.callbacks=[]")
        last = "lightning_logs/version_0/checkpoints/last.ckpt"
        assert torch.load(last, weights_only=False)["lit_interp"]["threads"] == 2
        torch.set_num_threads(1)
        capsys.readouterr()
        tiny_fit("prev_token_digits", "--trainer.max_steps=4", "--ckpt_path", "last", "--trainer.callbacks=[]")
        assert "2 threads (the resumed run's, so it continues bit for bit)" in capsys.readouterr().err
        assert torch.load(last, weights_only=False)["lit_interp"]["threads"] == 2
    finally:
        torch.set_num_threads(threads)


def test_a_run_takes_only_the_cores_other_processes_leave_idle(monkeypatch):
    for name in ("LIT_INTERP_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("lit_interp.threads.available_cores", lambda world_size=1: 8)
    for busy, threads in ((None, 8), (0, 8), (3, 5), (7, 1), (30, 1)):
        monkeypatch.setattr("lit_interp.threads.busy_elsewhere", lambda busy=busy: busy)
        choice = choose_threads(None)
        assert choice.threads == threads, (busy, choice)
        assert ("thread(s) of other processes running" in choice.reason) == (threads < 8)
    assert choose_threads(3).threads == 3  # an explicit count is never second-guessed


def test_busy_loops_are_seen_and_a_finished_process_is_not():
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.5)
        spinning = busy_elsewhere()
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    after = busy_elsewhere()
    assert spinning >= 2 and spinning - after >= 2, (spinning, after)  # the load average would count them a minute
