"""The CPU thread policy: what the user asked for wins, a resumed run keeps its count, small steps get one thread."""

from __future__ import annotations

import torch
from conftest import tiny_fit

from lit_interp.tasks.bos_ints import BosIntsModule
from lit_interp.tasks.prev_token_digits import PrevTokenDigitsModule
from lit_interp.threads import ONE_THREAD_BELOW_FLOPS, available_cores, choose_threads, step_flops

SMALL = PrevTokenDigitsModule(d_model=16).model.cfg
LARGE = BosIntsModule(n_ctx=50, d_vocab=300, d_model=64, d_head=64, attn_only=False, d_mlp=256).model.cfg


def test_the_choice_follows_the_order_of_who_asked(monkeypatch):
    for name in ("LIT_INTERP_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("os.getloadavg", lambda: (0.2, 0.2, 0.2))  # a quiet machine
    assert step_flops(SMALL, 64) < ONE_THREAD_BELOW_FLOPS < step_flops(LARGE, 256)
    assert choose_threads(None, SMALL, 64).threads == 1
    assert choose_threads(None, LARGE, 256).threads == available_cores()
    assert choose_threads(None, LARGE, 256, world_size=available_cores() * 4).threads == 1  # cores shared by ranks
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads(None, SMALL, 64).threads == 3
    assert choose_threads(None, SMALL, 64, resumed=2).threads == 2
    monkeypatch.setenv("LIT_INTERP_THREADS", "5")
    assert choose_threads(None, SMALL, 64, resumed=2).threads == 5
    assert choose_threads(4, SMALL, 64, resumed=2).threads == 4


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


def test_a_large_step_takes_only_the_cores_the_load_average_leaves_idle(monkeypatch):
    for name in ("LIT_INTERP_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("lit_interp.threads.available_cores", lambda world_size=1: 8)
    for load, threads in ((0.3, 8), (2.6, 5), (7.6, 1), (30.0, 1)):
        monkeypatch.setattr("os.getloadavg", lambda load=load: (load, load, load))
        choice = choose_threads(None, LARGE, 256)
        assert choice.threads == threads, (load, choice)
        assert ("busy (load average" in choice.reason) == (threads < 8)
    assert choose_threads(None, SMALL, 64).threads == 1
    assert choose_threads(3, LARGE, 256).threads == 3  # an explicit count is never second-guessed
