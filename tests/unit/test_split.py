"""temporal_split by EVAL_PROTOCOL.md, on cases computed by hand.

Protocol (ratios r = [0.8, 0.1, 0.1]):
    cnt = [int(r_i * n)]; cnt[0] = n - cnt[1] - cnt[2]
    for i in (1, 2): if cnt[0] <= 1: break; if 0 < r[-i] * n < 1: cnt[-i] += 1; cnt[0] -= 1

By hand:
    n=1:  int(.1)=0, int(.1)=0 -> [1,0,0]; cnt[0] <= 1 stops the loop        -> [1, 0, 0]
    n=2:  [2,0,0]; test: 0 < .2 < 1 -> [1,0,1]; cnt[0] = 1 stops             -> [1, 0, 1]
    n=3:  [3,0,0]; test .3 -> [2,0,1]; valid .3 -> [1,1,1]                    -> [1, 1, 1]
    n=5:  [5,0,0]; test .5 -> [4,0,1]; valid .5 -> [3,1,1]                    -> [3, 1, 1]
    n=9:  [9,0,0]; test .9 -> [8,0,1]; valid .9 -> [7,1,1]                    -> [7, 1, 1]
    n=10: int(1.0)=1 each -> [8,1,1]; 1.0 is not < 1, no bumps               -> [8, 1, 1]
    n=11: int(1.1)=1 each -> [9,1,1]                                          -> [9, 1, 1]
    n=20: int(2.0)=2 each -> [16,2,2]                                         -> [16, 2, 2]
"""

import numpy as np
import pandas as pd
import pytest

from segrec import ConfigError, holdout_split, load_interactions, temporal_split
from segrec.split import split_counts

HAND = {1: (1, 0, 0), 2: (1, 0, 1), 3: (1, 1, 1), 5: (3, 1, 1), 9: (7, 1, 1), 10: (8, 1, 1),
        11: (9, 1, 1), 20: (16, 2, 2)}


def log_with_lengths(lengths, seed=0) -> pd.DataFrame:
    """User ``n<len>`` has items ``n<len>-p0 .. p<len-1>`` at times 0..len-1, rows shuffled."""
    rows = [(f"n{n}", f"n{n}-p{j}", 1.0, 1000 + j) for n in lengths for j in range(n)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def part_items(part, user: str) -> list[str]:
    u = part.user_vocab.index([user])[0]
    return part.item_vocab.id(part.history(u)).tolist()


def test_split_counts_match_the_hand_computed_table():
    n = np.array(list(HAND))
    assert [tuple(r) for r in split_counts(n).tolist()] == list(HAND.values())


@pytest.mark.parametrize("n", list(HAND))
def test_each_user_is_cut_in_time_order(n):
    data = load_interactions(log_with_lengths(list(HAND)))
    split = temporal_split(data)
    c0, c1, c2 = HAND[n]
    items = [f"n{n}-p{j}" for j in range(n)]
    assert part_items(split.train, f"n{n}") == items[:c0]
    assert part_items(split.valid, f"n{n}") == items[c0 : c0 + c1]
    assert part_items(split.test, f"n{n}") == items[c0 + c1 :]


def test_parts_partition_the_data_and_share_vocabularies():
    data = load_interactions(log_with_lengths(list(HAND)))
    split = temporal_split(data)
    assert len(split.train) + len(split.valid) + len(split.test) == len(data) == sum(HAND)
    assert split.train.user_vocab is data.user_vocab is split.test.user_vocab
    assert split.valid.item_vocab is data.item_vocab
    fit = split.fit
    assert len(fit) == len(split.train) + len(split.valid)
    assert set(zip(fit.users.tolist(), fit.items.tolist(), strict=True)).isdisjoint(
        zip(split.test.users.tolist(), split.test.items.tolist(), strict=True))


def test_tied_timestamps_keep_file_order():
    # user t: five rows at the same second, in file order a..e -> train a,b,c; valid d; test e.
    # user m: ties inside a sequence: z(5) x(7) y(7) w(9) v(9) -> train z,x,y; valid w; test v
    frame = pd.DataFrame({
        "user_id": ["t"] * 5 + ["m"] * 5,
        "item_id": ["a", "b", "c", "d", "e", "w", "x", "v", "y", "z"],
        "timestamp": [50] * 5 + [9, 7, 9, 7, 5],
    })
    split = temporal_split(load_interactions(frame))
    assert part_items(split.train, "t") == ["a", "b", "c"]
    assert part_items(split.valid, "t") == ["d"]
    assert part_items(split.test, "t") == ["e"]
    assert part_items(split.train, "m") == ["z", "x", "y"]
    assert part_items(split.valid, "m") == ["w"]
    assert part_items(split.test, "m") == ["v"]


def test_holdout_split_takes_the_last_tenth_with_protocol_rounding():
    data = load_interactions(log_with_lengths([1, 2, 10]))
    inner_train, inner_valid = holdout_split(data, 0.1)
    assert part_items(inner_valid, "n1") == []
    assert part_items(inner_valid, "n2") == ["n2-p1"]
    assert part_items(inner_valid, "n10") == ["n10-p9"]
    assert part_items(inner_train, "n10") == [f"n10-p{j}" for j in range(9)]


@pytest.mark.parametrize("ratios", [(0.5, 0.5), (0.8, 0.3, 0.1), (1.2, -0.1, -0.1)])
def test_bad_ratios_are_a_config_error(ratios):
    data = load_interactions(log_with_lengths([3]))
    with pytest.raises(ConfigError, match="split ratios must be three non-negative numbers summing to 1"):
        temporal_split(data, ratios)
