"""Hypothesis drives random sequences of calls against a model of the queue (one process,
MPI.COMM_SELF): puts of good and bad inputs, gets, batches, timeouts, releases in any order."""
import math

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from mpi4py import MPI

import rdq

SHAPE, CAPACITY = (3,), 6


class QueueModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.q = rdq.Queue(MPI.COMM_SELF, capacity=CAPACITY, shape=SHAPE, dtype="float32")
        self.queued = []          # values put and not yet received
        self.held = []            # (view, values, slots pinned) received and not released
        self.next_value = 0

    def held_slots(self):
        return sum(slots for _, _, slots in self.held)

    def slots_in_use(self):
        return len(self.queued) + self.held_slots()

    @rule()
    def put(self):
        x = np.full(SHAPE, self.next_value, np.float32)
        if self.slots_in_use() < CAPACITY:
            assert self.q.put(x, block=False) is True
            self.queued.append(self.next_value)
            self.next_value += 1
        else:
            try:
                self.q.put(x, timeout=0)
                raise AssertionError("put into a full ring succeeded")
            except rdq.Full:
                pass

    @rule(shape=st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple),
          dtype=st.sampled_from(["float32", "float64", "int32", "uint8", "bool", "complex64"]),
          step=st.integers(1, 2))
    def put_bad_input(self, shape, dtype, step):
        x = np.zeros(tuple(s * step for s in shape), dtype)
        if step > 1 and x.ndim:
            x = x[(slice(None, None, step),) * x.ndim]
        if x.shape == SHAPE and x.dtype == np.float32 and x.flags.c_contiguous:
            return                # that one is a good input
        try:
            self.q.put(x, block=False)
            raise AssertionError(f"bad input {x.shape} {x.dtype} accepted")
        except (ValueError, TypeError) as exc:
            assert "rank 0" in str(exc)

    @rule(timeout=st.one_of(st.floats(min_value=-10, max_value=-1e-9),
                            st.just(math.nan)))
    def bad_timeouts(self, timeout):
        for call in (lambda: self.q.put(np.zeros(SHAPE, np.float32), timeout=timeout),
                     lambda: self.q.get(timeout=timeout), lambda: self.q.get_batch(1, timeout=timeout)):
            try:
                call()
                raise AssertionError(f"timeout {timeout} accepted")
            except ValueError:
                pass

    @rule()
    def get(self):
        if not self.queued:
            # with every slot held by the owner's own views nothing can ever come: refused at once
            expected = ValueError if self.held_slots() == CAPACITY else rdq.Empty
            try:
                self.q.get(timeout=0)
                raise AssertionError("get from an empty queue returned")
            except expected:
                return
        m = self.q.get(block=False)
        values = [self.queued.pop(0)]
        assert float(np.asarray(m)[0]) == values[0]
        self.held.append((m, values, 1))

    @rule(k=st.integers(-1, CAPACITY + 1))
    def get_batch(self, k):
        if not 1 <= k <= CAPACITY or k > CAPACITY - self.held_slots():
            try:
                self.q.get_batch(k, block=False)
                raise AssertionError(f"get_batch({k}) accepted")
            except ValueError:
                return
        if len(self.queued) < k:
            try:
                self.q.get_batch(k, timeout=0)
                raise AssertionError("a batch larger than what is queued came back")
            except rdq.Empty:
                return
        b = self.q.get_batch(k, block=False)
        values, self.queued = self.queued[:k], self.queued[k:]
        assert np.asarray(b)[:, 0].tolist() == values
        self.held.append((b, values, 0 if b.copied else k))   # a copied batch gave its slots back

    @precondition(lambda self: self.held)
    @rule(index=st.integers(0, 100), keep_view=st.booleans())
    def release(self, index, keep_view):
        view, values, _ = self.held.pop(index % len(self.held))
        array = np.asarray(view) if keep_view else None
        view.release()
        if keep_view:
            assert np.asarray(array).reshape(-1, *SHAPE)[:, 0].tolist() == values   # still pinned
        del array, view

    @invariant()
    def counters_match_the_model(self):
        s = self.q.stats()
        assert s["outstanding"] == self.held_slots()
        assert s["puts"] - s["gets"] == len(self.queued)

    def teardown(self):
        self.held.clear()
        self.q.free()


QueueModel.TestCase.settings = settings(max_examples=300, stateful_step_count=50, deadline=None,
                                        suppress_health_check=[HealthCheck.too_slow])
test_queue_against_model = QueueModel.TestCase
