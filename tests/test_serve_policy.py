"""Batching policies from strings, and the @serve.batch parameters each one means; a list of them
as a bench config takes it."""

import pytest

from greenray.config import DEFAULT_GREEDY_CAP, FOREVER_S, BatchPolicy, BenchConfig, PolicyError, parse_policy
from greenray.errors import UsageError


def parse_policies(text: str) -> list[BatchPolicy]:
    return list(BenchConfig.from_flat({"policies": text}).policies)


def test_fixed_waits_until_full():
    policy = parse_policy("fixed:16")
    assert policy == BatchPolicy("fixed", 16)
    assert (policy.max_batch_size, policy.batch_wait_timeout_s) == (16, FOREVER_S)
    assert policy.waits_forever


def test_fixed_with_a_max_wait_lets_a_partial_batch_go():
    policy = parse_policy("fixed:8@50")
    assert (policy.max_batch_size, policy.batch_wait_timeout_s) == (8, 0.05)
    assert not policy.waits_forever
    assert str(policy) == "fixed:8@50"
    assert parse_policy("fixed:8@2.5").batch_wait_timeout_s == pytest.approx(0.0025)


def test_greedy_sends_what_is_queued_up_to_its_cap():
    assert parse_policy("greedy") == BatchPolicy("greedy", DEFAULT_GREEDY_CAP)
    assert DEFAULT_GREEDY_CAP == 128  # the study's cap
    policy = parse_policy("Greedy:8")
    assert (policy.max_batch_size, policy.batch_wait_timeout_s) == (8, 0.0)
    assert not policy.waits_forever
    for text in ("greedy", "greedy:8", "fixed:4"):
        assert str(parse_policy(text)) == text


def test_a_list_keeps_its_order_and_drops_repeats():
    policies = parse_policies("fixed:16, greedy,fixed:16,fixed:4@10,")
    assert [str(p) for p in policies] == ["fixed:16", "greedy", "fixed:4@10"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fixed:0", "fixed:0 needs a batch size"),
        ("greedy:-1", "greedy:-1 needs a cap"),
        ("greedy:0", "greedy:0 needs a cap"),
        ("fixed:8@-5", "fixed:8@-5 needs a max wait"),
        ("fixed:8@abc", "needs a max wait"),
        ("fixed:", "needs a batch size"),
        ("fixed:2.5", "needs a batch size"),
        ("foo", "unknown batching policy 'foo'"),
    ],
)
def test_bad_policies_are_one_sentence(text, message):
    with pytest.raises(PolicyError, match=message) as info:
        parse_policy(text)
    assert "\n" not in str(info.value)


def test_an_empty_list_is_refused():
    with pytest.raises(UsageError, match="--policy ' , ' is not a list of one value or more"):
        parse_policies(" , ")
