"""The pretraining index shared per machine: columns round-trip, built once per launch however many processes ask,
epoch orders computed once, stale folders of killed runs removed, links refused, and nothing per row pickled."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import socket
from pathlib import Path

import numpy as np
import pytest

from glint.pretrain_data import EpochBatches, SaqtIndex, epoch_order
from glint.pretrain_index import SharedFolder, shared_order
from saqt.core.errors import OutputError
from saqt.label.row_index import ColumnWriter, open_columns
from saqt.label.sets import SaqtFiles


def _small_index(folder: Path) -> None:
    names = ColumnWriter(folder / "names")
    names.append(name=np.array([b"aa", b"bb"], "S2"))
    names.close({"name": "S2"})
    for part, rows in (("train", [0, 1, 2]), ("holdout", [])):
        w = ColumnWriter(folder / part)
        n = len(rows)
        w.append(
            file=np.zeros(n),
            row=np.array(rows),
            score=np.array([1.5, 2.5, 3.5][:n]),
            pristine=np.array([0, 1, 1][:n]),
            dist_type=np.array([1, 25, 3][:n]),
            level=np.array([5, 1, 2][:n]),
        )
        w.close()


def test_columns_round_trip_and_rows_read_back_as_written(tmp_path):
    _small_index(tmp_path)
    columns = open_columns(tmp_path / "train")
    assert isinstance(columns["score"], np.memmap) and columns["score"].dtype == np.float64
    index = SaqtIndex(SaqtFiles([], None, None, {}), tmp_path, "train")
    assert [index.image_id(k) for k in range(3)] == ["aa_01_05", "bb_25_01", "bb_03_02"]
    assert [index.score(k) for k in range(3)] == [1.5, 2.5, 3.5] and index.pristine_id(2) == "bb"
    assert len(SaqtIndex(SaqtFiles([], None, None, {}), tmp_path, "holdout")) == 0
    copy = pickle.loads(pickle.dumps(index))  # what a spawned loader worker receives: the folder, not the rows
    assert len(pickle.dumps(index)) < 2_000 and copy.image_id(1) == "bb_25_01"


def _ask(parent: str, queue, done) -> None:
    """A rank of one torchrun launch (same parent process, so the same session name), holding the index until every
    rank has it, as ranks hold it while they train."""
    os.environ.update({"LOCAL_RANK": "1", "TORCHELASTIC_RUN_ID": "x"})

    def build(folder: Path) -> None:
        with open(Path(parent) / "builds.log", "a") as log:
            log.write(f"{os.getpid()}\n")
        _small_index(folder)

    shared = SharedFolder(Path(parent) / "index", build)
    queue.put(str(shared.path))
    done.wait(120)


@pytest.mark.slow
def test_the_processes_of_one_launch_build_the_index_once_and_share_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    ctx = multiprocessing.get_context("spawn")
    queue, done = ctx.Queue(), ctx.Event()
    ranks = [ctx.Process(target=_ask, args=(str(tmp_path), queue, done)) for _ in range(3)]
    for p in ranks:
        p.start()
    paths = {queue.get(timeout=120) for _ in ranks}
    path = tmp_path / "index" / f"{socket.gethostname()}-{os.getpid()}-0"  # their parent: torchrun's agent
    assert paths == {str(path)} and len(open_columns(path / "train")["score"]) == 3
    done.set()
    for p in ranks:
        p.join()
    assert len((tmp_path / "builds.log").read_text().splitlines()) == 1 and not path.exists()  # gone with its builder


def test_a_private_folder_is_removed_with_its_owner_and_stale_ones_of_dead_runs_go(tmp_path):
    shared = SharedFolder(None, _small_index)
    path = shared.path
    assert (path / "train" / "columns.json").is_file()
    del shared
    assert not path.exists()
    parent = tmp_path / "index"
    dead = multiprocessing.get_context("spawn").Process(target=int)
    dead.start()
    dead.join()
    host = socket.gethostname()
    stale, alive, foreign = parent / f"{host}-{dead.pid}-0", parent / f"{host}-{os.getppid()}-0", parent / "notes-1-0"
    for folder in (stale, alive, foreign):
        folder.mkdir(parents=True)
    shared = SharedFolder(parent, _small_index)
    assert not stale.exists() and alive.is_dir() and foreign.is_dir() and (shared.path / "done").is_file()


def test_a_link_in_place_of_the_index_folder_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = tmp_path / "run"
    run.mkdir()
    (run / ".saqt-index").symlink_to(elsewhere)
    with pytest.raises(OutputError, match="is a link or not a folder"):
        SharedFolder(run / ".saqt-index", _small_index)
    assert not any(elsewhere.iterdir())


def test_an_epoch_order_is_computed_once_and_only_the_current_one_kept(tmp_path):
    calls = []

    def make(n, seed, epoch):
        calls.append(epoch)
        return epoch_order(n, seed, epoch)

    a = shared_order(tmp_path, 1000, 7, 0, make)
    b = shared_order(tmp_path, 1000, 7, 0, make)
    assert calls == [0] and np.array_equal(a, epoch_order(1000, 7, 0)) and np.array_equal(a, b)
    shared_order(tmp_path, 1000, 7, 1, make)
    assert calls == [0, 1] and [p.name for p in tmp_path.glob("order-*.npy")] == ["order-7-1.npy"]


@pytest.mark.parametrize(("n", "world", "batch"), [(1000, 1, 32), (1001, 3, 7), (10, 4, 8), (0, 2, 4), (9, 4, 2)])
def test_epoch_batches_know_their_number_without_listing_them(n, world, batch):
    """len() is what the progress bar and the step count use; it must equal the batches iterated, which stop at the
    last global batch that every rank can share (counted here by hand)."""
    expected = n // (batch * world) + (n % (batch * world) >= world)
    for rank in range(world):
        sampler = EpochBatches(epoch_order(n, 5, 0), rank, world, batch)
        assert len(sampler) == len(list(sampler)) == expected
