"""The ring-buffer KV cache: the newest frames kept in place, attended as a time-ordered window."""

import torch
import torch.nn.functional as F

from diffworld.model.kv_cache import KVCache


def test_ring_cache_keeps_the_newest_frames_and_attends_like_a_time_ordered_one():
    """Past the window the ring buffer overwrites its oldest frame in place: a rotation of time
    order, which attention to the cached frames (in place, masked) does not see."""
    g = torch.Generator().manual_seed(0)
    frames = [torch.randn(6, 2, 1, 8, generator=g) for _ in range(9)]  # [B·S, heads, 1 frame, dh]
    cache = KVCache(depth=1, max_frames=4)
    cache.append(0, torch.cat(frames[:2], -2), torch.cat(frames[:2], -2) * 2)  # a 2-frame context at once
    for f in frames[2:7]:
        cache.append(0, f, f * 2)
    k, v = cache.get(0)
    newest = torch.cat(frames[3:7], -2)
    assert len(cache) == 4 and torch.equal(k, newest) and torch.equal(v, newest * 2)  # oldest first
    assert cache.written[0] % cache.slots != 0  # the ring is rotated
    # A rollout step: the frame dreamed last (frames[7]) joins the cache and the new one (frames[8])
    # attends without the frame that just dropped out of the window (frames[3]).
    q = torch.randn(6, 2, 2, 8, generator=g)
    got = cache.attend(
        0, q, torch.cat(frames[7:9], -2), torch.cat(frames[7:9], -2) * 2, cache.ring_pass(q.shape[-2], 1, q.device)
    )
    fed = F.scaled_dot_product_attention(q[..., :1, :], torch.cat(frames[3:8], -2), torch.cat(frames[3:8], -2) * 2)
    new = F.scaled_dot_product_attention(q[..., 1:, :], torch.cat(frames[4:9], -2), torch.cat(frames[4:9], -2) * 2)
    assert torch.allclose(got, torch.cat([fed, new], -2), atol=1e-6)
    assert len(cache) == 4 and torch.equal(cache.get(0)[0], torch.cat(frames[4:8], -2))  # the new frame did not join
    kept = cache.select(torch.tensor([True, False, True]), batch=3)  # rows of entries 0 and 2
    k = cache.get(0)[0]
    assert torch.equal(kept.get(0)[0], torch.cat([k[:2], k[4:]]))


def test_ring_cache_appends_of_several_frames_wrap_around_in_time_order():
    """Appends of any size, within the ring or across its end, leave the newest frames, oldest first."""
    cache, sent = KVCache(depth=1, max_frames=4), []
    for n in (3, 2, 3, 1, 4, 2, 5):  # in place, across the end, more than the window at once, …
        times = torch.arange(len(sent), len(sent) + n, dtype=torch.float32)  # frame values = their time
        sent += times.tolist()
        cache.append(0, times.reshape(1, 1, n, 1), -times.reshape(1, 1, n, 1))
        k, v = cache.get(0)
        held = min(len(sent), 4)
        assert torch.equal(v, -k) and k.shape[-2] == held
        assert k[0, 0, :, 0].tolist() == sent[-held:]


def test_a_cache_may_start_at_any_frame_number():
    """A cache whose first frame is numbered late (a Dreamer's restart) attends only to what it holds."""
    g = torch.Generator().manual_seed(1)
    late = KVCache(depth=1, max_frames=4)
    late.written = [9]
    k = torch.randn(3, 2, 2, 8, generator=g)
    q = torch.randn(3, 2, 2, 8, generator=g)
    got = late.attend(0, q, k, k, late.ring_pass(q.shape[-2], 2, q.device))
    want = F.scaled_dot_product_attention(q, k, k, is_causal=True)
    assert torch.allclose(got, want, atol=1e-6) and len(late) == 2 and late.written == [11]


def test_ring_cache_passes_of_any_mix_attend_like_an_explicit_window():
    """Random mixes of appends and attending passes (1-2 frames, any number kept) against an explicit
    list of the frames held: each frame sees the max_frames frames before it and itself, never a
    frame an earlier pass left in a spare slot or one the window dropped."""
    g = torch.Generator().manual_seed(3)
    cache, held, window = KVCache(depth=1, max_frames=3), [], 3
    for step in range(80):
        if step % 9 == 4:  # a context of several frames at once
            n = int(torch.randint(1, 6, (1,), generator=g))
            k = torch.randn(2, 2, n, 4, generator=g)
            cache.append(0, k, k + 1)
            held = (held + list(k.unbind(-2)))[-window:]
        else:
            m = int(torch.randint(1, 3, (1,), generator=g))
            keep = int(torch.randint(0, m + 1, (1,), generator=g))
            q, k = torch.randn(2, 2, m, 4, generator=g), torch.randn(2, 2, m, 4, generator=g)
            got = cache.attend(0, q, k, k + 1, cache.ring_pass(q.shape[-2], keep, q.device))
            for j in range(m):
                seen = torch.stack((held + list(k.unbind(-2))[: j + 1])[-(window + 1) :], -2)
                want = F.scaled_dot_product_attention(q[..., j : j + 1, :], seen, seen + 1)
                assert torch.allclose(got[..., j : j + 1, :], want, atol=1e-5), (step, m, keep, j)
            held = (held + list(k.unbind(-2))[:keep])[-window:]
        k_held, v_held = cache.get(0)
        assert len(cache) == len(held)
        assert (
            k_held is None
            if not held
            else torch.equal(k_held, torch.stack(held, -2)) and torch.equal(v_held, k_held + 1)
        )
