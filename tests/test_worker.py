import asyncio

import numpy as np

from server.encoders import ModelSpec, build_encoder
from server.inference import InputsLost, LocalEmbedder
from server.labelsets import EmbeddingCache, LabelSource
from server.worker import FutureSink, Job, LatestWinsQueue, ModelWorker, StreamKey

from .helpers import async_wait_until


class Recorder:
    def __init__(self) -> None:
        self.dropped: dict[StreamKey, int] = {}

    def count_dropped(self, job, count):
        self.dropped[job.stream] = self.dropped.get(job.stream, 0) + count

    def deliver(self, job, outcome, label_set):
        raise AssertionError("not used")


def job(sink: Recorder, session: int, seq: int, stream: str = "camera", oneshot: bool = False) -> Job:
    return Job(StreamKey(session, "image", stream), None, seq, 0.0, 0.0, 0.0, sink, oneshot=oneshot)


def test_latest_frame_wins_and_the_skipped_are_counted():
    async def scenario():
        sink = Recorder()
        queue = LatestWinsQueue()
        for seq in range(5):
            queue.put(job(sink, 1, seq))
        taken = await queue.take(8)
        assert [j.seq for j in taken] == [4]
        assert sink.dropped == {StreamKey(1, "image", "camera"): 4}

    asyncio.run(scenario())


def test_round_robin_across_streams_and_batch_limit():
    async def scenario():
        sink = Recorder()
        queue = LatestWinsQueue()
        queue.put(job(sink, 1, 0))
        queue.put(job(sink, 2, 0))
        queue.put(job(sink, 3, 0))
        queue.put(job(sink, 1, 1))  # replaces session 1's waiting frame, goes to the back
        first = await queue.take(2)
        assert [(j.stream.session, j.seq) for j in first] == [(2, 0), (3, 0)]
        assert [(j.stream.session, j.seq) for j in await queue.take(2)] == [(1, 1)]
        assert len(queue) == 0

    asyncio.run(scenario())


def test_take_waits_for_work_and_discard_forgets_a_session():
    async def scenario():
        sink = Recorder()
        queue = LatestWinsQueue()
        waiter = asyncio.create_task(queue.take(4))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        queue.put(job(sink, 1, 0))
        assert [j.seq for j in await asyncio.wait_for(waiter, 1)] == [0]
        queue.put(job(sink, 5, 0))
        queue.discard({StreamKey(5, "image", "camera")})
        assert len(queue) == 0

    asyncio.run(scenario())


def test_batch_wait_gathers_the_other_active_streams_but_a_lone_stream_never_waits():
    async def scenario():
        loop = asyncio.get_running_loop()
        sink = Recorder()
        queue = LatestWinsQueue()
        queue.put(job(sink, 1, 0))
        started = loop.time()
        assert len(await queue.take(8, wait_s=1.0)) == 1
        assert loop.time() - started < 0.5  # the only active stream: no wait

        for session in (2, 3, 4):  # four streams are active now
            queue.put(job(sink, session, 0))
        assert len(await queue.take(8, wait_s=0.01)) == 3

        queue.put(job(sink, 1, 1))
        queue.put(job(sink, 2, 1))

        async def late_arrivals():
            await asyncio.sleep(0.05)
            queue.put(job(sink, 3, 1))
            queue.put(job(sink, 4, 1))

        arrivals = asyncio.create_task(late_arrivals())
        batch = await queue.take(8, wait_s=1.0)
        await arrivals
        assert sorted(j.stream.session for j in batch) == [1, 2, 3, 4]  # waited for the other active streams

        for session in (1, 2, 3, 4):
            queue.put(job(sink, session, 2))
        started = loop.time()
        assert len(await queue.take(8, wait_s=1.0)) == 4
        assert loop.time() - started < 0.5  # every active stream has its input in: no wait

    asyncio.run(scenario())


def test_one_shot_requests_never_wait_and_never_make_others_wait():
    """HTTP requests once counted as active streams for 2 s, so the next input waited the whole batch wait."""

    async def scenario():
        loop = asyncio.get_running_loop()
        sink = Recorder()
        queue = LatestWinsQueue()
        for n in range(3):  # back-to-back one-shot requests, each its own key
            queue.put(job(sink, 0, 0, stream=f"request-{n}", oneshot=True))
            started = loop.time()
            assert len(await queue.take(8, wait_s=1.0)) == 1
            assert loop.time() - started < 0.5
        assert queue.active_streams(loop.time()) == 0

        queue.put(job(sink, 1, 0))  # a stream that is alone now: never waits
        started = loop.time()
        assert len(await queue.take(8, wait_s=1.0)) == 1
        assert loop.time() - started < 0.5

        queue.put(job(sink, 2, 0))  # two streams are active; a one-shot request does not wait for the second
        await queue.take(8)
        queue.put(job(sink, 1, 1))
        queue.put(job(sink, 0, 0, stream="request-9", oneshot=True))
        started = loop.time()
        assert len(await queue.take(8, wait_s=1.0)) == 2
        assert loop.time() - started < 0.5

    asyncio.run(scenario())


