"""The count of trials sharing a GPU (greenray.tune.sharing.GpuShares, the ShareCounter actor's
class), driven directly."""

from greenray.tune.sharing import GpuShares


def test_each_trial_keeps_the_most_trials_seen_on_its_gpu_at_once():
    shares = GpuShares()
    shares.enter("node-a/0", "t1")
    assert shares.most("t1") == 1
    shares.enter("node-a/0", "t2")
    shares.enter("node-b/0", "t3")  # another node's GPU 0 is another GPU
    assert (shares.most("t1"), shares.most("t2"), shares.most("t3")) == (2, 2, 1)
    shares.leave("node-a/0", "t1")
    shares.enter("node-a/0", "t4")
    # t2 saw two at once, never three: t1 had left when t4 came
    assert (shares.most("t2"), shares.most("t4")) == (2, 2)
    shares.leave("node-a/0", "t2")
    shares.leave("node-a/0", "t4")
    shares.enter("node-a/0", "t5")
    assert shares.most("t5") == 1
    assert shares.most("t1") == 0  # forgotten once it left