class GatedEmbedder:
    """A real model behind ``embed``, as a remote backend would be: it takes two batches at once, and each
    waits at a gate the test opens, so the test sees what the worker keeps in flight."""

    concurrency = 2

    def __init__(self, encoder) -> None:
        self.local = LocalEmbedder(encoder)
        self.gate = asyncio.Event()
        self.inside = 0
        self.most_inside = 0

    async def embed(self, inputs):
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        await self.gate.wait()
        try:
            return await self.local.embed(inputs)
        finally:
            self.inside -= 1

    def close(self) -> None:
        self.local.close()


def test_the_worker_keeps_as_many_batches_in_flight_as_the_embedder_takes(image_model, label_dir):
    encoder = build_encoder(ModelSpec("image", image_model))
    source = LabelSource("image", label_dir / "image.txt", encoder, EmbeddingCache(), lambda m: None, 0)
    source.load_now()

    async def scenario():
        embedder = GatedEmbedder(encoder)
        worker = ModelWorker(embedder, source, encoder.scoring, max_batch=1)
        runner = asyncio.create_task(worker.run())
        sinks = [FutureSink() for _ in range(3)]
        for n, sink in enumerate(sinks):
            worker.submit(Job(StreamKey(n, "image", "camera"), np.zeros((48, 64, 3), np.uint8), n, 0, 0, 0, sink))
        await async_wait_until(lambda: embedder.inside == 2, what="two batches inside the embedder")
        assert worker.in_flight == 2 and len(worker.queue) == 1  # the third waits for a free slot
        embedder.gate.set()
        outcomes = await asyncio.gather(*(sink.future for sink in sinks))
        runner.cancel()
        worker.close()
        return embedder.most_inside, outcomes

    most_inside, outcomes = asyncio.run(scenario())
    assert most_inside == 2
    assert all(o.scores is not None and len(o.scores.scores) == len(source.current.names) for o in outcomes)


class LosingEmbedder:
    """A real model whose first batch is lost on its way, as a dead encoder replica's is (server/remote.py)."""

    concurrency = 1

    def __init__(self, encoder) -> None:
        self.local = LocalEmbedder(encoder)
        self.calls = 0

    async def embed(self, inputs):
        self.calls += 1
        if self.calls == 1:
            raise InputsLost("the replica holding this batch died")
        return await self.local.embed(inputs)

    def close(self) -> None:
        self.local.close()


class CountingSink(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.delivered: list[int] = []

    def deliver(self, job, outcome):
        self.delivered.append(job.seq)


def test_a_lost_batch_is_counted_as_dropped_once_and_never_retried(image_model, label_dir):
    encoder = build_encoder(ModelSpec("image", image_model))
    source = LabelSource("image", label_dir / "image.txt", encoder, EmbeddingCache(), lambda m: None, 0)
    source.load_now()

    async def scenario():
        embedder = LosingEmbedder(encoder)
        lost: list[float] = []
        worker = ModelWorker(embedder, source, encoder.scoring, max_batch=8, observe_lost=lost.append)
        sink, oneshot = CountingSink(), FutureSink()
        picture = np.zeros((48, 64, 3), np.uint8)
        worker.submit(Job(StreamKey(1, "image", "a"), picture, 1, 0, 0, 0, sink))
        worker.submit(Job(StreamKey(2, "image", "b"), picture, 1, 0, 0, 0, sink))
        worker.submit(Job(StreamKey(0, "image", "request-1"), picture, 0, 0, 0, 0, oneshot, oneshot=True))
        runner = asyncio.create_task(worker.run())
        failed = await oneshot.future  # a one-shot request has no later result to carry a count: it gets an error
        worker.submit(Job(StreamKey(1, "image", "a"), picture, 2, 0, 0, 0, sink))
        await async_wait_until(lambda: sink.delivered == [2], what="the next input's result")
        runner.cancel()
        worker.close()
        return embedder.calls, lost, sink, failed

    calls, lost, sink, failed = asyncio.run(scenario())
    assert calls == 2  # the lost batch, then the next input: no one-by-one retry of the lost three
    assert lost == [3]
    assert sink.dropped == {StreamKey(1, "image", "a"): 1, StreamKey(2, "image", "b"): 1}
    assert failed.scores is None and "replica was lost" in (failed.error or "")
